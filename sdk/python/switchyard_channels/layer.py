"""``self.channel_layer``: the channel layer as a consumer sees it.

Every method does its work at once and returns an already-finished
awaitable, so the same call ports from a sync consumer
(``async_to_sync(self.channel_layer.group_add)(group, self.channel_name)``),
from an async one (``await self.channel_layer.group_add(...)``), or is simply
called (``self.channel_layer.group_add(...)``).

Events are dicts with a ``type`` key. ``bytes`` values travel as
``{"__bytes__": "<base64>"}`` (msgpack bin on Redis, Python ``bytes`` in a
Django process) and come back to handlers as ``bytes``.
"""

import base64
import json

from componentize_py_types import Err
from wit_world.imports import host
# The world imports wasi:filesystem/types too, so componentize-py names
# this module after its package.
from wit_world.imports import switchyard_consumer_types as types

from .sync import Done


class ChannelLayerError(Exception):
    """A channel-layer operation failed and did nothing."""


class ChannelFull(ChannelLayerError):
    """The destination channel is at capacity (Channels' ``ChannelFull``)."""


class InvalidChannelName(ChannelLayerError, TypeError):
    """A channel or group name breaks the Channels naming rules (Channels raises ``TypeError``)."""


class InvalidEvent(ChannelLayerError, ValueError):
    """The event is not a JSON object with a string ``type``, or is too large."""


class LayerUnavailable(ChannelLayerError):
    """The layer cannot be reached now (e.g. Redis is down); retrying later may succeed.

    Raised out of ``connect``, the SDK refuses the handshake with HTTP 503 and
    ``Retry-After: 5`` so that clients try again.
    """


def layer_error(err):
    """The exception for a WIT ``layer-error``."""
    value = err.value if isinstance(err, Err) else err
    if isinstance(value, types.LayerError_ChannelFull):
        return ChannelFull("channel full")
    if isinstance(value, types.LayerError_InvalidName):
        return InvalidChannelName(value.value)
    if isinstance(value, types.LayerError_InvalidEvent):
        return InvalidEvent(value.value)
    if isinstance(value, types.LayerError_Unavailable):
        return LayerUnavailable(value.value)
    if isinstance(value, types.LayerError_Other):
        # The WIT's catch-all: a failure no case above names.
        return ChannelLayerError(value.value)
    return ChannelLayerError(repr(value))


def _encode_bytes(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _decode_bytes(obj):
    if len(obj) == 1 and "__bytes__" in obj and isinstance(obj["__bytes__"], str):
        return base64.b64decode(obj["__bytes__"])
    return obj


def encode_event(message):
    """An event dict as the JSON text the host takes."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise InvalidEvent(f"an event is a dict with a str 'type' key, not {message!r}")
    return json.dumps(message, default=_encode_bytes, separators=(",", ":"))


def decode_event(text):
    """An event's JSON text as a dict (``bytes`` values restored)."""
    return json.loads(text, object_hook=_decode_bytes)


class ChannelLayer:
    """The channel layer of one consumer (``self.channel_layer``)."""

    def __init__(self, consumer):
        self._consumer = consumer

    def _own(self, channel, what):
        own = self._consumer.channel_name
        if channel is not None and channel != own:
            raise ValueError(
                f"{what}: a Switchyard consumer can only add or remove its own channel "
                f"({own!r}), not {channel!r}"
            )
        return self._consumer._connection(what)

    def group_add(self, group, channel=None):
        """Adds this consumer's channel to ``group`` (``channel`` may be omitted)."""
        conn = self._own(channel, "group_add")
        try:
            conn.group_add(group)
        except Err as err:
            raise layer_error(err) from None
        return Done()

    def group_discard(self, group, channel=None):
        """Removes this consumer's channel from ``group``; not being in it is no error."""
        conn = self._own(channel, "group_discard")
        try:
            conn.group_discard(group)
        except Err as err:
            raise layer_error(err) from None
        return Done()

    def group_send(self, group, message):
        """Sends the event ``message`` (a dict with ``type``) to every member of ``group``."""
        try:
            host.group_send(group, encode_event(message))
        except Err as err:
            raise layer_error(err) from None
        return Done()

    def group_send_frame(self, group, message, frame):
        """Host-side broadcast (``group-send-frame``): every Switchyard member of
        ``group`` gets ``frame`` (``str``: a text frame; ``bytes``: a binary one)
        written to its socket by the host, with no call to its consumer; other
        members (Django consumers on a shared Redis layer, HTTP request channels)
        get the event ``message`` as from ``group_send``. Use it when ``frame``
        is exactly what each member's handler would send for ``message``.
        """
        if isinstance(frame, str):
            wit_frame = types.Frame_Text(frame)
        elif isinstance(frame, (bytes, bytearray, memoryview)):
            wit_frame = types.Frame_Binary(bytes(frame))
        else:
            raise TypeError(f"a frame is str or bytes, not {type(frame).__name__}")
        try:
            host.group_send_frame(group, encode_event(message), wit_frame)
        except Err as err:
            raise layer_error(err) from None
        return Done()

    def send(self, channel, message):
        """Sends the event ``message`` to one channel; ``ChannelFull`` when it is at capacity."""
        try:
            host.channel_send(channel, encode_event(message))
        except Err as err:
            raise layer_error(err) from None
        return Done()
