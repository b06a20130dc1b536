from django.urls import path

from telegram import views

app_name = "telegram"

urlpatterns = [
    path("webhook/<str:bot_identity>/", views.webhook, name="webhook"),
]
