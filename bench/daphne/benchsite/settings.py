"""Settings of the Django + Channels project that bench/run.sh measures.

The channel layer is chosen by the environment, so one project serves both
runs: BENCH_LAYER=memory (Channels' InMemoryChannelLayer; echo, idle, churn
and in-memory fan-out) or BENCH_LAYER=redis with REDIS_URL
(channels_redis.core.RedisChannelLayer with its defaults, as the Channels
tutorial configures it).
"""

import os

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels", "chat"]
ASGI_APPLICATION = "benchsite.asgi.application"
ROOT_URLCONF = "benchsite.urls"
# No middleware: the Switchyard and ceiling sides have none either.
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True

if os.environ.get("BENCH_LAYER", "memory") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}
