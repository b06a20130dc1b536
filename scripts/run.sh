#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv, installs, migrates, creates the demo
# admin, then runs the web server, the django-q2 cluster and the local worker pool.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
export DEBUG="${DEBUG:-1}"
exec .venv/bin/python manage.py run_embedded "$@"
