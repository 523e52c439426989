// Django Channels-style WebSocket consumers for Switchyard plugins built
// with componentize-js (the `consumer` world of wit/consumer.wit).
//
//   import { JsonWebsocketConsumer, exportConsumer } from './switchyard-channels.js';
//   class ChatConsumer extends JsonWebsocketConsumer { connect() { this.accept(); } ... }
//   export const websocketConsumer = exportConsumer(ChatConsumer);
//
// `exportConsumer` returns the object componentize-js exports as the
// `websocket-consumer` interface. It keeps one consumer object per
// connection id, so per-connection state lives on `this` in both instance
// modes. A handler that throws is logged with its stack and closes only its
// own connection: 1011 after `accept`; before it HTTP 500 (503 with
// `Retry-After: 5` when the channel layer is unavailable).
//
// Event handlers are named as in Channels: the event type with dots made
// underscores (`chat.message` -> `chat_message(event)`). Handlers are
// synchronous: a handler that returns a Promise is an error (a Switchyard
// call cannot wait for it).

// The one import of the host interface, by its versioned name: the
// package version must be wit/consumer.wit's (`cargo xtask` checks it; see
// xtask/src/js_wit_version.rs).
import { log as hostLog, groupSend, groupSendFrame, channelSend } from 'switchyard:consumer/host@0.2.0';

/** Seconds a client is asked to wait when the layer is down during connect. */
const RETRY_AFTER_SECS = 5;
/** The close code of a connection whose handler threw (RFC 6455: internal error). */
const INTERNAL_ERROR = 1011;

/** A channel-layer operation failed and did nothing. `kind` is the WIT case. */
export class ChannelLayerError extends Error {
  constructor(kind, detail) {
    super(detail ? `${kind}: ${detail}` : kind);
    this.name = 'ChannelLayerError';
    this.kind = kind;
    this.detail = detail ?? null;
  }
}
/** The destination channel is at capacity (Channels' `ChannelFull`). */
export class ChannelFull extends ChannelLayerError {}
/** A channel or group name breaks the Channels naming rules. */
export class InvalidChannelName extends ChannelLayerError {}
/** The event is not an object with a string `type`, or is too large. */
export class InvalidEvent extends ChannelLayerError {}
/** The layer cannot be reached now (e.g. Redis is down). */
export class LayerUnavailable extends ChannelLayerError {}

/** Thrown in `connect` to reject the handshake with HTTP 403 (as Channels). */
export class DenyConnection extends Error {}
/** Thrown to stop handling a connection; it is closed with 1000. */
export class StopConsumer extends Error {}

const LAYER_ERRORS = {
  'channel-full': ChannelFull,
  'invalid-name': InvalidChannelName,
  'invalid-event': InvalidEvent,
  unavailable: LayerUnavailable,
  // `other` (the WIT's catch-all) is a plain ChannelLayerError.
};

/** The SDK error for what a host call threw (a WIT `layer-error`). */
function layerError(err) {
  const payload = err && err.payload !== undefined ? err.payload : err;
  if (payload && typeof payload.tag === 'string') {
    const Class = LAYER_ERRORS[payload.tag] ?? ChannelLayerError;
    return new Class(payload.tag, payload.val);
  }
  return err;
}

function layerCall(call) {
  try {
    call();
  } catch (err) {
    throw layerError(err);
  }
}

/** Writes `message` to the host's log: level is trace, debug, info, warn or error. */
export function log(level, message) {
  hostLog(level, String(message));
}

function encodeBytes(_key, value) {
  if (value instanceof Uint8Array) {
    let text = '';
    for (const byte of value) text += String.fromCharCode(byte);
    return { __bytes__: btoa(text) };
  }
  return value;
}

function decodeBytes(_key, value) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === '__bytes__' && typeof value.__bytes__ === 'string') {
      const text = atob(value.__bytes__);
      return Uint8Array.from(text, (c) => c.charCodeAt(0));
    }
  }
  return value;
}

/** An event object as the JSON text the host takes (`Uint8Array`s as `{"__bytes__": base64}`). */
export function encodeEvent(message) {
  if (!message || typeof message !== 'object' || typeof message.type !== 'string') {
    throw new InvalidEvent('invalid-event', "an event is an object with a string 'type'");
  }
  return JSON.stringify(message, encodeBytes);
}

/** `this.channelLayer`: the channel layer as a consumer sees it. */
class ChannelLayer {
  constructor(consumer) {
    this._consumer = consumer;
  }

  _own(channel, what) {
    const own = this._consumer.channelName;
    if (channel !== undefined && channel !== null && channel !== own) {
      throw new Error(`${what}: a consumer can only add or remove its own channel (${own}), not ${channel}`);
    }
    return this._consumer._connection(what);
  }

  /** Adds this consumer's channel to `group` (`channel` may be omitted). */
  groupAdd(group, channel) {
    const conn = this._own(channel, 'groupAdd');
    layerCall(() => conn.groupAdd(group));
  }

