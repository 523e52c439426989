"""The station feed written the Channels way: the same route and messages
as Switchyard's `ws/stations/<int:station_id>/`, subscribed to the same
group, so it receives the changes Switchyard records and Switchyard's
sockets receive the ones Django records."""

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import inventory


class StationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.station_id = self.scope["url_route"]["kwargs"]["station_id"]
        self.group = f"station_{self.station_id}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        try:
            station = await sync_to_async(inventory.get)(self.station_id)
        except inventory.UnknownStation:
            await self.close(code=4404)
            return
        await self.accept()
        await self.send_json({"type": "snapshot", "stations": [inventory.as_json(station)]})

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def station_update(self, event):
        await self.send_json(
            {"type": "update", "change": event.get("change"), "station": event["station"]}
        )
