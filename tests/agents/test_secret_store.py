"""The encrypted secret store (SPEC §4)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import IntegrityError, connection, connections, transaction

from agents.models import AgentProfile, AuditEvent, Secret
from agents.secret_store import (
    SecretStoreError,
    SecretUnavailable,
    _key_ring_for,
    decrypt_secret,
    get_active_secret_value,
    get_key_ring,
    import_secret,
    key_id_for,
    rotate_encryption_key,
)
from tests.race import run_at_once

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
    with pytest.raises(SecretUnavailable, match="failed authentication") as exc:
        get_active_secret_value("api.key")
    assert PLAINTEXT not in str(exc.value)


def test_ciphertext_moved_to_another_row_fails(db):
    source = import_secret("one", PLAINTEXT, actor="t")
    target = import_secret("two", "other", actor="t")
    Secret.objects.filter(pk=target.pk).update(ciphertext=source.ciphertext, nonce=source.nonce)
    with pytest.raises(SecretUnavailable):
        get_active_secret_value("two")


def test_unknown_key_id_fails_clearly(db):
    secret = import_secret("api.key", PLAINTEXT, actor="t")
    Secret.objects.filter(pk=secret.pk).update(key_id="deadbeef")
    with pytest.raises(SecretUnavailable, match="'deadbeef', which is not in"):
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


def _scan_database_for(needle: bytes) -> list[str]:
    """Every column of every row of every table, as the database stores it."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    raw = (
                        bytes(value)
                        if isinstance(value, memoryview | bytes | bytearray)
                        else str(value).encode()
                    )
                    if needle in raw:
                        found.append(table)
    return found


