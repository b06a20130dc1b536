"""Worker bearer tokens: stored hashed, scoped to one worker, revocable (SPEC §7)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from agents.models import AuditEvent
from workers.models import Worker
from workers.tokens import authenticate, mint_worker_token, revoke_worker_token


def test_token_is_stored_only_as_a_keyed_hash(make_worker):
    worker, token = make_worker("w-hash")
    worker.refresh_from_db()
    assert token.startswith("wk_")
    assert token not in (worker.token_hash, worker.token_prefix)
    assert len(worker.token_hash) == 64
    assert authenticate(token) == worker


def test_token_authenticates_only_its_own_worker(make_worker):
    first, first_token = make_worker("w-one")
    second, second_token = make_worker("w-two")
    assert authenticate(first_token) == first
    assert authenticate(second_token) == second
    # Same prefix, different secret: the hash check refuses it.
    forged = first_token[: first_token.rindex("_") + 1] + "x" * 43
    assert authenticate(forged) is None
    for junk in ("", "wk_", "wk__", "Bearer x", None, 42):
        assert authenticate(junk) is None


def test_minting_again_replaces_the_old_token(make_worker):
    worker, old = make_worker("w-remint")
    new = mint_worker_token(worker)
    assert authenticate(old) is None
    assert authenticate(new) == worker


def test_revoked_token_no_longer_authenticates(make_worker):
    worker, token = make_worker("w-revoke")
    revoke_worker_token(worker)
    assert authenticate(token) is None
    worker.refresh_from_db()
    assert worker.token_hash == "" and worker.token_revoked_at is not None


def test_issue_worker_token_registers_worker_and_prints_only_the_token(db):
    out = io.StringIO()
    call_command("issue_worker_token", "w-manual", stdout=out)
    token = out.getvalue().strip()
    assert "\n" not in token
    worker = Worker.objects.get(worker_id="w-manual")
    assert worker.status == Worker.ACTIVE
    assert authenticate(token) == worker
    audit = AuditEvent.objects.filter(action__contains="token").values_list("details", flat=True)
    assert all(token not in str(details) for details in audit)


def test_issue_worker_token_refuses_a_blank_worker_id(db):
    with pytest.raises(CommandError):
        call_command("issue_worker_token", "  ")
    assert not Worker.objects.exists()
