"""`manage.py watch_station ID COUNT`: connect the Django StationConsumer
(in process, through asgiref's ApplicationCommunicator, as
channels.testing does, on the real channels_redis layer) to `ws/stations/ID/` and print the snapshot and the
next COUNT messages it sends, one JSON line each."""

import asyncio
import json

from asgiref.testing import ApplicationCommunicator
from django.core.management.base import BaseCommand, CommandError

from stationsite.asgi import application


class Command(BaseCommand):
    help = "Print what the Django station feed sends."

    def add_arguments(self, parser):
        parser.add_argument("station_id", type=int)
        parser.add_argument("count", type=int)
        parser.add_argument("--timeout", type=float, default=20)

    def handle(self, *args, station_id, count, timeout, **options):
        asyncio.run(self.watch(station_id, count, timeout))

    async def watch(self, station_id, count, timeout):
        path = f"/ws/stations/{station_id}/"
        scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "subprotocols": [],
        }
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "websocket.connect"})
        answer = await communicator.receive_output(timeout)
        if answer["type"] != "websocket.accept":
            raise CommandError(f"the consumer refused the socket: {answer}")
        try:
            for _ in range(count + 1):
                message = await communicator.receive_output(timeout)
                self.stdout.write(json.dumps(json.loads(message["text"])))
                self.stdout.flush()
        finally:
            await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
            await communicator.wait(timeout)
