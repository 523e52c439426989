"""ASGI entry point, as in the Channels tutorial (ProtocolTypeRouter +
URLRouter), without AuthMiddlewareStack and the origin validator: the
Switchyard side of the benchmark has neither, so neither side pays for them."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
