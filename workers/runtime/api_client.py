"""HTTP client for the worker REST API (SPEC §7), used by ``run_worker``."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import requests

TIMEOUT = (5, 30)


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class LeaseLostError(ApiError):
    pass


class WorkerApiClient:
    def __init__(self, base_url: str, token: str, *, session=None, retries: int = 3):
        self.base_url = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._retries = retries

    def _url(self, path: str) -> str:
        if path.startswith("http"):
            return path
        return f"{self.base_url}/api/v1/worker/{path.lstrip('/')}"

    def _same_origin(self, url: str) -> bool:
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)

    def request(self, method: str, path: str, *, expect=(200, 201), **kwargs) -> requests.Response:
        """One call with bounded retries on network errors and 5xx (never on 4xx)."""
        url = self._url(path)
        if not self._same_origin(url):
            # Upload/download URLs come from the server; should one ever point elsewhere
            # (object storage), the worker token must not travel with it.
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": None}
        for attempt in range(1, self._retries + 1):
            try:
                response = self._session.request(method, url, timeout=TIMEOUT, **kwargs)
            except requests.RequestException as exc:
                if attempt == self._retries:
                    raise ApiError(0, "network_error", type(exc).__name__) from None
                time.sleep(0.5 * attempt)
                continue
            if response.status_code >= 500 and attempt < self._retries:
                time.sleep(0.5 * attempt)
                continue
            if response.status_code in expect:
                return response
            try:
                body = response.json()
            except ValueError:
                body = {}
            code = body.get("error", "error") if isinstance(body, dict) else "error"
            detail = body.get("detail", "") if isinstance(body, dict) else ""
            error_class = LeaseLostError if code == "lease_lost" else ApiError
            raise error_class(response.status_code, code, detail)
        raise ApiError(0, "network_error", "retries exhausted")  # pragma: no cover

    def json(self, method: str, path: str, **kwargs) -> dict:
        return self.request(method, path, **kwargs).json()

    # Endpoints ---------------------------------------------------------------------------
    def control(self) -> dict:
        return self.json("POST", "control/", json={})

    def claim(self, conversation_id: str | None = None) -> dict | None:
        body = {"conversation_id": conversation_id} if conversation_id else {}
        return self.json("POST", "claim/", json=body)["job"]

    def hydration(self, job: dict) -> dict:
        return self.json(
            "GET", f"jobs/{job['message_id']}/hydration/", params={"lease_id": job["lease_id"]}
        )

    def heartbeat(self, job: dict) -> dict:
        return self.json(
            "POST", f"jobs/{job['message_id']}/heartbeat/", json={"lease_id": job["lease_id"]}
        )

    def complete(self, job: dict) -> dict:
        return self.json(
            "POST", f"jobs/{job['message_id']}/complete/", json={"lease_id": job["lease_id"]}
        )

    def fail(self, job: dict, error: str) -> dict:
        return self.json(
            "POST",
            f"jobs/{job['message_id']}/fail/",
            json={"lease_id": job["lease_id"], "error": error[:10_000]},
        )

    def delivered(self, job: dict) -> dict:
        return self.json(
            "POST", f"jobs/{job['message_id']}/delivered/", json={"lease_id": job["lease_id"]}
        )

    def append_messages(self, job: dict, messages: list[dict]) -> dict:
        return self.json(
            "POST",
            f"conversations/{job['conversation_id']}/messages/",
            json={
                "lease_id": job["lease_id"],
                "message_id": job["message_id"],
                "messages": messages,
            },
        )

    def latest_snapshot(self, workspace_id: str, agent_key: str, conversation_id: str):
        params = {
            "workspace_id": workspace_id,
            "agent_key": agent_key,
            "conversation_id": conversation_id,
        }
        return self.json("GET", "snapshots/latest/", params=params)["snapshot"]

    def download(self, url: str) -> bytes:
        return self.request("GET", url).content

    def upload_snapshot(
        self,
        *,
        workspace_id: str,
        agent_key: str,
        conversation_id: str,
        reason: str,
        archive: bytes,
        sha256: str,
    ) -> int:
        prepared = self.json(
            "POST",
            "snapshots/",
            json={
                "workspace_id": workspace_id,
                "agent_key": agent_key,
                "conversation_id": conversation_id,
                "reason": reason,
            },
        )
        snapshot_id = prepared["snapshot_id"]
        try:
            self.request(
                "PUT",
                prepared["upload_url"],
                data=archive,
                headers={"Content-Type": "application/gzip"},
            )
            self.json(
                "POST",
                f"snapshots/{snapshot_id}/finalize/",
                json={"sha256": sha256, "size_bytes": len(archive)},
            )
        except ApiError as exc:
            try:
                self.json("POST", f"snapshots/{snapshot_id}/fail/", json={"error": str(exc)})
            except ApiError:
                pass
            raise
        return snapshot_id

    def skills_manifest(self, channel: str, workspace_id: str) -> dict:
        return self.json(
            "GET", "skills/manifest/", params={"channel": channel, "workspace_id": workspace_id}
        )
