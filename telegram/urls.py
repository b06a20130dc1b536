from django.urls import path

from telegram.webhook import webhook

app_name = "telegram"

urlpatterns = [
    path("webhook/<str:bot_identity>/", webhook, name="webhook"),
]
