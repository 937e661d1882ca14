from django.urls import path

from . import views

urlpatterns = [
    path("payments", views.payments),
    path("payments/count", views.count),
    path("faithful", views.faithful),
    path("reject", views.reject),
    path("slow", views.slow),
]