def test_plaintext_never_in_database_admin_status_or_logs(
    admin_client, cli, caplog, settings, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    # Log every SQL statement with its parameters too: the widest net a log could cast.
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    monkeypatch.setattr(connections["default"], "force_debug_cursor", True)
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = OLD_KEY
    # Every way a value comes in: the admin form, the command (stdin), a second version.
    response = admin_client.post(
        "/admin/agents/secret/add/", {"secret_ref": "leak.check", "value": PLAINTEXT}
    )
    assert response.status_code == 302
    assert cli("import_secret", "leak.cli", stdin=PLAINTEXT + "\n").code == 0
    response = admin_client.post(
        "/admin/agents/secret/add/", {"secret_ref": "leak.check", "value": PLAINTEXT + "-2"}
    )
    assert response.status_code == 302
    # A rejected form (bad ref) must not echo the value back either.
    response = admin_client.post(
        "/admin/agents/secret/add/", {"secret_ref": "bad ref", "value": PLAINTEXT}
    )
    assert response.status_code == 200 and b"Secret ref must be" in response.content
    assert PLAINTEXT.encode() not in response.content
    # The agent profile's write-only model key (SPEC §21), also a way in.
    response = admin_client.post(
        "/admin/agents/agentprofile/add/",
        {
            "agent_key": "leaky", "secrets_ref": "[]", "initial-secrets_ref": "[]",
            "bridge_config": "{}", "initial-bridge_config": "{}", "handler": "llm",
            "model": "m", "api_key_secret_ref": "leak.model", "api_key": PLAINTEXT,
            "timeout_seconds": "60", "price_per_million_input_tokens": "0",
            "price_per_million_output_tokens": "0", "delivery": "server",
        },
    )  # fmt: skip
    assert response.status_code == 302
    profile = AgentProfile.objects.get(agent_key="leaky")
    # Rotation rewrites every row; the value must stay encrypted through it.
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = f"{NEW_KEY},{OLD_KEY}"
    assert cli("rotate_encryption_key").code == 0
    secret = Secret.objects.get(secret_ref="leak.check", active=True)
    assert decrypt_secret(secret) == PLAINTEXT + "-2"
    assert get_active_secret_value("leak.cli") == PLAINTEXT
    assert get_active_secret_value("leak.model") == PLAINTEXT
    assert _scan_database_for(PLAINTEXT.encode()) == []
    old = Secret.objects.get(secret_ref="leak.check", version=1)
    event = AuditEvent.objects.filter(action="secret.import").first()
    pages = [
        "/admin/agents/secret/",
        "/admin/agents/secret/?q=leak",
        f"/admin/agents/secret/{secret.pk}/change/",
        f"/admin/agents/secret/{old.pk}/change/",
        f"/admin/agents/secret/{secret.pk}/history/",
        f"/admin/agents/secret/{old.pk}/history/",
        f"/admin/agents/secret/{secret.pk}/delete/",
        "/admin/agents/secret/add/",
        "/admin/agents/auditevent/",
        f"/admin/agents/auditevent/{event.pk}/change/",
        "/admin/",
        "/admin/agents/agentprofile/",
        f"/admin/agents/agentprofile/{profile.pk}/change/",
        f"/admin/agents/agentprofile/{profile.pk}/history/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert PLAINTEXT not in response.content.decode(), page
    history = admin_client.get(f"/admin/agents/secret/{secret.pk}/history/").content.decode()
    assert "Added." in history  # the history page does list the addition, without the value
    status = cli("secret_status").out + cli("secret_status", "--json").out
    assert "leak.check" in status and "leak.cli" in status
    assert PLAINTEXT not in status
    assert any("agents_secret" in r.getMessage() for r in caplog.records)  # SQL was logged
    for record in caplog.records:
        assert PLAINTEXT not in record.getMessage(), record.name
    assert PLAINTEXT not in caplog.text


def test_errors_never_carry_the_value(db, settings):
    secret = import_secret("err.check", PLAINTEXT, actor="t")
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = NEW_KEY  # the writing key removed
    with pytest.raises(SecretUnavailable) as exc:
        get_active_secret_value("err.check")
    assert "not in AGENT_FACTORY_ENCRYPTION_KEYS" in str(exc.value)
    assert PLAINTEXT not in str(exc.value) and PLAINTEXT not in repr(exc.value.args)
    with pytest.raises(SecretStoreError) as exc:
        import_secret("bad ref", PLAINTEXT, actor="t")
    assert PLAINTEXT not in str(exc.value)
    assert Secret.objects.get().pk == secret.pk


def test_database_allows_one_active_version_per_ref(db):
    secret = import_secret("api.key", "one", actor="t")

    def insert(*, version: int, active: bool) -> None:
        Secret.objects.create(
            secret_ref="api.key",
            version=version,
            ciphertext=b"x",
            nonce=b"n" * 12,
            key_id=secret.key_id,
            active=active,
        )

    with pytest.raises(IntegrityError), transaction.atomic():
        insert(version=2, active=True)  # a second active version
    with pytest.raises(IntegrityError), transaction.atomic():
        insert(version=1, active=False)  # a version number already taken
    # Inactive versions may pile up; the constraint is only on the active one.
    import_secret("api.key", "two", actor="t")
    import_secret("api.key", "three", actor="t")
    assert Secret.objects.filter(secret_ref="api.key").count() == 3
    assert Secret.objects.filter(secret_ref="api.key", active=True).count() == 1


def test_older_version_keeps_its_own_associated_data(db):
    first = import_secret("api.key", "one", actor="t")
    second = import_secret("api.key", "two", actor="t")
    assert decrypt_secret(Secret.objects.get(pk=first.pk)) == "one"
    # v1's ciphertext on the v2 row: same ref, other version -> refused, not "one".
    Secret.objects.filter(pk=second.pk).update(ciphertext=first.ciphertext, nonce=first.nonce)
    with pytest.raises(SecretUnavailable, match="failed authentication"):
        get_active_secret_value("api.key")


def test_rotation_when_the_old_key_was_removed_too_early(db, settings):
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = OLD_KEY
    stuck = import_secret("stuck", PLAINTEXT, actor="t")
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = NEW_KEY
    fine = import_secret("fine", "other", actor="t")
    report = rotate_encryption_key(actor="t")
    assert report["rotated"] == 0 and report["already_current"] == 1 and report["failed"] == 1
    assert report["errors"][0].startswith("stuck v1:") and PLAINTEXT not in report["errors"][0]
    stuck.refresh_from_db()
    assert stuck.key_id == key_id_for(b"o" * 32)  # untouched: it decrypts once the key is back
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = f"{NEW_KEY},{OLD_KEY}"
    assert rotate_encryption_key(actor="t")["rotated"] == 1
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = NEW_KEY
    assert get_active_secret_value("stuck") == PLAINTEXT
    assert get_active_secret_value("fine") == "other" and fine.key_id == key_id_for(b"n" * 32)


def test_rotation_keeps_every_version_readable(db, settings):
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = OLD_KEY
    for n in range(3):
        import_secret("multi", f"value-{n}", actor="t")
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = f"{NEW_KEY},{OLD_KEY}"
    report = rotate_encryption_key(actor="t", batch_size=2)  # more than one batch
    assert report["rotated"] == 3
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = NEW_KEY
    assert [decrypt_secret(s) for s in Secret.objects.order_by("version")] == [
        "value-0",
        "value-1",
        "value-2",
    ]
    assert get_active_secret_value("multi") == "value-2"


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not base64!", "entry 1 is not valid base64"),
        (f"{NEW_KEY},c2hvcnQ=", "entry 2 decodes to 5 bytes"),
    ],
)
def test_bad_key_configuration_is_refused(db, settings, raw, message):
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = raw
    with pytest.raises(ImproperlyConfigured, match=message):
        import_secret("x", "v", actor="t")
    assert Secret.objects.count() == 0


