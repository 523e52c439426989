"""The API routes the Django app still serves while Switchyard takes over
the others: same paths, same answers, same store."""

import json

from asgiref.sync import async_to_sync
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import inventory
from .publish import station_changed


def _unknown(station_id):
    return JsonResponse(
        {"error": "unknown_station", "detail": f"no station {station_id}"}, status=404
    )


@require_GET
def station(request, station_id):
    try:
        return JsonResponse(inventory.as_json(inventory.get(station_id)))
    except inventory.UnknownStation:
        return _unknown(station_id)


def _change(request, station_id, kind):
    try:
        if request.body.strip() and json.loads(request.body) != {}:
            return JsonResponse(
                {"error": "bad_request", "detail": "this view takes {}"}, status=400
            )
    except ValueError as err:
        return JsonResponse(
            {"error": "bad_request", "detail": f"malformed body: {err}"}, status=400
        )
    try:
        station = inventory.as_json(inventory.change(station_id, kind))
    except inventory.UnknownStation:
        return _unknown(station_id)
    except inventory.NothingToChange as err:
        return JsonResponse({"error": err.code, "detail": str(err)}, status=409)
    async_to_sync(station_changed)(station, kind)
    return JsonResponse(station)


@csrf_exempt
@require_POST
def swap(request, station_id):
    return _change(request, station_id, "swap")


@csrf_exempt
@require_POST
def charging(request, station_id):
    return _change(request, station_id, "charging")


@csrf_exempt
@require_POST
def charged(request, station_id):
    return _change(request, station_id, "charged")
