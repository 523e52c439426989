"""The ``websocket-consumer`` export: one consumer object per connection.

``export(ChatConsumer)`` (or ``export({"ws/chat/<str:room_name>/":
ChatConsumer, ...})`` to pick a class by the route that matched) returns the
class componentize-py exports. Consumers are kept in a dict keyed by the
connection's id, so per-connection state lives on ``self`` in both instance
modes. A handler that raises is logged with its traceback and closes only
its own connection: 1011 after ``accept``; before it, HTTP 500 (HTTP 503
with ``Retry-After: 5`` when the channel layer is unavailable).
"""

import json
import traceback

from wit_world import exports
from wit_world.imports import host
# The world imports wasi:filesystem/types too, so componentize-py names
# this module after its package.
from wit_world.imports import switchyard_consumer_types as types

from .exceptions import StopConsumer
from .layer import LayerUnavailable, decode_event

# Seconds a client is asked to wait when the layer is down during connect.
RETRY_AFTER_SECS = 5
# The close code of a connection whose handler raised (RFC 6455: internal error).
INTERNAL_ERROR = 1011


def make_scope(wit_scope):
    """The WIT scope (a resource lent for ``connect``) as a Channels scope dict."""
    client = None
    client_text = wit_scope.client()
    if client_text:
        address, _, port = client_text.rpartition(":")
        client = [address.strip("[]"), int(port)] if port.isdigit() else [client_text, 0]
    claims_text = wit_scope.claims()
    server = wit_scope.server()
    return {
        "type": "websocket",
        "scheme": wit_scope.scheme(),
        "http_version": wit_scope.http_version(),
        "path": wit_scope.path(),
        "query_string": wit_scope.query_string().encode("latin-1"),
        "headers": [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in wit_scope.headers()
        ],
        "url_route": {"args": (), "kwargs": dict(wit_scope.url_route())},
        "route": wit_scope.route(),
        "client": client,
        "server": [server[0], server[1]] if server is not None else None,
        "subprotocols": list(wit_scope.subprotocols()),
        "user": wit_scope.user(),
        "claims": json.loads(claims_text) if claims_text else None,
    }


def export(consumer):
    """The class implementing the ``websocket-consumer`` export for ``consumer``.

    ``consumer`` is a consumer class, or a dict from route pattern (as in the
    manifest, e.g. ``"ws/chat/<str:room_name>/"``) to consumer class.
    """
    routes = dict(consumer) if isinstance(consumer, dict) else None
    default = None if routes is not None else consumer
    live = {}

    def log(level, message):
        host.log(level, message)

    def fail(conn, obj, where):
        """Logs the exception being handled and closes ``conn`` (only)."""
        name = type(obj).__name__ if obj is not None else "consumer"
        log(
            host.Level.ERROR,
            f"{name}.{where} raised; closing connection {conn.id()}:\n{traceback.format_exc()}",
        )
        if obj is not None:
            obj._failed = True
            if obj._closed:
                return
        if obj is None or not obj._accepted:
            conn.refuse(500, None)
        else:
            conn.close(INTERNAL_ERROR, "internal error")
        if obj is not None:
            obj._closed = True

    def call(conn, where, action):
        obj = live.get(conn.id())
        if obj is None:
            log(host.Level.WARN, f"{where} for unknown connection {conn.id()}; ignored")
            return
        if obj._closed and where != "disconnect":
            return
        obj._conn = conn
        try:
            action(obj)
        except StopConsumer:
            if not obj._closed:
                obj.close()
        except Exception:
            fail(conn, obj, where)
        finally:
            obj._conn = None

    class Export(exports.WebsocketConsumer):
        def connect(self, conn, scope):
            scope = make_scope(scope)
            cls = default if routes is None else routes.get(scope["route"])
            obj = None
            try:
                if cls is None:
                    raise LookupError(f"no consumer class for route {scope['route']!r}")
                obj = cls(scope)
                obj.channel_name = conn.channel_name()
                live[conn.id()] = obj
                obj._conn = conn
                obj.websocket_connect()
            except LayerUnavailable:
                log(
                    host.Level.WARN,
                    f"channel layer unavailable during connect:\n{traceback.format_exc()}",
                )
                if obj is None or not (obj._accepted or obj._closed):
                    conn.refuse(503, RETRY_AFTER_SECS)
                    if obj is not None:
                        obj._closed = True
                else:
                    fail(conn, obj, "connect")
            except StopConsumer:
                if obj is not None and not obj._closed:
                    obj.close()
            except Exception:
                fail(conn, obj, "connect")
            finally:
                if obj is not None:
                    obj._conn = None

        def receive(self, conn, message):
            if isinstance(message, types.Frame_Text):
                call(conn, "receive", lambda obj: obj.websocket_receive(text_data=message.value))
            else:
                call(conn, "receive", lambda obj: obj.websocket_receive(bytes_data=message.value))

        def event(self, conn, event):
            call(conn, "event", lambda obj: obj.dispatch(decode_event(event)))

        def disconnect(self, conn, code):
            obj = live.pop(conn.id(), None)
            if obj is None or obj._failed:
                # As in Channels, a consumer whose handler raised gets no more calls.
                return
            obj._conn = conn
            try:
                obj.websocket_disconnect(code)
            except Exception:
                log(
                    host.Level.ERROR,
                    f"{type(obj).__name__}.disconnect raised:\n{traceback.format_exc()}",
                )
            finally:
                obj._conn = None

    Export.__name__ = Export.__qualname__ = "WebsocketConsumer"
    return Export
