"""The test settings as they were before SPEC §18's pool: persistent per-thread connections
(CONN_MAX_AGE=60, no pool). Only the control run of test_connection_bound uses this."""

from config.test_settings import *  # noqa: F403
from config.test_settings import DATABASES

DATABASES["default"]["OPTIONS"].pop("pool", None)
DATABASES["default"]["CONN_MAX_AGE"] = 60
