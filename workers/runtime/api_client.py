"""HTTP client for the worker REST API (SPEC §7), used by ``run_worker``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

TIMEOUT = (5, 30)
CHUNK = 1024 * 1024
# Published bundles are at most 200 KB each (agents.skills); a manifest past this is refused.
MAX_MANIFEST_BYTES = 64 * CHUNK


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class LeaseLostError(ApiError):
    pass


class DownloadTooLarge(ApiError):
    """The server's answer is larger than the caller's cap; nothing of it was kept."""

    def __init__(self, limit: int):
        super().__init__(0, "too_large", f"larger than the {limit}-byte limit")
        self.limit = limit


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
        body = kwargs.get("data")
        for attempt in range(1, self._retries + 1):
            if hasattr(body, "seek"):
                body.seek(0)  # a retried upload sends the whole file again
            try:
                response = self._session.request(method, url, **{"timeout": TIMEOUT, **kwargs})
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

    def claim(self, conversation_id: str | None = None, wait_seconds: float = 0) -> dict | None:
        """The next job, or None; with ``wait_seconds`` the server holds the request until
        one is ready (long poll, SPEC §7), so the read timeout is stretched to match."""
        body: dict = {"conversation_id": conversation_id} if conversation_id else {}
        kwargs = {}
        if wait_seconds:
            body["wait_seconds"] = wait_seconds
            kwargs["timeout"] = (TIMEOUT[0], TIMEOUT[1] + wait_seconds)
        return self.json("POST", "claim/", json=body, **kwargs)["job"]

    def hydration(self, job: dict) -> dict:
        return self.json(
            "GET", f"jobs/{job['message_id']}/hydration/", params={"lease_id": job["lease_id"]}
        )

    def heartbeat(self, job: dict) -> dict:
        return self.json(
            "POST", f"jobs/{job['message_id']}/heartbeat/", json={"lease_id": job["lease_id"]}
        )

    def complete(
        self,
        job: dict,
        usage: dict | None = None,
        *,
        reply: dict | None = None,
        history: list[dict] | None = None,
    ) -> dict:
        """Finish the job; with ``reply`` the server delivers it (SPEC §22), with ``history``
        the entries are stored in the same transaction."""
        body: dict = {"lease_id": job["lease_id"]}
        if usage:
            body["usage"] = usage
        if reply is not None:
            body["reply"] = reply
        if history:
            body["history"] = history
        return self.json("POST", f"jobs/{job['message_id']}/complete/", json=body)

    def upload_reply_file(self, job: dict, path: Path, kind: str, file_name: str = "") -> int:
        """Upload one file of the job's reply (SPEC §7 ``jobs/<id>/uploads/``, streamed from
        disk) under the job's lease; returns the id to name in ``complete``'s reply media."""
        with open(path, "rb") as body:
            answer = self.json(
                "POST",
                f"jobs/{job['message_id']}/uploads/",
                params={
                    "lease_id": job["lease_id"],
                    "kind": kind,
                    "filename": file_name or Path(path).name,
                },
                data=body,
                headers={"Content-Type": "application/octet-stream"},
            )
        return answer["upload_id"]

    def fail(self, job: dict, error: str, usage: dict | None = None) -> dict:
        body = {"lease_id": job["lease_id"], "error": error[:10_000]}
        if usage:
            body["usage"] = usage
        return self.json("POST", f"jobs/{job['message_id']}/fail/", json=body)

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

    def latest_snapshot(
        self, workspace_id: str, agent_key: str, conversation_id: str, before: int | None = None
    ):
        """The newest ready snapshot of the triple; with ``before``, the newest one older
        than that snapshot (the fallback past a refused archive)."""
        params = {
            "workspace_id": workspace_id,
            "agent_key": agent_key,
            "conversation_id": conversation_id,
        }
        if before is not None:
            params["before"] = before
        return self.json("GET", "snapshots/latest/", params=params)["snapshot"]

    def reject_snapshot(self, snapshot_id: int, error: str) -> dict:
        """Tell the server a ready snapshot's archive was refused at restore: it becomes
        ``failed`` with the reason and is never offered again."""
        return self.json("POST", f"snapshots/{snapshot_id}/reject/", json={"error": error[:5000]})

    def download_to(self, url: str, destination: Path, max_bytes: int) -> int:
        """Stream ``url`` into ``destination`` (never whole into memory); returns the size.
        Past ``max_bytes`` the transfer stops and DownloadTooLarge is raised; on any error
        the partial file is removed."""
        response = self.request("GET", url, stream=True)
        size = 0
        try:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadTooLarge(max_bytes)
            with open(destination, "wb") as handle:
                for chunk in _capped(response, max_bytes):
                    size += len(chunk)
                    handle.write(chunk)
        except requests.RequestException as exc:
            destination.unlink(missing_ok=True)
            raise ApiError(0, "network_error", type(exc).__name__) from None
        except BaseException:
            destination.unlink(missing_ok=True)
            raise
        finally:
            response.close()
        return size

    def download(self, url: str, max_bytes: int, **kwargs) -> bytes:
        """A small download (at most ``max_bytes``) into memory, streamed with the cap."""
        response = self.request("GET", url, stream=True, **kwargs)
        try:
            chunks = list(_capped(response, max_bytes))
        except requests.RequestException as exc:
            raise ApiError(0, "network_error", type(exc).__name__) from None
        finally:
            response.close()
        return b"".join(chunks)

    def upload_snapshot(
        self,
        *,
        workspace_id: str,
        agent_key: str,
        conversation_id: str,
        reason: str,
        archive: Path,
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
            with open(archive, "rb") as body:  # streamed from disk, not read into memory
                self.request(
                    "PUT",
                    prepared["upload_url"],
                    data=body,
                    headers={"Content-Type": "application/gzip"},
                )
            self.json(
                "POST",
                f"snapshots/{snapshot_id}/finalize/",
                json={"sha256": sha256, "size_bytes": Path(archive).stat().st_size},
            )
        except ApiError as exc:
            try:
                self.json("POST", f"snapshots/{snapshot_id}/fail/", json={"error": str(exc)})
            except ApiError:
                pass
            raise
        return snapshot_id

    def skills_manifest(
        self, channel: str, workspace_id: str, max_bytes: int = MAX_MANIFEST_BYTES
    ) -> dict:
        """The skills manifest, refused (DownloadTooLarge) past ``max_bytes``."""
        params = {"channel": channel, "workspace_id": workspace_id}
        return json.loads(self.download("skills/manifest/", max_bytes, params=params))


def _capped(response, max_bytes: int):
    """The body's chunks, streamed; DownloadTooLarge once more than ``max_bytes`` arrived."""
    size = 0
    for chunk in response.iter_content(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise DownloadTooLarge(max_bytes)
        yield chunk
