"""The webhook signature (SPEC §15): ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, a
5-minute replay window; and the standalone ``verify`` README gives host apps, run here."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path

import pytest
from django.conf import settings

from agents.consumer_api.webhook_signature import header_value, signature, verify

SECRET = "whsec_test"
BODY = b'{"id":"evt_1","type":"binding.revoked"}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, 1700000000, BODY) == expected
    assert header_value(SECRET, BODY, 1700000000) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(
    "secret, body, age, ok",
    [
        (SECRET, BODY, 0, True),
        (SECRET, BODY, 299, True),
        (SECRET, BODY, 301, False),  # outside the replay window
        (SECRET, BODY, -301, False),  # from the future
        ("other", BODY, 0, False),
        (SECRET, BODY + b" ", 0, False),  # body changed
    ],
)
def test_verify(secret, body, age, ok):
    now = 1_700_000_000
    header = header_value(SECRET, BODY, now - age)
    assert verify(secret, body, header, now=now) is ok


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", "v1=00", "t=1700000000", None])
def test_verify_refuses_a_malformed_header(header):
    assert verify(SECRET, BODY, header, now=1_700_000_000) is False


def readme_verify():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(def |import hashlib.*?\n)(.*?)```", readme, re.S)
    assert block, "README lost its verify function"
    namespace: dict = {}
    exec(block.group(1) + block.group(2), namespace)  # noqa: S102 (our own README)
    return namespace["verify_agent_factory_signature"]


def test_the_readme_verify_function_accepts_our_signature_and_nothing_else():
    check = readme_verify()
    now = int(time.time())
    assert check(SECRET, BODY, header_value(SECRET, BODY, now))
    assert not check(SECRET, BODY, header_value(SECRET, BODY, now - 600))
    assert not check("other", BODY, header_value(SECRET, BODY, now))
    assert not check(SECRET, BODY + b"x", header_value(SECRET, BODY, now))
    assert not check(SECRET, BODY, "garbage")
