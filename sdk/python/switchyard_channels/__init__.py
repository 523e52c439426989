"""Django Channels-style WebSocket consumers for Switchyard plugins.

A plugin built with componentize-py imports this package instead of
``channels.generic.websocket`` and registers its consumer in one line::

    from switchyard_channels import JsonWebsocketConsumer, async_to_sync, export

    class ChatConsumer(JsonWebsocketConsumer):
        def connect(self):
            ...

    WebsocketConsumer = export(ChatConsumer)

``export`` returns the class componentize-py looks for in the app module
(the ``websocket-consumer`` export of the ``consumer`` world). It keeps one
consumer object per connection id, so the same code works in the
``per-connection`` and the ``shared`` instance modes; an exception in a
handler is logged with its traceback and closes only that connection (1011,
or HTTP 500 before ``accept``).

Modules: ``consumer`` (the consumer classes), ``layer`` (the channel layer
and its errors), ``runner`` (the export and the dispatch), ``sync`` (running
``async def`` handlers to completion).
"""

from .consumer import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from .exceptions import AcceptConnection, DenyConnection, StopConsumer
from .layer import (
    ChannelFull,
    ChannelLayerError,
    InvalidChannelName,
    InvalidEvent,
    LayerUnavailable,
)
from .log import log
from .runner import export
from .sync import async_to_sync, sync_to_async

__all__ = [
    "AcceptConnection",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "ChannelFull",
    "ChannelLayerError",
    "DenyConnection",
    "InvalidChannelName",
    "InvalidEvent",
    "JsonWebsocketConsumer",
    "LayerUnavailable",
    "StopConsumer",
    "WebsocketConsumer",
    "async_to_sync",
    "export",
    "log",
    "sync_to_async",
]
