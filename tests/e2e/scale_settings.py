"""Settings of the processes the scale-out test starts (gunicorn, qcluster, commands).

The product's own settings, read from the environment as in production, plus the two things
only that test needs and no environment variable offers: a django-q2 queue name of its own
(so parallel runs on one Redis never take each other's tasks) and flags for the local
workers (poll and idle-exit timers, which are worker flags, not runtime config).
"""

import os
import shlex
import sys

from config.settings import *  # noqa: F403
from config.settings import BASE_DIR, Q_CLUSTER

Q_CLUSTER = {**Q_CLUSTER, "name": os.environ["SCALE_Q_NAME"]}
AGENT_FACTORY_LOCAL_WORKER_COMMAND = [
    sys.executable,
    str(BASE_DIR / "manage.py"),
    "run_worker",
    *shlex.split(os.environ.get("SCALE_WORKER_ARGS", "")),
]
# Teardown of a worker that is still up waits this long for its snapshot before SIGKILL;
# reconcile holds its lock meanwhile, so keep it short under churn.
AGENT_FACTORY_LOCAL_TERM_GRACE_SECONDS = 2.0
