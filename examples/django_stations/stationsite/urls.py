from django.urls import path

from stations import views

urlpatterns = [
    path("api/stations/<int:station_id>/", views.station),
    path("api/stations/<int:station_id>/swaps/", views.swap),
    path("api/stations/<int:station_id>/charging/", views.charging),
    path("api/stations/<int:station_id>/charged/", views.charged),
]
