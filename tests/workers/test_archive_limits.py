"""Archive limits without a server (SPEC §23): capped streamed downloads, the restore's
second line and its clean-up, snapshots past the limits, and skills manifests."""

from __future__ import annotations

import io
import logging
import os
import tarfile

import pytest
import responses

from agents.skill_bundle import MARKER, bundle_sha256, file_sha256
from workers.runtime import archive as archive_module
from workers.runtime.api_client import DownloadTooLarge, WorkerApiClient
from workers.runtime.archive import ArchiveLimits, ArchiveRefused, make_archive, restore_archive
from workers.runtime.runner import WorkerRuntime, WorkerSettings
from workers.runtime.skills import SkillVerificationError, apply_manifest

URL = "http://api.test/api/v1/worker/snapshots/3/download/"
MiB = 1024 * 1024


@responses.activate
def test_a_download_streams_to_disk_and_stops_past_its_cap(tmp_path):
    body = b"z" * (3 * MiB)
    responses.get(URL, body=body)
    client = WorkerApiClient("http://api.test", "tok")
    target = tmp_path / "archive.tar.gz"
    assert client.download_to(URL, target, max_bytes=3 * MiB) == len(body)
    assert target.read_bytes() == body
    with pytest.raises(DownloadTooLarge, match=f"larger than the {MiB}-byte limit"):
        client.download_to(URL, target, max_bytes=MiB)
    assert not target.exists()  # nothing half-written is left


@responses.activate
def test_a_declared_length_past_the_cap_is_refused_before_reading(tmp_path):
    responses.get(URL, body=b"z" * 100, headers={"Content-Length": str(10 * MiB)})
    target = tmp_path / "archive.tar.gz"
    with pytest.raises(DownloadTooLarge):
        WorkerApiClient("http://api.test", "tok").download_to(URL, target, max_bytes=MiB)
    assert not target.exists()


@responses.activate
def test_the_skills_manifest_is_refused_past_its_cap():
    manifest = "http://api.test/api/v1/worker/skills/manifest/?channel=stable&workspace_id=default"
    responses.get(manifest, json={"skills": [], "padding": "x" * 5000})
    client = WorkerApiClient("http://api.test", "tok")
    with pytest.raises(DownloadTooLarge):
        client.skills_manifest("stable", "default", max_bytes=1000)
    assert client.skills_manifest("stable", "default")["skills"] == []


def tar_with(path, *entries):
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, linkname, data in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, linkname
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_refusal_while_extracting_leaves_the_data_dir_as_it_was(tmp_path, monkeypatch):
    """Should the first pass miss something, the data filter stops the extraction half-way:
    the staging directory goes, and the data dir keeps what it had."""
    data_dir = tmp_path / "data"
    (data_dir / "workspace").mkdir(parents=True)
    (data_dir / "workspace" / "notes.txt").write_text("before")
    archive = tar_with(
        tmp_path / "a.tar.gz",
        ("workspace/notes.txt", tarfile.REGTYPE, "", b"after"),
        ("workspace/new.txt", tarfile.REGTYPE, "", b"new"),
        ("python", tarfile.SYMTYPE, "/usr/bin/python3", None),
    )
    monkeypatch.setattr(archive_module, "check_archive", lambda *args: None)
    with pytest.raises(ArchiveRefused, match="refused while extracting"):
        restore_archive(archive, sha(archive), data_dir)
    assert (data_dir / "workspace" / "notes.txt").read_text() == "before"
    assert sorted(os.listdir(data_dir / "workspace")) == ["notes.txt"]
    assert os.listdir(data_dir / ".af-tmp") == []


def test_restore_keeps_the_data_dirs_own_skill_links(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "skills" / "greeter").mkdir(parents=True)
    (data_dir / "openclaw").mkdir()
    (data_dir / "openclaw" / "skills").symlink_to("../skills")
    archive = tar_with(
        tmp_path / "a.tar.gz",
        ("openclaw/state.json", tarfile.REGTYPE, "", b"{}"),
        ("openclaw/skills", tarfile.SYMTYPE, "../workspace", None),
    )
    restore_archive(archive, sha(archive), data_dir)
    assert (data_dir / "openclaw" / "state.json").read_text() == "{}"
    assert os.readlink(data_dir / "openclaw" / "skills") == "../skills"
    assert (data_dir / "openclaw" / "skills" / "greeter").is_dir()


