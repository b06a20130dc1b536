"""Worker bearer tokens: stored hashed, scoped to one worker, revocable (SPEC §7)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from agents.models import AuditEvent
from workers.models import Worker
from workers.tokens import TOKEN_PREFIX, authenticate, mint_worker_token, revoke_worker_token


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


@pytest.mark.parametrize(
    "worker_id", ["", "   ", "has space", "semi;colon", "slash/", "x" * 101, "ünïcode-☃"]
)
def test_issue_worker_token_refuses_bad_worker_ids(db, worker_id):
    err = io.StringIO()
    with pytest.raises(CommandError, match="WORKER_ID must be 1-100 characters"):
        call_command("issue_worker_token", worker_id, stderr=err)
    assert not Worker.objects.exists()
    assert not AuditEvent.objects.exists()


def test_issue_worker_token_for_an_existing_worker_replaces_its_token(make_worker):
    worker, old = make_worker("w-existing")
    out = io.StringIO()
    call_command("issue_worker_token", "w-existing", stdout=out)
    new = out.getvalue().strip()
    assert new != old and authenticate(new) == worker and authenticate(old) is None
    assert Worker.objects.count() == 1


def test_issue_worker_token_refuses_a_stopped_worker(make_worker):
    worker, token = make_worker("w-gone")
    Worker.objects.filter(pk=worker.pk).update(status=Worker.STOPPED)
    with pytest.raises(CommandError, match="is stopped"):
        call_command("issue_worker_token", "w-gone")
    worker.refresh_from_db()
    assert worker.status == Worker.STOPPED and authenticate(token) == worker  # unchanged


def test_issue_worker_token_needs_exactly_one_argument(db):
    with pytest.raises(CommandError):
        call_command("issue_worker_token")
    with pytest.raises(CommandError):
        call_command("issue_worker_token", "a", "b")
    assert not Worker.objects.exists()


def test_stopping_a_worker_revokes_its_token(make_worker):
    from workers.lifecycle import transition_worker

    worker, token = make_worker("w-stop")
    transition_worker(worker, Worker.DRAINING, reason="idle")
    assert authenticate(token) == Worker.objects.get(pk=worker.pk)  # draining still talks
    transition_worker(Worker.objects.get(pk=worker.pk), Worker.STOPPED, reason="done")
    assert authenticate(token) is None
    worker.refresh_from_db()
    assert worker.token_hash == "" and worker.token_revoked_at is not None


def test_token_plaintext_is_never_stored_or_audited(make_worker):
    worker, token = make_worker("w-secret")
    # The whole random part (token_urlsafe may itself contain "_", so never split on it:
    # a one-letter tail would be "found" in the hash by chance).
    secret_part = token.removeprefix(f"{TOKEN_PREFIX}{worker.token_prefix}_")
    assert len(secret_part) >= 40
    row = Worker.objects.filter(pk=worker.pk).values().get()
    assert all(secret_part not in str(value) for value in row.values())
