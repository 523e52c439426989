"""The HTTP side of the benchmark site: the hello plugin's JSON view, written
the Django way."""

from django.http import JsonResponse
from django.urls import path


def hello(request, name):
    return JsonResponse({"hello": name})


urlpatterns = [
    path("api/hello/<str:name>/", hello),
]
