"""Settings of the Django side of the stations app.

REDIS_URL (redis://..., or unix:///path/to/redis.sock) is the Redis that
Switchyard's Redis layer uses too: the same channel layer (channels_redis,
default prefix "asgi") and the same inventory keys.
"""

import os

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = ["channels", "stations"]
MIDDLEWARE = []
ROOT_URLCONF = "stationsite.urls"
ASGI_APPLICATION = "stationsite.asgi.application"
DATABASES = {}
USE_TZ = True

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # No socket timeout: redis-py's 5 s equals channels_redis's 5 s
        # BZPOPMIN and makes idle receivers fail (channels_redis#422).
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
    }
}