def test_key_ring_first_key_encrypts_all_decrypt(settings):
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = f" {NEW_KEY} , {OLD_KEY} ,"
    ring = get_key_ring()
    assert ring.primary == b"n" * 32 and ring.key_by_id(key_id_for(b"o" * 32)) == b"o" * 32
    assert ring.primary_id == hashlib.sha256(b"n" * 32).hexdigest()[:8]
    assert ring.key_by_id("00000000") is None


def test_dev_key_generated_once_with_a_warning_only_when_debug(settings, tmp_path, caplog):
    key_file = tmp_path / "var" / "dev-encryption.key"
    settings.AGENT_FACTORY_DEV_KEY_FILE = key_file
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = ""
    settings.DEBUG = False
    with pytest.raises(ImproperlyConfigured, match="AGENT_FACTORY_ENCRYPTION_KEYS is not set"):
        get_key_ring()
    assert not key_file.exists()
    settings.DEBUG = True
    with caplog.at_level(logging.WARNING, logger="agents.secret_store"):
        first = get_key_ring().primary
    assert "generated a development key" in caplog.text
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert base64.b64decode(key_file.read_text().strip()) == first
    caplog.clear()
    _key_ring_for.cache_clear()  # a new process: the same key is read back, not regenerated
    with caplog.at_level(logging.WARNING, logger="agents.secret_store"):
        assert get_key_ring().primary == first
    assert "generated" not in caplog.text


def test_admin_cannot_edit_an_existing_version(admin_client, db):
    secret = import_secret("ro", "original", actor="t")
    admin_client.post(f"/admin/agents/secret/{secret.pk}/change/", {"secret_ref": "changed"})
    secret.refresh_from_db()
    assert secret.secret_ref == "ro"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_leave_one_active_version():
    def run(n: int):
        import_secret("race", f"value-{n}", actor="t")

    run_at_once(run, [(n,) for n in range(8)], join_timeout=30)
    versions = sorted(Secret.objects.filter(secret_ref="race").values_list("version", flat=True))
    assert versions == list(range(1, 9))  # no import lost
    assert Secret.objects.filter(secret_ref="race", active=True).count() == 1
    active = Secret.objects.get(secret_ref="race", active=True)
    assert active.version == 8
