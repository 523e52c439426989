// The chat consumer of the Django Channels tutorial, written with the
// JavaScript SDK (sdk/js/switchyard-channels.js) and built by componentize-js.
//
// Route `ws/chat-js/<str:room_name>/`; the protocol of the Rust chat
// (plugins/chat): a text frame `{"message": m}` goes to the room's group as
// `{"type": "chat.message", "message": m}` and reaches every member (the
// sender too) as `{"message": m}`. Bad input is answered with
// `{"error": code, "detail": text}` (`invalid_json`, `missing_message`,
// `binary_not_supported`, `group_send_failed`) and the socket stays open.
// A room name that cannot be part of a group name is rejected (HTTP 403);
// while the layer is down the SDK refuses with 503 and `Retry-After: 5`.
//
// Host-side broadcast: a client's message goes to the room with
// `groupSendFrame`, the event together with the `{"message": m}` frame every
// member would send for it, so the host writes that frame to the members'
// sockets without calling `chat_message` for each (Django consumers in the
// room still get the `chat.message` event). `chat_message` still turns a
// `chat.message` from elsewhere (Django, the publish API) into the frame.

import {
  ChannelLayerError,
  InvalidChannelName,
  JsonWebsocketConsumer,
  exportConsumer,
} from '../../sdk/js/switchyard-channels.js';

// Close code for a room the server refuses (the handshake answers 403).
const REJECT_CODE = 4400;

class ChatConsumer extends JsonWebsocketConsumer {
  connect() {
    this.roomName = this.scope.url_route.kwargs.room_name;
    this.roomGroupName = `chat_${this.roomName}`;
    try {
      this.channelLayer.groupAdd(this.roomGroupName, this.channelName);
    } catch (err) {
      if (err instanceof InvalidChannelName) {
        this.close(REJECT_CODE, 'invalid room name');
        return;
      }
      throw err;
    }
    this.accept();
  }

  disconnect(_code) {
    this.channelLayer.groupDiscard(this.roomGroupName, this.channelName);
  }

  receive(textData, _bytesData) {
    if (typeof textData !== 'string') {
      this.sendError('binary_not_supported', 'only text frames are accepted');
      return;
    }
    let content;
    try {
      content = this.decodeJson(textData);
    } catch (err) {
      this.sendError('invalid_json', String(err.message ?? err));
      return;
    }
    this.receiveJson(content);
  }

  receiveJson(content) {
    if (!content || typeof content !== 'object' || Array.isArray(content) || !('message' in content)) {
      this.sendError('missing_message', 'expected a JSON object with a "message" key');
      return;
    }
    const message = content.message;
    try {
      // Host-side broadcast: the host writes the frame `chat_message` would
      // send to each member's socket, without calling it.
      this.channelLayer.groupSendFrame(
        this.roomGroupName,
        { type: 'chat.message', message },
        this.encodeJson({ message }),
      );
    } catch (err) {
      if (!(err instanceof ChannelLayerError)) throw err;
      this.sendError('group_send_failed', err.message);
    }
  }

  chat_message(event) {
    this.sendJson({ message: event.message });
  }

  sendError(code, detail) {
    this.sendJson({ error: code, detail });
  }
}

export const websocketConsumer = exportConsumer(ChatConsumer);
