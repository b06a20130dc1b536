from django.apps import AppConfig


class FlyConfig(AppConfig):
    name = "fly"
