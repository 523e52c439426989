"""Publishing a change the way Switchyard's `stations` plugin does: the
event `station.update` to the group `station_<id>`, which every feed
socket of that station joins, in Switchyard or in Django."""

from channels.layers import get_channel_layer


async def station_changed(station, change):
    await get_channel_layer().group_send(
        f"station_{station['id']}",
        {"type": "station.update", "change": change, "station": station},
    )
