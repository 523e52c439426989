"""{{name}}: a room consumer on the Switchyard Python SDK (switchyard_channels).

Route ``ws/{{name}}/<str:room_name>/`` (``{{name}}.toml``). A text frame
``{"message": m}`` reaches every socket of the room, the sender's too, as
``{"message": m}``.
"""

from switchyard_channels import (
    ChannelLayerError,
    InvalidChannelName,
    JsonWebsocketConsumer,
    async_to_sync,
    export,
)


class RoomConsumer(JsonWebsocketConsumer):
    def connect(self):
        room = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"{{name}}_{room}"
        try:
            async_to_sync(self.channel_layer.group_add)(self.room_group_name, self.channel_name)
        except InvalidChannelName:
            # A room name that cannot be part of a group name: HTTP 403.
            self.close(4400, "invalid room name")
            return
        self.accept()

    def disconnect(self, close_code):
        async_to_sync(self.channel_layer.group_discard)(self.room_group_name, self.channel_name)

    def receive_json(self, content):
        try:
            async_to_sync(self.channel_layer.group_send)(
                self.room_group_name, {"type": "room.message", "message": content.get("message")}
            )
        except ChannelLayerError as err:
            self.send_json({"error": "group_send_failed", "detail": str(err)})

    def room_message(self, event):
        self.send_json({"message": event["message"]})


WebsocketConsumer = export(RoomConsumer)
