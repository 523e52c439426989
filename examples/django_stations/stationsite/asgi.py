"""ASGI entry point: HTTP views and the station feed consumer, routed as
Switchyard routes them (same paths, same messages)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stationsite.settings")

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

django_http = get_asgi_application()

from stations.consumers import StationConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": URLRouter(
            [path("ws/stations/<int:station_id>/", StationConsumer.as_asgi())]
        ),
    }
)
