"""`manage.py record_swap ID`: POST a swap to the Django view (through
Django's test client, no server needed) and print its answer as one JSON
line. The view changes the shared inventory and publishes to the group
`station_ID` through channels_redis."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.test import Client


class Command(BaseCommand):
    help = "Record a swap at a station through the Django view."

    def add_arguments(self, parser):
        parser.add_argument("station_id", type=int)

    def handle(self, *args, station_id, **options):
        response = Client().post(
            f"/api/stations/{station_id}/swaps/", data="{}", content_type="application/json"
        )
        if response.status_code != 200:
            raise CommandError(f"{response.status_code}: {response.content.decode()}")
        self.stdout.write(json.dumps(response.json()))
