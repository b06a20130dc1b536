"""The encrypted secret store (SPEC §4)."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections

from agents.models import AuditEvent, Secret
from agents.secret_store import (
    SecretDecryptionError,
    SecretStoreError,
    _key_ring_for,
    decrypt_secret,
    get_active_secret_value,
    import_secret,
    key_id_for,
)

PLAINTEXT = "sk-live-very-secret-VALUE-1234567890"
OLD_KEY = base64.b64encode(b"o" * 32).decode()
NEW_KEY = base64.b64encode(b"n" * 32).decode()


@pytest.fixture(autouse=True)
def fresh_key_ring():
    _key_ring_for.cache_clear()
    yield
    _key_ring_for.cache_clear()


def test_round_trip_and_versions(db):
    first = import_secret("api.key", "one", actor="t")
    second = import_secret("api.key", "two", actor="t")
    assert (first.version, second.version) == (1, 2)
    assert get_active_secret_value("api.key") == "two"
    assert list(Secret.objects.filter(active=True).values_list("version", flat=True)) == [2]
    assert Secret.objects.get(version=2).rotated_from_id == first.pk
    assert bytes(second.ciphertext) != b"two" and len(bytes(second.nonce)) == 12
    assert AuditEvent.objects.filter(action="secret.import").count() == 2


def test_nonce_is_fresh_per_write(db):
    a = import_secret("a", PLAINTEXT, actor="t")
    b = import_secret("b", PLAINTEXT, actor="t")
    assert bytes(a.nonce) != bytes(b.nonce) and bytes(a.ciphertext) != bytes(b.ciphertext)


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_empty_value_refused(db, value):
    with pytest.raises(SecretStoreError, match="empty"):
        import_secret("x", value, actor="t")
    assert Secret.objects.count() == 0


def test_bad_ref_refused(db):
    with pytest.raises(SecretStoreError, match="Secret ref"):
        import_secret("../etc/passwd", "v", actor="t")


def test_tampered_ciphertext_fails_clearly(db):
    secret = import_secret("api.key", PLAINTEXT, actor="t")
    data = bytearray(bytes(secret.ciphertext))
    data[0] ^= 1
    Secret.objects.filter(pk=secret.pk).update(ciphertext=bytes(data))
    with pytest.raises(SecretDecryptionError, match="failed authentication") as exc:
        get_active_secret_value("api.key")
    assert PLAINTEXT not in str(exc.value)


def test_ciphertext_moved_to_another_row_fails(db):
    source = import_secret("one", PLAINTEXT, actor="t")
    target = import_secret("two", "other", actor="t")
    Secret.objects.filter(pk=target.pk).update(ciphertext=source.ciphertext, nonce=source.nonce)
    with pytest.raises(SecretDecryptionError):
        get_active_secret_value("two")


def test_unknown_key_id_fails_clearly(db):
    secret = import_secret("api.key", PLAINTEXT, actor="t")
    Secret.objects.filter(pk=secret.pk).update(key_id="deadbeef")
    with pytest.raises(SecretDecryptionError, match="'deadbeef', which is not in"):
        get_active_secret_value("api.key")


def test_rotation_reencrypts_and_old_key_still_decrypts_until_removed(db, settings):
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = OLD_KEY
    secret = import_secret("api.key", PLAINTEXT, actor="t")
    assert secret.key_id == key_id_for(b"o" * 32)
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = f"{NEW_KEY},{OLD_KEY}"
    assert get_active_secret_value("api.key") == PLAINTEXT  # old key still decrypts
    out = io.StringIO()
    call_command("rotate_encryption_key", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["rotated"] == 1 and report["failed"] == 0
    assert Secret.objects.get().key_id == key_id_for(b"n" * 32)
    out = io.StringIO()
    call_command("rotate_encryption_key", "--json", stdout=out)
    assert json.loads(out.getvalue())["rotated"] == 0  # idempotent
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = NEW_KEY  # old key removed
    assert get_active_secret_value("api.key") == PLAINTEXT


def test_plaintext_never_in_database_admin_status_or_logs(admin_client, caplog):
    caplog.set_level(logging.DEBUG)
    response = admin_client.post(
        "/admin/agents/secret/add/", {"secret_ref": "leak.check", "value": PLAINTEXT}
    )
    assert response.status_code == 302
    secret = Secret.objects.get(secret_ref="leak.check")
    assert decrypt_secret(secret) == PLAINTEXT
    # Every column of every row, as the database stores it.
    with connection.cursor() as cursor:
        for model in (Secret, AuditEvent):
            cursor.execute(f"SELECT * FROM {model._meta.db_table}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    raw = (
                        bytes(value)
                        if isinstance(value, memoryview | bytes)
                        else str(value).encode()
                    )
                    assert PLAINTEXT.encode() not in raw
    pages = [
        "/admin/agents/secret/",
        f"/admin/agents/secret/{secret.pk}/change/",
        f"/admin/agents/secret/{secret.pk}/history/",
        "/admin/agents/secret/add/",
        "/admin/agents/auditevent/",
    ]
    for page in pages:
        content = admin_client.get(page).content.decode()
        assert PLAINTEXT not in content, page
    out = io.StringIO()
    call_command("secret_status", stdout=out)
    call_command("secret_status", "--json", stdout=out)
    assert PLAINTEXT not in out.getvalue() and "leak.check" in out.getvalue()
    assert PLAINTEXT not in caplog.text


def test_admin_cannot_edit_an_existing_version(admin_client, db):
    secret = import_secret("ro", "original", actor="t")
    admin_client.post(f"/admin/agents/secret/{secret.pk}/change/", {"secret_ref": "changed"})
    secret.refresh_from_db()
    assert secret.secret_ref == "ro"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_leave_one_active_version():
    errors = []
    barrier = threading.Barrier(8)

    def run(n: int):
        try:
            barrier.wait()
            import_secret("race", f"value-{n}", actor="t")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    versions = sorted(Secret.objects.filter(secret_ref="race").values_list("version", flat=True))
    assert versions == list(range(1, 9))  # no import lost
    assert Secret.objects.filter(secret_ref="race", active=True).count() == 1
    active = Secret.objects.get(secret_ref="race", active=True)
    assert active.version == 8
