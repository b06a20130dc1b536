#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv, installs, migrates, creates the demo
# admin, then runs the web server (gunicorn; --dev: runserver with autoreload), the django-q2
# cluster (schedules, triggers) and, through the local provider, the worker pool. Telegram
# is the built-in offline sandbox unless TELEGRAM_API_BASE_URL says otherwise. Arguments go
# to run_embedded (--dev, --web-workers N, --no-qcluster, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
export DEBUG="${DEBUG:-1}"
port="${PORT:-8000}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:${port}}"
export TELEGRAM_API_BASE_URL="${TELEGRAM_API_BASE_URL:-${PUBLIC_BASE_URL}/sandbox/telegram}"
exec .venv/bin/python manage.py run_embedded --port "$port" "$@"