def test_a_workspace_past_the_limits_is_not_uploaded(tmp_path, caplog):
    data_dir = tmp_path / "data"
    (data_dir / "workspace").mkdir(parents=True)
    for index in range(3):
        (data_dir / "workspace" / f"{index}.txt").write_text("x" * 100)
    with pytest.raises(ArchiveRefused, match="more than 250 bytes uncompressed"):
        make_archive(data_dir, tmp_path / "a.tar.gz", ArchiveLimits(max_bytes=250))
    with pytest.raises(ArchiveRefused, match="more than 3 members"):
        make_archive(data_dir, tmp_path / "a.tar.gz", ArchiveLimits(max_members=3))

    class Client:
        def upload_snapshot(self, **kwargs):
            pytest.fail("an archive past the limits must not be uploaded")

    settings = WorkerSettings(
        api_url="http://x",
        token="t",
        worker_id="w",
        data_dir=data_dir,
        archive_limits=ArchiveLimits(max_members=3),
    )
    runtime = WorkerRuntime(settings, Client(), handler=None)
    runtime.conversation_id, runtime.agent_key, runtime.jobs_done = "c", "alpha", 1
    with caplog.at_level(logging.ERROR, logger="agent_factory.worker"):
        assert runtime.snapshot("drain") is None
    assert "Snapshot not taken: the workspace has more than 3 members." in caplog.text
    assert os.listdir(data_dir / ".af-tmp") == []


def test_an_oversized_download_refuses_the_snapshot_and_falls_back(tmp_path):
    class Client:
        def __init__(self):
            self.calls = []

        def latest_snapshot(self, workspace_id, agent_key, conversation_id, before=None):
            self.calls.append(("latest", before))
            if before is None:
                return {"snapshot_id": 9, "sha256": "0" * 64, "download_url": "u"}
            return None

        def download_to(self, url, destination, max_bytes):
            destination.write_bytes(b"partial")  # the real client removes it; so must we
            raise DownloadTooLarge(max_bytes)

        def reject_snapshot(self, snapshot_id, error):
            self.calls.append(("reject", snapshot_id, error))

    client = Client()
    settings = WorkerSettings(
        api_url="http://x",
        token="t",
        worker_id="w",
        data_dir=tmp_path / "data",
        archive_limits=ArchiveLimits(max_download_bytes=5000),
    )
    runtime = WorkerRuntime(settings, client, handler=None)
    assert runtime.restore_snapshot("c", "alpha") is False
    assert client.calls == [
        ("latest", None),
        ("reject", 9, "refused at restore: the archive is larger than the 5000-byte limit"),
        ("latest", 9),
    ]
    assert os.listdir(tmp_path / "data" / ".af-tmp") == []


def skill(slug, files):
    return {
        "slug": slug,
        "skill_dir_name": slug,
        "files": files,
        "bundle_sha256": bundle_sha256(files),
    }


def f(path, content):
    return {"path": path, "content": content, "sha256": file_sha256(content)}


def test_a_manifest_past_the_limits_changes_nothing(tmp_path):
    skills_dir = tmp_path / "skills"
    manifest = {
        "skills": [
            skill("one", [f("SKILL.md", "# One\n"), f("scripts/index.mjs", "x")]),
            skill("two", [f("SKILL.md", "# Two\n")]),
        ]
    }
    with pytest.raises(SkillVerificationError, match="more than 2 files"):
        apply_manifest(skills_dir, manifest, ArchiveLimits(max_members=2))
    with pytest.raises(SkillVerificationError, match="more than 10 bytes"):
        apply_manifest(skills_dir, manifest, ArchiveLimits(max_bytes=10))
    assert not skills_dir.exists()
    assert apply_manifest(skills_dir, manifest)["installed"] == ["one", "two"]


@pytest.mark.parametrize("bad_path", ["a//b.md", "./SKILL2.md", "a/./b.md", "a/", MARKER, ""])
def test_skill_paths_must_be_plain_and_normalised(tmp_path, bad_path):
    files = [f("SKILL.md", "# Demo\n"), f(bad_path, "x")]
    result = apply_manifest(tmp_path / "skills", {"skills": [skill("demo", files)]})
    assert result["installed"] == [] and "unsafe path" in result["rejected"][0]
    assert not (tmp_path / "skills" / "demo").exists()
