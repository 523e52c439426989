"""The consumer classes, shaped as ``channels.generic.websocket``.

Handlers are plain methods (``connect``, ``receive``, ``disconnect`` and one
per event type); each may also be ``async def``, and is then run to
completion (see ``sync``). Every SDK method finishes at once and returns an
already-finished awaitable, so ``self.send(...)`` and ``await self.send(...)``
both work: the ``Async*`` classes are the same classes under Channels' names.
"""

import json

# The world imports wasi:filesystem/types too, so componentize-py names
# this module after its package.
from wit_world.imports import switchyard_consumer_types as types

from .exceptions import AcceptConnection, DenyConnection
from .layer import ChannelLayer
from .sync import Done, run


class WebsocketConsumer:
    """Channels' ``WebsocketConsumer``: one object per connection.

    Attributes set before ``connect``: ``scope`` (a dict like Channels'),
    ``channel_name``, ``channel_layer``, ``channel_layer_alias``. ``groups``
    (a class attribute) lists groups joined before ``connect`` and left
    after ``disconnect``, as Channels does.
    """

    groups = None
    channel_layer_alias = "default"

    def __init__(self, scope=None):
        self.scope = scope if scope is not None else {}
        self.channel_name = None
        self.channel_layer = ChannelLayer(self)
        self._conn = None
        self._accepted = False
        self._closed = False
        self._failed = False

    # -- what the connection can do (as Channels' consumer methods) --------

    def _connection(self, what):
        if self._conn is None:
            raise RuntimeError(
                f"{what} called outside a handler of this connection: a consumer can only "
                "act on its connection while the host is calling one of its handlers"
            )
        return self._conn

    def accept(self, subprotocol=None, headers=None):
        """Accepts the connection, optionally choosing one of ``scope["subprotocols"]``.

        ``headers`` cannot be set by a Switchyard plugin and are ignored.
        """
        self._connection("accept").accept(subprotocol)
        self._accepted = True
        return Done()

    def send(self, text_data=None, bytes_data=None, close=False):
        """Sends a text frame (``text_data``) or a binary one (``bytes_data``)."""
        conn = self._connection("send")
        if text_data is not None:
            conn.send(types.Frame_Text(text_data))
        elif bytes_data is not None:
            conn.send(types.Frame_Binary(bytes(bytes_data)))
        else:
            raise ValueError("You must pass one of bytes_data or text_data")
        if close:
            self.close(close if isinstance(close, int) and close is not True else None)
        return Done()

    def close(self, code=None, reason=None):
        """Closes the connection: before ``accept`` the handshake gets HTTP 403.

        ``code`` is 1000 (the default), 1011, or an application code 3000-4999.
        """
        code = 1000 if code is None or code is True else code
        self._connection("close").close(code, reason)
        self._closed = True
        return Done()

    def refuse(self, status, retry_after=None):
        """Refuses the handshake with an HTTP status (Switchyard's own: 400, 401, 403,
        404, 429, 500 or 503; ``retry_after`` seconds for 429 and 503)."""
        self._connection("refuse").refuse(status, retry_after)
        self._closed = True
        return Done()

    # -- handlers an author overrides -------------------------------------

    def connect(self):
        """Called on the handshake; the default accepts."""
        return self.accept()

    def receive(self, text_data=None, bytes_data=None):
        """Called with each frame from the client."""

    def disconnect(self, code):
        """Called when the connection closed, with its close code."""

    # -- what the SDK calls (as Channels' websocket_* handlers) -----------

    def websocket_connect(self):
        for group in self.groups or ():
            self.channel_layer.group_add(group, self.channel_name)
        try:
            run(self.connect())
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def websocket_receive(self, text_data=None, bytes_data=None):
        run(self.receive(text_data=text_data, bytes_data=bytes_data))

    def websocket_disconnect(self, code):
        try:
            run(self.disconnect(code))
        finally:
            for group in self.groups or ():
                self.channel_layer.group_discard(group, self.channel_name)

    def dispatch(self, message):
        """Calls the handler for ``message["type"]`` (``chat.message`` -> ``chat_message``)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        run(handler(message))


def get_handler_name(message):
    """The method name for an event's type, as Channels: dots become underscores."""
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str):
        raise ValueError(f"Incoming message has no 'type' attribute: {message!r}")
    if kind.startswith("_"):
        raise ValueError(f"Malformed type in message (leading underscore): {kind}")
    return kind.replace(".", "_")


class JsonWebsocketConsumer(WebsocketConsumer):
    """Channels' ``JsonWebsocketConsumer``: text frames decoded as JSON."""

    def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            raise ValueError("No text section for incoming WebSocket frame!")
        return self.receive_json(self.decode_json(text_data))

    def receive_json(self, content, **kwargs):
        """Called with each decoded JSON message from the client."""

    def send_json(self, content, close=False):
        """Sends ``content`` encoded as JSON in a text frame."""
        return self.send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data):
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content):
        return json.dumps(content)


AsyncWebsocketConsumer = WebsocketConsumer
AsyncJsonWebsocketConsumer = JsonWebsocketConsumer