  /** Removes this consumer's channel from `group`; not being in it is no error. */
  groupDiscard(group, channel) {
    const conn = this._own(channel, 'groupDiscard');
    layerCall(() => conn.groupDiscard(group));
  }

  /** Sends the event `message` (an object with `type`) to every member of `group`. */
  groupSend(group, message) {
    const text = encodeEvent(message);
    layerCall(() => groupSend(group, text));
  }

  /**
   * Host-side broadcast (`group-send-frame`): every Switchyard member of
   * `group` gets `frame` (a string: a text frame; a `Uint8Array`: a binary
   * one) written to its socket by the host, with no call to its consumer;
   * other members (Django consumers on a shared Redis layer, HTTP request
   * channels) get the event `message` as from `groupSend`. Use it when
   * `frame` is exactly what each member's handler would send for `message`.
   */
  groupSendFrame(group, message, frame) {
    const text = encodeEvent(message);
    let witFrame;
    if (typeof frame === 'string') {
      witFrame = { tag: 'text', val: frame };
    } else if (frame instanceof Uint8Array) {
      witFrame = { tag: 'binary', val: frame };
    } else {
      throw new TypeError('a frame is a string or a Uint8Array');
    }
    layerCall(() => groupSendFrame(group, text, witFrame));
  }

  /** Sends the event `message` to one channel; `ChannelFull` when it is at capacity. */
  send(channel, message) {
    const text = encodeEvent(message);
    layerCall(() => channelSend(channel, text));
  }
}

/** Channels' `WebsocketConsumer`: one object per connection. */
export class WebsocketConsumer {
  /** Groups joined before `connect` and left after `disconnect`, as Channels. */
  static groups = [];

  constructor(scope) {
    /** The connection scope, with Channels' keys (`url_route.kwargs`, `query_string`...). */
    this.scope = scope;
    /** This connection's channel name on the layer. */
    this.channelName = null;
    this.channelLayer = new ChannelLayer(this);
    this._conn = null;
    this._accepted = false;
    this._closed = false;
    this._failed = false;
  }

  _connection(what) {
    if (!this._conn) {
      throw new Error(`${what} called outside a handler of this connection`);
    }
    return this._conn;
  }

  /** Accepts the connection, optionally choosing one of `scope.subprotocols`. */
  accept(subprotocol) {
    this._connection('accept').accept(subprotocol ?? undefined);
    this._accepted = true;
  }

  /** Sends a text frame (a string) or a binary one (a Uint8Array). */
  send(data) {
    const conn = this._connection('send');
    if (typeof data === 'string') {
      conn.send({ tag: 'text', val: data });
    } else if (data instanceof Uint8Array) {
      conn.send({ tag: 'binary', val: data });
    } else {
      throw new TypeError('send takes a string (text frame) or a Uint8Array (binary frame)');
    }
  }

  /** Sends `content` as JSON in a text frame. */
  sendJson(content) {
    this.send(JSON.stringify(content));
  }

  /** Closes the connection (1000 by default, 1011, or 3000-4999); before `accept`, HTTP 403. */
  close(code = 1000, reason) {
    this._connection('close').close(code, reason ?? undefined);
    this._closed = true;
  }

  /** Refuses the handshake with an HTTP status (400, 401, 403, 404, 429, 500, 503). */
  refuse(status, retryAfterSecs) {
    this._connection('refuse').refuse(status, retryAfterSecs ?? undefined);
    this._closed = true;
  }

  /** Called on the handshake; the default accepts. */
  connect() {
    this.accept();
  }

  /** Called with each frame: `textData` (a string) or `bytesData` (a Uint8Array). */
  receive(_textData, _bytesData) {}

  /** Called when the connection closed, with its close code. */
  disconnect(_code) {}

  websocketConnect() {
    for (const group of this.constructor.groups ?? []) {
      this.channelLayer.groupAdd(group);
    }
    try {
      checkSync(this.connect(), 'connect');
    } catch (err) {
      if (err instanceof DenyConnection) this.close();
      else throw err;
    }
  }

  websocketDisconnect(code) {
    try {
      checkSync(this.disconnect(code), 'disconnect');
    } finally {
      for (const group of this.constructor.groups ?? []) {
        this.channelLayer.groupDiscard(group);
      }
    }
  }

  /** Calls the handler for `message.type` (`chat.message` -> `chat_message`). */
  dispatch(message) {
    const name = handlerName(message);
    const handler = this[name];
    if (typeof handler !== 'function') {
      throw new Error(`No handler for message type ${message.type}`);
    }
    checkSync(handler.call(this, message), name);
  }
}

/** The method name for an event's type, as Channels: dots become underscores. */
export function handlerName(message) {
  const type = message && typeof message === 'object' ? message.type : undefined;
  if (typeof type !== 'string') {
    throw new Error(`Incoming message has no 'type' attribute: ${JSON.stringify(message)}`);
  }
  if (type.startsWith('_')) {
    throw new Error(`Malformed type in message (leading underscore): ${type}`);
  }
  return type.replaceAll('.', '_');
}

