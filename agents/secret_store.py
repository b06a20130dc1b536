"""The encrypted secret store (SPEC §4).

Values are encrypted with AES-256-GCM under the first key of ``AGENT_FACTORY_ENCRYPTION_KEYS``
with a fresh 96-bit nonce per write. The associated data binds a ciphertext to its row
(``secret_ref`` and ``version``), so a ciphertext copied onto another row fails to decrypt
instead of yielding the wrong secret. Plaintext only leaves through ``get_secret_value`` and
``get_active_secret_value``, which the Telegram/Fly clients and the hydration bundle use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.models import Secret, secret_ref_validator

logger = logging.getLogger(__name__)

NONCE_BYTES = 12
MAX_SECRET_BYTES = 64 * 1024
IMPORT_RETRIES = 20


class SecretStoreError(Exception):
    """A secret could not be read or written. The message never contains a value."""


class SecretNotFound(SecretStoreError):
    pass


class SecretUnavailable(SecretStoreError):
    """A stored secret the key ring cannot decrypt (its key left
    ``AGENT_FACTORY_ENCRYPTION_KEYS``, an unknown algorithm, an altered ciphertext).

    The one error every reader maps to a clean answer (SPEC §23): a command prints one line,
    the webhook answers 503, the APIs 503 ``secret_unavailable``. The message names the ref,
    version and key id, never a value.
    """


def key_id_for(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def parse_keys(raw: str) -> list[bytes]:
    """Parse the comma-separated base64 key list; every entry must decode to 32 bytes."""
    keys = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        try:
            key = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(
                f"AGENT_FACTORY_ENCRYPTION_KEYS entry {position} is not valid base64."
            )
        if len(key) != 32:
            raise ImproperlyConfigured(
                f"AGENT_FACTORY_ENCRYPTION_KEYS entry {position} decodes to {len(key)} bytes; "
                "AES-256 needs exactly 32."
            )
        keys.append(key)
    return keys


def _dev_key() -> bytes:
    """A key generated once into var/ for the embedded default (DEBUG on, no key set)."""
    path = settings.AGENT_FACTORY_DEV_KEY_FILE
    if path.exists():
        return parse_keys(path.read_text())[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    logger.warning(
        "No AGENT_FACTORY_ENCRYPTION_KEYS set: generated a development key in %s. "
        "Set AGENT_FACTORY_ENCRYPTION_KEYS before running with DEBUG off.",
        path,
    )
    return key


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[bytes, ...]

    @property
    def primary(self) -> bytes:
        return self.keys[0]

    @property
    def primary_id(self) -> str:
        return key_id_for(self.primary)

    def key_by_id(self, key_id: str) -> bytes | None:
        for key in self.keys:
            if key_id_for(key) == key_id:
                return key
        return None


@lru_cache(maxsize=4)
def _key_ring_for(raw: str, debug: bool) -> KeyRing:
    keys = parse_keys(raw)
    if not keys:
        if not debug:
            raise ImproperlyConfigured(
                "AGENT_FACTORY_ENCRYPTION_KEYS is not set. With DEBUG off, set it to one or "
                "more comma-separated base64-encoded 32-byte keys."
            )
        keys = [_dev_key()]
    return KeyRing(tuple(keys))


def get_key_ring() -> KeyRing:
    return _key_ring_for(settings.AGENT_FACTORY_ENCRYPTION_KEYS, settings.DEBUG)


def _associated_data(secret_ref: str, version: int) -> bytes:
    return f"agent-factory:secret:{secret_ref}:v{version}".encode()


def encrypt_value(secret_ref: str, version: int, plaintext: str) -> tuple[bytes, bytes, str]:
    ring = get_key_ring()
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(ring.primary).encrypt(
        nonce, plaintext.encode(), _associated_data(secret_ref, version)
    )
    return ciphertext, nonce, ring.primary_id


def decrypt_secret(secret: Secret) -> str:
    key = get_key_ring().key_by_id(secret.key_id)
    if key is None:
        raise SecretUnavailable(
            f"Secret '{secret.secret_ref}' v{secret.version} is encrypted with key "
            f"'{secret.key_id}', which is not in AGENT_FACTORY_ENCRYPTION_KEYS: put that key "
            "back in the list or import the secret again."
        )
    if secret.algorithm != Secret.ALGORITHM:
        raise SecretUnavailable(
            f"Secret '{secret.secret_ref}' v{secret.version} uses unsupported algorithm "
            f"'{secret.algorithm}'."
        )
    try:
        plaintext = AESGCM(key).decrypt(
            bytes(secret.nonce),
            bytes(secret.ciphertext),
            _associated_data(secret.secret_ref, secret.version),
        )
    except (InvalidTag, ValueError):
        raise SecretUnavailable(
            f"Secret '{secret.secret_ref}' v{secret.version} failed authentication: the "
            "ciphertext was altered or belongs to another secret."
        )
    return plaintext.decode()


def validate_secret_input(secret_ref: str, value: str) -> None:
    try:
        secret_ref_validator(secret_ref)
    except ValidationError as exc:
        raise SecretStoreError(exc.messages[0])
    if not isinstance(value, str) or not value.strip():
        raise SecretStoreError(f"Refusing to store an empty value for secret '{secret_ref}'.")
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise SecretStoreError(
            f"Secret '{secret_ref}' is larger than {MAX_SECRET_BYTES // 1024} KiB."
        )


def import_secret(
    secret_ref: str, value: str, *, actor: str, metadata: dict | None = None
) -> Secret:
    """Store ``value`` as version n+1 of ``secret_ref`` and make it the only active version.

    Concurrent imports of one ref race for the same version number; the unique constraints
    make the loser fail, and it retries with the next number, so exactly one version stays
    active and no import is lost.
    """
    validate_secret_input(secret_ref, value)
    for _attempt in range(IMPORT_RETRIES):
        try:
            return _import_secret_once(secret_ref, value, actor=actor, metadata=metadata or {})
        except IntegrityError:
            continue
    raise SecretStoreError(
        f"Secret '{secret_ref}' is being written concurrently; try the import again."
    )


def _import_secret_once(secret_ref: str, value: str, *, actor: str, metadata: dict) -> Secret:
    with transaction.atomic():
        latest = (
            Secret.objects.select_for_update()
            .filter(secret_ref=secret_ref)
            .order_by("-version")
            .first()
        )
        version = latest.version + 1 if latest else 1
        previous = Secret.objects.filter(secret_ref=secret_ref, active=True).first()
        Secret.objects.filter(secret_ref=secret_ref, active=True).update(
            active=False, updated_at=timezone.now()
        )
        ciphertext, nonce, key_id = encrypt_value(secret_ref, version, value)
        secret = Secret.objects.create(
            secret_ref=secret_ref,
            version=version,
            ciphertext=ciphertext,
            nonce=nonce,
            key_id=key_id,
            active=True,
            rotated_from=previous,
            metadata=metadata,
        )
        record_audit(actor, "secret.import", secret, secret_ref=secret_ref, version=version)
        return secret


def get_active_secret(secret_ref: str) -> Secret | None:
    return Secret.objects.filter(secret_ref=secret_ref, active=True).first()


def get_active_secret_value(secret_ref: str) -> str | None:
    """The active plaintext of ``secret_ref``, or None when the ref has no active version."""
    secret = get_active_secret(secret_ref)
    return decrypt_secret(secret) if secret else None


def get_secret_value(secret_ref: str) -> str:
    value = get_active_secret_value(secret_ref)
    if value is None:
        raise SecretNotFound(f"Secret '{secret_ref}' has no active version.")
    return value


def has_active_secret(secret_ref: str) -> bool:
    return Secret.objects.filter(secret_ref=secret_ref, active=True).exists()


def _status_row(secret_ref: str) -> dict:
    return {
        "secret_ref": secret_ref,
        "active_version": None,
        "versions": 0,
        "key_id": None,
        "updated_at": None,
    }


def secret_status(refs: list[str] | None = None) -> list[dict]:
    """Ref, active version, version count and times for each ref — never a value. Refs
    asked for but not stored are listed too, with no versions."""
    queryset = Secret.objects.order_by("secret_ref", "version").only(
        "secret_ref", "version", "active", "key_id", "updated_at", "created_at"
    )
    if refs is not None:
        queryset = queryset.filter(secret_ref__in=refs)
    rows = {ref: _status_row(ref) for ref in refs or ()}
    for secret in queryset:
        row = rows.setdefault(secret.secret_ref, _status_row(secret.secret_ref))
        row["versions"] += 1
        if secret.active:
            row["active_version"] = secret.version
            row["key_id"] = secret.key_id
            row["updated_at"] = secret.updated_at.isoformat()
    return [rows[ref] for ref in sorted(rows)]


def rotate_encryption_key(*, actor: str, batch_size: int = 200) -> dict:
    """Re-encrypt every version under the first key. Idempotent: rows already under it are
    left alone. Each row is decrypted with whichever configured key wrote it, so the old keys
    keep working until an operator removes them from the list."""
    ring = get_key_ring()
    rotated = 0
    failed: list[str] = []
    pending_ids = list(Secret.objects.exclude(key_id=ring.primary_id).values_list("pk", flat=True))
    already_current = Secret.objects.filter(key_id=ring.primary_id).count()
    for start in range(0, len(pending_ids), batch_size):
        with transaction.atomic():
            for secret in Secret.objects.select_for_update().filter(
                pk__in=pending_ids[start : start + batch_size]
            ):
                try:
                    plaintext = decrypt_secret(secret)
                except SecretUnavailable as exc:
                    failed.append(f"{secret.secret_ref} v{secret.version}: {exc}")
                    continue
                secret.ciphertext, secret.nonce, secret.key_id = encrypt_value(
                    secret.secret_ref, secret.version, plaintext
                )
                secret.save(update_fields=["ciphertext", "nonce", "key_id", "updated_at"])
                rotated += 1
    report = {
        "primary_key_id": ring.primary_id,
        "rotated": rotated,
        "already_current": already_current,
        "failed": len(failed),
        "errors": failed,
    }
    with transaction.atomic():
        record_audit(
            actor,
            "secret.rotate_encryption_key",
            None,
            rotated=rotated,
            already_current=already_current,
            failed=len(failed),
        )
    return report
