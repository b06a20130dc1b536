"""Fly Machines API client (SPEC §11).

One request function: Bearer token, explicit timeouts, 429/5xx and network errors retried
with backoff (bounded), errors that carry the status and the response body (never the
token). Capacity errors are recognised so a spawn can move on to the next region.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import requests
from django.conf import settings

from agents.external_errors import ExternalApiError, record_api_error
from agents.secret_refs import FLY_API_TOKEN
from agents.secret_store import SecretUnavailable, get_active_secret_value

logger = logging.getLogger(__name__)

TIMEOUT = (5, 30)
MAX_ATTEMPTS = 4
CAPACITY_MARKERS = (
    "no capacity",
    "insufficient resources",
    "insufficient memory",
    "over the allowed quota",
)
NOT_FOUND_MARKERS = ("not found", "unknown machine", "does not exist")


class FlyApiError(Exception):
    def __init__(self, method: str, path: str, status: int | None, body: str):
        self.method, self.path, self.status, self.body = method, path, status, body
        super().__init__(f"Fly API {method} {path} failed ({status}): {body[:500]}")

    @property
    def not_found(self) -> bool:
        text = self.body.lower()
        return self.status == 404 or any(marker in text for marker in NOT_FOUND_MARKERS)

    @property
    def capacity(self) -> bool:
        text = self.body.lower()
        return self.status in (400, 403, 409, 412) and any(m in text for m in CAPACITY_MARKERS)


class FlyConfigurationError(Exception):
    pass


def _record(exc: FlyApiError) -> None:
    """Keep the error for the admin's dashboard (agents.external_errors): before, a Fly API
    error was visible only as a failed spawn. The path's ids are generalised so a burst of
    one kind of call stays one row; the app is the subject."""
    parts = exc.path.split("/")
    app = ""
    for i, part in enumerate(parts[1:], start=1):
        if parts[i - 1] == "apps":
            app, parts[i] = part, "{app}"
        elif parts[i - 1] in ("machines", "volumes") and part:
            parts[i] = "{id}"
    record_api_error(
        ExternalApiError.FLY,
        f"{exc.method} {'/'.join(parts)}",
        f"({exc.status if exc.status is not None else 'network'}) {exc.body}",
        subject=app,
        status_code=exc.status,
    )


def fly_token() -> str:
    try:
        token = (settings.FLY_API_TOKEN or "").strip() or (
            get_active_secret_value(FLY_API_TOKEN) or ""
        )
    except SecretUnavailable as exc:  # a configuration problem like a missing token
        raise FlyConfigurationError(str(exc))
    if not token.strip():
        raise FlyConfigurationError(
            f"Missing Fly API token: set FLY_API_TOKEN or import the '{FLY_API_TOKEN}' secret."
        )
    return token.strip()


def seg(value: str) -> str:
    return quote(str(value), safe="-_.!~*'()")


class FlyClient:
    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        session=None,
        sleep=time.sleep,
    ):
        self._token = token or fly_token()
        self._base_url = (base_url or settings.FLY_API_BASE_URL).rstrip("/")
        self._session = session or requests.Session()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<FlyClient base_url={self._base_url!r}>"

    def _redact(self, text: str | None) -> str:
        # Error bodies are stored on worker rows, audited and shown: a proxy or API that
        # echoes the Authorization header must not leak the token through them.
        return (text or "").replace(self._token, "[redacted]")

    def request(self, method: str, path: str, body: dict | None = None, params=None):
        try:
            return self._request(method, path, body, params)
        except FlyApiError as exc:
            if not exc.not_found:  # "already gone" is an answer the callers expect
                _record(exc)
            raise

    def _request(self, method: str, path: str, body: dict | None, params):
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = self._session.request(
                    method,
                    self._base_url + path,
                    json=body,
                    params=params,
                    headers=headers,
                    timeout=TIMEOUT,
                )
            except requests.RequestException as exc:
                if attempt == MAX_ATTEMPTS:
                    raise FlyApiError(method, path, None, f"network error ({type(exc).__name__})")
                self._sleep(min(2 ** (attempt - 1), 8))
                continue
            retryable = response.status_code == 429 or response.status_code >= 500
            if retryable and attempt < MAX_ATTEMPTS:
                retry_after = response.headers.get("Retry-After", "")
                delay = float(retry_after) if retry_after.isdigit() else min(2 ** (attempt - 1), 8)
                self._sleep(min(delay, 30))
                continue
            if response.status_code >= 400:
                raise FlyApiError(
                    method,
                    path,
                    response.status_code,
                    self._redact(response.text or response.reason),
                )
            if method == "DELETE" or response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise FlyApiError(method, path, response.status_code, "response is not JSON")
        raise FlyApiError(method, path, None, "gave up after retries")  # pragma: no cover

    # Apps, machines, volumes ------------------------------------------------------------
    def get_app(self, app: str):
        return self.request("GET", f"/apps/{seg(app)}")

    def list_machines(self, app: str) -> list[dict]:
        return self.request("GET", f"/apps/{seg(app)}/machines") or []

    def get_machine(self, app: str, machine_id: str) -> dict:
        return self.request("GET", f"/apps/{seg(app)}/machines/{seg(machine_id)}") or {}

    def create_machine(self, app: str, body: dict) -> dict:
        return self.request("POST", f"/apps/{seg(app)}/machines", body) or {}

    def cordon_machine(self, app: str, machine_id: str) -> None:
        self.request("POST", f"/apps/{seg(app)}/machines/{seg(machine_id)}/cordon")

    def stop_machine(self, app: str, machine_id: str) -> None:
        self.request("POST", f"/apps/{seg(app)}/machines/{seg(machine_id)}/stop")

    def destroy_machine(self, app: str, machine_id: str, *, force: bool = False) -> None:
        params = {"force": "true"} if force else None
        self.request("DELETE", f"/apps/{seg(app)}/machines/{seg(machine_id)}", params=params)

    def list_volumes(self, app: str) -> list[dict]:
        return self.request("GET", f"/apps/{seg(app)}/volumes") or []

    def create_volume(self, app: str, *, name: str, region: str, size_gb: int) -> dict:
        return (
            self.request(
                "POST",
                f"/apps/{seg(app)}/volumes",
                {"name": name, "region": region, "size_gb": size_gb},
            )
            or {}
        )

    def delete_volume(self, app: str, volume_id: str) -> None:
        self.request("DELETE", f"/apps/{seg(app)}/volumes/{seg(volume_id)}")
