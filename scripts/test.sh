#!/usr/bin/env bash
# Runs the whole test suite: SQLite by default, PostgreSQL when DATABASE_URL says so.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
