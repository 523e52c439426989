"""The station inventory Switchyard's `stations` plugin keeps, read and
changed from Django: the same Redis keys, the same JSON, the same atomicity.

The plugin stores station <id> as JSON under
`switchyard:kv:stations:inventory:station:<id>` (its wasi:keyvalue bucket
`inventory` on the Redis layer) and changes it by compare-and-swap. Here a
change is a WATCH/MULTI transaction on that key: it fails if anyone, the
plugin's compare-and-swap included, wrote the key meanwhile, and is then
retried, so neither side ever loses the other's update.
"""

import json

import redis
from django.conf import settings

PREFIX = "switchyard:kv:stations:inventory:"
LOW_CHARGED = 2
STATES = ("charged", "charging", "depleted", "faulty")


class UnknownStation(Exception):
    pass


def _client():
    return redis.Redis.from_url(settings.REDIS_URL)


def _key(station_id):
    return f"{PREFIX}station:{station_id}"


def as_json(station):
    """The station as the API and the feeds show it (as the plugin does)."""
    inventory = {s: sum(b["state"] == s for b in station["batteries"]) for s in STATES}
    return {
        "id": station["id"],
        "name": station["name"],
        "location": station["location"],
        "capacity": len(station["batteries"]),
        "inventory": inventory,
        "low": inventory["charged"] <= LOW_CHARGED,
        "version": station["version"],
        "batteries": station["batteries"],
    }


def get(station_id):
    raw = _client().get(_key(station_id))
    if raw is None:
        raise UnknownStation(station_id)
    return json.loads(raw)


# What each change does: (state it takes a battery from, state it leaves it
# in, whether a new battery replaces it), as the plugin's changes without a
# body ({}) do.
CHANGES = {
    "swap": ("charged", "depleted", True),
    "charging": ("depleted", "charging", False),
    "charged": ("charging", "charged", False),
}


class NothingToChange(Exception):
    def __init__(self, station_id, state):
        super().__init__(f"station {station_id} has no {state} battery")
        self.code = f"no_{state}_battery"


def change(station_id, kind):
    """Apply change `kind` (a key of CHANGES) to the first battery it fits."""
    source, target, replace = CHANGES[kind]
    with _client().pipeline() as pipe:
        while True:
            try:
                pipe.watch(_key(station_id))
                raw = pipe.get(_key(station_id))
                if raw is None:
                    raise UnknownStation(station_id)
                station = json.loads(raw)
                slot = next((b for b in station["batteries"] if b["state"] == source), None)
                if slot is None:
                    raise NothingToChange(station_id, source)
                if replace:
                    station["next_battery"] += 1
                    slot["id"] = f"S{station_id}-R{station['next_battery']}"
                slot["state"] = target
                station["version"] += 1
                pipe.multi()
                pipe.set(_key(station_id), json.dumps(station, separators=(",", ":")))
                pipe.execute()
                return station
            except redis.WatchError:
                continue
