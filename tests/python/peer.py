"""A channels_redis peer for Switchyard's Redis interop tests.

Runs the real channels_redis 4.x RedisChannelLayer against the test's Redis.

    peer.py CONFIG_JSON group_send GROUP EVENT_JSON
    peer.py CONFIG_JSON send CHANNEL EVENT_JSON
    peer.py CONFIG_JSON listen GROUP COUNT TIMEOUT_SECS

CONFIG_JSON is the layer's CONFIG (hosts, symmetric_encryption_keys, ...).
Events travel as JSON with bytes as {"__bytes__": "<base64>"}, as in Switchyard.
`listen` prints {"channel": name} once it has joined GROUP, then one line per
received message: {"message": <message as JSON>, "bytes_keys": [top-level keys
whose value is Python bytes]}.
"""

import asyncio
import base64
import json
import sys

from channels_redis.core import RedisChannelLayer


def to_python(value):
    if isinstance(value, dict):
        if list(value) == ["__bytes__"]:
            return base64.b64decode(value["__bytes__"])
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_python(v) for v in value]
    return value


def to_json(value):
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def emit(obj):
    print(json.dumps(obj), flush=True)


async def main(argv):
    config = json.loads(argv[1])
    command = argv[2]
    layer = RedisChannelLayer(**config)
    try:
        if command == "group_send":
            await layer.group_send(argv[3], to_python(json.loads(argv[4])))
        elif command == "send":
            await layer.send(argv[3], to_python(json.loads(argv[4])))
        elif command == "listen":
            group, count, timeout = argv[3], int(argv[4]), float(argv[5])
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            emit({"channel": channel})
            for _ in range(count):
                message = await asyncio.wait_for(layer.receive(channel), timeout)
                bytes_keys = sorted(k for k, v in message.items() if isinstance(v, bytes))
                emit({"message": to_json(message), "bytes_keys": bytes_keys})
            await layer.group_discard(group, channel)
        else:
            raise SystemExit(f"unknown command {command!r}")
    finally:
        await layer.close_pools()


if __name__ == "__main__":
    asyncio.run(main(sys.argv))
