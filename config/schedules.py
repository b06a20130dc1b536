"""Every app's django-q2 schedules, assembled (``AGENT_FACTORY_SCHEDULES`` names this).

Each installed app declares its own in ``<app>/schedules.py`` as ``SCHEDULES``; a new app
adds a schedule by writing that module, nothing here changes. ``workers.scheduling``
registers them (``manage.py register_schedules``).
"""

from __future__ import annotations

from importlib import import_module

from django.apps import apps
from django.utils.module_loading import module_has_submodule


def all_schedules() -> list:
    declared = []
    for app_config in apps.get_app_configs():
        if module_has_submodule(app_config.module, "schedules"):
            module = import_module(f"{app_config.name}.schedules")
            declared += getattr(module, "SCHEDULES", [])
    return declared
