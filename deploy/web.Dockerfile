# The server image (SPEC §24): Django admin, APIs and webhooks under gunicorn; the same image
# runs the django-q2 cluster (`manage.py qcluster`, the Fly app's second process group).
# Every RUN is a script CI runs too: scripts/_venv.sh builds .venv exactly as CI does.
#   docker build -f deploy/web.Dockerfile -t registry.fly.io/agent-factory-web:latest .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENT_FACTORY_VAR_DIR=/app/var \
    PORT=8000

WORKDIR /app
COPY . .
RUN bash -c 'source scripts/_venv.sh'
ENV PATH=/app/.venv/bin:$PATH

EXPOSE 8000
# Static files are collected at start (they need the settings, which need the secrets that
# only the running app has); WhiteNoise serves them. Migrations run as Fly's release command.
CMD ["sh", "-c", "python manage.py collectstatic --noinput --verbosity 0 && exec python -m gunicorn config.wsgi:application --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-2} --worker-class gthread --threads 4 --graceful-timeout 10"]
