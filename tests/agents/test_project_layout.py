"""The project layout of SPEC §2 and the pinned stack of SPEC §1."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STACK = [
    "Django",
    "djangorestframework",
    "django-environ",
    "django-q2",
    "cryptography",
    "requests",
    "psycopg",
    "pytest",
    "pytest-django",
    "responses",
    "time-machine",
    "ruff",
]


def test_top_level_layout():
    for name in ("manage.py", "pyproject.toml", "README.md"):
        assert (ROOT / name).is_file(), name
    for app in ("config", "agents", "telegram", "workers", "fly", "templates", "tests"):
        assert (ROOT / app).is_dir(), app
    for app in ("agents", "telegram", "workers", "fly"):
        assert (ROOT / app / "apps.py").is_file() and (ROOT / app / "models.py").is_file(), app
    for module in ("settings.py", "urls.py", "wsgi.py", "asgi.py"):
        assert (ROOT / "config" / module).is_file(), module


def test_stack_is_pinned_and_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = {}
    for requirement in requirements:
        name, _, pinned = requirement.partition("==")
        pins[name.split("[")[0].strip().lower()] = pinned.strip()
    for package in STACK:
        assert pins.get(package.lower()), f"{package} is not pinned with == in pyproject.toml"
        assert version(package) == pins[package.lower()], package
    assert pins["django"].startswith("5.2."), "Django 5.2 LTS"


def test_ground_floor_imports_no_other_app():
    """SPEC §2: agents' base imports neither workers, telegram nor fly."""
    base = ["models.py", "secret_store.py", "audit.py", "services.py", "checks.py"]
    for name in base:
        text = (ROOT / "agents" / name).read_text()
        for app in ("workers", "telegram", "fly"):
            assert f"from {app}" not in text and f"import {app}" not in text, (name, app)
