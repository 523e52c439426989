from django.urls import path

from stations import views

urlpatterns = [
    path("api/stations/<int:station_id>/", views.station),
    path("api/stations/<int:station_id>/swaps/", views.swap),
]
