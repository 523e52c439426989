"""The chat consumer of the Django Channels tutorial, written with the
Python SDK (``sdk/python/switchyard_channels``) and built by componentize-py.

Route ``ws/chat-py/<str:room_name>/``; the protocol of the Rust chat
(``plugins/chat``): a text frame ``{"message": m}`` goes to the room's group
as ``{"type": "chat.message", "message": m}`` and reaches every member
(the sender too) as ``{"message": m}``. Bad input is answered with
``{"error": code, "detail": text}`` (``invalid_json``, ``missing_message``,
``binary_not_supported``, ``group_send_failed``) and the socket stays open.
A room name that cannot be part of a group name is rejected (HTTP 403);
while the layer is down the SDK refuses with 503 and ``Retry-After: 5``.

Host-side broadcast: a client's message goes to the room with
``group_send_frame``, the event together with the ``{"message": m}`` frame
every member would send for it, so the host writes that frame to the
members' sockets without calling ``chat_message`` for each (Django consumers
in the room still get the ``chat.message`` event). ``chat_message`` still
turns a ``chat.message`` from elsewhere (Django, the publish API) into the
frame.

Against the tutorial's ``ChatConsumer`` only the imports, the last line,
the error frames and ``group_send_frame`` differ.
"""

from switchyard_channels import (
    ChannelLayerError,
    InvalidChannelName,
    JsonWebsocketConsumer,
    async_to_sync,
    export,
)

# Close code for a room the server refuses (the handshake answers 403).
REJECT_CODE = 4400


class ChatConsumer(JsonWebsocketConsumer):
    def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        try:
            async_to_sync(self.channel_layer.group_add)(self.room_group_name, self.channel_name)
        except InvalidChannelName:
            self.close(REJECT_CODE, "invalid room name")
            return
        self.accept()

    def disconnect(self, close_code):
        async_to_sync(self.channel_layer.group_discard)(self.room_group_name, self.channel_name)

    def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            self.send_error("binary_not_supported", "only text frames are accepted")
            return
        try:
            content = self.decode_json(text_data)
        except ValueError as err:
            self.send_error("invalid_json", str(err))
            return
        self.receive_json(content)

    def receive_json(self, content):
        if not isinstance(content, dict) or "message" not in content:
            self.send_error("missing_message", 'expected a JSON object with a "message" key')
            return
        message = content["message"]
        try:
            # Host-side broadcast: the host writes the frame `chat_message`
            # would send to each member's socket, without calling it.
            async_to_sync(self.channel_layer.group_send_frame)(
                self.room_group_name,
                {"type": "chat.message", "message": message},
                self.encode_json({"message": message}),
            )
        except ChannelLayerError as err:
            self.send_error("group_send_failed", str(err))

    def chat_message(self, event):
        self.send_json({"message": event["message"]})

    def send_error(self, code, detail):
        self.send_json({"error": code, "detail": detail})


WebsocketConsumer = export(ChatConsumer)