function checkSync(result, where) {
  if (result && typeof result.then === 'function') {
    throw new Error(`${where} returned a Promise: Switchyard handlers must be synchronous`);
  }
}

/** Channels' `JsonWebsocketConsumer`: text frames decoded as JSON. */
export class JsonWebsocketConsumer extends WebsocketConsumer {
  receive(textData, _bytesData) {
    if (typeof textData !== 'string') {
      throw new Error('No text section for incoming WebSocket frame!');
    }
    return this.receiveJson(this.decodeJson(textData));
  }

  /** Called with each decoded JSON message from the client. */
  receiveJson(_content) {}

  decodeJson(textData) {
    return JSON.parse(textData);
  }

  encodeJson(content) {
    return JSON.stringify(content);
  }

  sendJson(content) {
    this.send(this.encodeJson(content));
  }
}

/** The WIT scope (a resource lent for `connect`) as a Channels-shaped scope object. */
export function makeScope(wit) {
  let client = null;
  const clientText = wit.client();
  if (clientText) {
    const at = clientText.lastIndexOf(':');
    client = [clientText.slice(0, at).replace(/^\[|\]$/g, ''), Number(clientText.slice(at + 1))];
  }
  const server = wit.server();
  const claims = wit.claims();
  return {
    type: 'websocket',
    scheme: wit.scheme(),
    http_version: wit.httpVersion(),
    path: wit.path(),
    query_string: wit.queryString(),
    headers: wit.headers().map(([name, value]) => [name, value]),
    url_route: { args: [], kwargs: Object.fromEntries(wit.urlRoute()) },
    route: wit.route(),
    client,
    server: server ? [server[0], server[1]] : null,
    subprotocols: [...wit.subprotocols()],
    user: wit.user() ?? null,
    claims: claims ? JSON.parse(claims) : null,
  };
}

/**
 * The `websocket-consumer` export for `consumer`: a consumer class, or an
 * object from route pattern (as in the manifest) to consumer class.
 */
export function exportConsumer(consumer) {
  const routes = typeof consumer === 'function' ? null : consumer;
  const live = new Map();

  function describe(err) {
    return err && err.stack ? `${err}\n${err.stack}` : String(err);
  }

  function fail(conn, obj, where, err) {
    const name = obj ? obj.constructor.name : 'consumer';
    hostLog('error', `${name}.${where} threw; closing connection ${conn.id()}: ${describe(err)}`);
    if (obj) {
      obj._failed = true;
      if (obj._closed) return;
      obj._closed = true;
    }
    if (!obj || !obj._accepted) conn.refuse(500, undefined);
    else conn.close(INTERNAL_ERROR, 'internal error');
  }

  function call(conn, where, action) {
    const obj = live.get(conn.id());
    if (!obj) {
      hostLog('warn', `${where} for unknown connection ${conn.id()}; ignored`);
      return;
    }
    if (obj._closed) return;
    obj._conn = conn;
    try {
      action(obj);
    } catch (err) {
      if (err instanceof StopConsumer) {
        if (!obj._closed) obj.close();
      } else {
        fail(conn, obj, where, err);
      }
    } finally {
      obj._conn = null;
    }
  }

  return {
    connect(conn, witScope) {
      let obj = null;
      try {
        const scope = makeScope(witScope);
        const Class = routes ? routes[scope.route] : consumer;
        if (!Class) throw new Error(`no consumer class for route ${scope.route}`);
        obj = new Class(scope);
        obj.channelName = conn.channelName();
        live.set(conn.id(), obj);
        obj._conn = conn;
        obj.websocketConnect();
      } catch (err) {
        if (err instanceof LayerUnavailable && !(obj && (obj._accepted || obj._closed))) {
          hostLog('warn', `channel layer unavailable during connect: ${describe(err)}`);
          conn.refuse(503, RETRY_AFTER_SECS);
          if (obj) obj._closed = true;
        } else if (err instanceof StopConsumer) {
          if (obj && !obj._closed) obj.close();
        } else {
          fail(conn, obj, 'connect', err);
        }
      } finally {
        if (obj) obj._conn = null;
      }
    },

    receive(conn, frame) {
      if (frame.tag === 'text') {
        call(conn, 'receive', (obj) => checkSync(obj.receive(frame.val, null), 'receive'));
      } else {
        call(conn, 'receive', (obj) => checkSync(obj.receive(null, frame.val), 'receive'));
      }
    },

    event(conn, event) {
      call(conn, 'event', (obj) => obj.dispatch(JSON.parse(event, decodeBytes)));
    },

    disconnect(conn, code) {
      const id = conn.id();
      const obj = live.get(id);
      live.delete(id);
      // As in Channels, a consumer whose handler threw gets no more calls.
      if (!obj || obj._failed) return;
      obj._conn = conn;
      try {
        obj.websocketDisconnect(code);
      } catch (err) {
        hostLog('error', `${obj.constructor.name}.disconnect threw: ${describe(err)}`);
      } finally {
        obj._conn = null;
      }
    },
  };
}
