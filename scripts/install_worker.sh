#!/usr/bin/env bash
# Installs the worker program (`agent-factory-worker`) into a Python without the server:
# the package (workers.runtime only) without its server dependencies, plus the one library
# the runtime uses (requests, at the project's pin), then Node and OpenClaw
# (scripts/install_openclaw.sh). The worker image runs this; so does CI, into a scratch venv.
#
#   PYTHON   the Python to install into (default python3)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
requests_pin="$("$python" - "$root/pyproject.toml" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(next(d for d in deps if d.split("==")[0].strip().lower() == "requests"))
PY
)"
"$python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps "$root"
"$python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "$requests_pin"
PYTHON="$python" bash "$root/scripts/install_openclaw.sh"
