"""Hostile snapshot archives against the real worker loop and a live server (SPEC §23).

Every archive is built here, streaming, never stored in the repository. In every case the
worker keeps serving: the refused snapshot is marked ``failed`` with the reason on the server,
and the worker restores the next older ready snapshot instead.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest
from django.core.files.base import File
from django.utils import timezone

from agents.models import Conversation
from workers.models import DataSnapshot, Message, Worker
from workers.queue import enqueue_message
from workers.runtime.api_client import WorkerApiClient
from workers.runtime.archive import make_archive
from workers.runtime.handlers import echo
from workers.runtime.runner import WorkerRuntime, WorkerSettings

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONVERSATION = "conv-archives"
TRIPLE = {"workspace_id": "default", "agent_key": "alpha", "conversation_id": CONVERSATION}
MiB = 1024 * 1024


# Building archives ---------------------------------------------------------------------------
def member(name: str, kind=tarfile.REGTYPE, linkname: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def tar_gz(path: Path, *entries) -> Path:
    """A tar.gz of ``(TarInfo, bytes | None)`` entries."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def workspace_file(text: str):
    return (member("workspace/notes.txt"), text.encode())


def bomb(path: Path) -> Path:
    """Two members of 600 MiB of zeros each: 1.2 GiB uncompressed, each under the limit
    alone, so only the running total (from the headers) catches it. Written as concatenated
    gzip members (valid gzip) around one compressed MiB: ~1.3 MB on disk, built instantly."""
    zeros = gzip.compress(bytes(MiB), compresslevel=9)
    with open(path, "wb") as out:
        out.write(gzip.compress(workspace_file_header()))
        for index in range(2):
            header = member(f"workspace/zeros-{index}.bin", size=600 * MiB)
            out.write(gzip.compress(header.tobuf(tarfile.GNU_FORMAT)))
            for _ in range(600):
                out.write(zeros)
        out.write(gzip.compress(bytes(1024)))  # the end-of-archive blocks
    return path


def workspace_file_header() -> bytes:
    info, data = workspace_file("from the bomb")
    info.size = len(data)
    return info.tobuf(tarfile.GNU_FORMAT) + data + bytes(512 - len(data))


def many_members(path: Path, count: int = 200_000) -> Path:
    """``count`` empty files. Headers are patched from one template (name digits and the
    checksum), since TarInfo.tobuf would take seconds per 100k."""
    template = bytearray(member("m/000000").tobuf(tarfile.GNU_FORMAT))
    template[148:156] = b" " * 8
    base = sum(template)
    with gzip.open(path, "wb", compresslevel=1) as out:
        blocks = []
        for index in range(count):
            digits = b"%06d" % index
            header = template[:]
            header[2:8] = digits
            header[148:156] = b"%06o\0 " % (base + sum(digits) - 6 * ord("0"))
            blocks.append(header)
            if len(blocks) == 10_000:  # a few MB at a time
                out.write(b"".join(blocks))
                blocks.clear()
        out.write(b"".join(blocks) + bytes(1024))
    return path


BAD_ARCHIVES = {
    # name: (builder, words of the reason the server records)
    "link-outside": (
        lambda p: tar_gz(
            p,
            workspace_file("bad"),
            (member("workspace/escape", tarfile.SYMTYPE, "../../outside.txt"), None),
        ),
        "symlink 'workspace/escape' leaves the data dir",
    ),
    "absolute-link": (
        lambda p: tar_gz(
            p,
            workspace_file("bad"),
            (member("venv/bin/python", tarfile.SYMTYPE, "/usr/bin/python3"), None),
        ),
        "link 'venv/bin/python' is absolute (/usr/bin/python3)",
    ),
    "chained-links": (  # each link alone looks inside; followed, p leaves the root
        lambda p: tar_gz(
            p,
            (member("q", tarfile.SYMTYPE, "."), None),
            (member("p", tarfile.SYMTYPE, "q/.."), None),
            workspace_file("bad"),
        ),
        "symlink 'p' leaves the data dir",
    ),
    "hardlink-outside": (
        lambda p: tar_gz(
            p, workspace_file("bad"), (member("h", tarfile.LNKTYPE, "../outside.txt"), None)
        ),
        "hardlink 'h' leaves the data dir",
    ),
    "skills-through-a-link": (
        lambda p: tar_gz(
            p,
            workspace_file("bad"),
            (member("plant", tarfile.SYMTYPE, "skills"), None),
            (member("plant/evil/SKILL.md"), b"# planted\n"),
        ),
        "'plant/evil/SKILL.md' lies beneath a symlink",
    ),
    "special-file": (
        lambda p: tar_gz(p, workspace_file("bad"), (member("fifo", tarfile.FIFOTYPE), None)),
        "'fifo' is a special file",
    ),
    "gzip-bomb": (bomb, "more than 1073741824 bytes uncompressed"),
    "200k-members": (many_members, "more than 100000 members"),
    "not-a-tar": (
        lambda p: p.write_bytes(gzip.compress(b"x" * 5000)[:-20]) and p,
        "not a readable tar.gz",
    ),
}


# The live system -----------------------------------------------------------------------------
def store_snapshot(path: Path, *, age_minutes: int, worker_id: str = "w-previous") -> DataSnapshot:
    now = timezone.now()
    created = now - dt.timedelta(minutes=age_minutes)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    snapshot = DataSnapshot.objects.create(
        **TRIPLE,
        worker_id=worker_id,
        reason="drain",
        status=DataSnapshot.READY,
        sha256=digest,
        size_bytes=path.stat().st_size,
        created_at=created,
        completed_at=created,
        expires_at=now + dt.timedelta(days=1),
    )
    with open(path, "rb") as handle:
        snapshot.archive.save(f"snapshot-{snapshot.pk}.tar.gz", File(handle), save=True)
    return snapshot


def good_snapshot(tmp_path: Path, text: str = "from the good snapshot\n", age_minutes=120):
    source = tmp_path / "good-source"
    (source / "workspace").mkdir(parents=True)
    (source / "workspace" / "notes.txt").write_text(text)
    archive = tmp_path / "good.tar.gz"
    make_archive(source, archive)
    return store_snapshot(archive, age_minutes=age_minutes)


@pytest.fixture
def system(live_server, alpha_agent, make_worker):
    """Starts real worker loops (WorkerRuntime + WorkerApiClient) against the live server;
    each serves one message of the conversation and stops."""
    runs = []

    def serve(worker_id: str, data_dir: Path, text: str = "hello") -> Path:
        message = enqueue_message(
            conversation_id=CONVERSATION,
            agent_key="alpha",
            payload={"provider": "test", "provider_user_id": "u1", "message_text": text},
        ).message
        conversation = Conversation.objects.get(conversation_id=CONVERSATION)
        Worker.objects.filter(assigned_conversation=conversation).update(
            status=Worker.STOPPED, assigned_conversation=None
        )
        _, token = make_worker(
            worker_id,
            heartbeat_at=timezone.now(),
            assigned_conversation=conversation,
            assigned_agent_key="alpha",
        )
        settings = WorkerSettings(
            api_url=live_server.url,
            token=token,
            worker_id=worker_id,
            data_dir=data_dir,
            conversation_id=CONVERSATION,
            agent_key="alpha",
            poll_seconds=0.1,
            heartbeat_seconds=1,
        )
        runtime = WorkerRuntime(settings, WorkerApiClient(live_server.url, token), echo)
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(code=runtime.run()), daemon=True)
        runs.append((runtime, thread))
        thread.start()
        deadline = time.monotonic() + 60
        while Message.objects.get(pk=message.pk).status != Message.DONE:
            assert thread.is_alive(), "the worker exited instead of serving"
            assert time.monotonic() < deadline, "the worker never answered"
            time.sleep(0.1)
        runtime.request_stop()
        thread.join(30)
        assert outcome == {"code": 0}
        return data_dir

    yield serve
    for runtime, thread in runs:
        runtime.request_stop()
        thread.join(30)


def leftovers(data_dir: Path) -> list[str]:
    scratch = data_dir / ".af-tmp"
    return sorted(p.name for p in scratch.iterdir()) if scratch.exists() else []


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_a_refused_archive_is_marked_failed_and_the_older_snapshot_restored(system, tmp_path, case):
    build, reason = BAD_ARCHIVES[case]
    older = good_snapshot(tmp_path)
    bad = store_snapshot(build(tmp_path / f"{case}.tar.gz"), age_minutes=60)
    data_dir = system("w-restorer", tmp_path / "data")

    bad.refresh_from_db()
    assert bad.status == DataSnapshot.FAILED
    assert bad.error.startswith(f"refused at restore: {reason}"), bad.error
    older.refresh_from_db()
    assert older.status == DataSnapshot.READY
    transcript = (data_dir / "workspace" / "notes.txt").read_text()
    assert transcript == "from the good snapshot\n"  # nothing of the refused archive
    assert (data_dir / "workspace" / "transcript.txt").read_text() == "hello\n"  # served
    assert not (tmp_path / "outside.txt").exists()
    assert not (data_dir / "skills" / "evil").exists()
    assert leftovers(data_dir) == []  # no download, no half-extracted staging dir
    assert sorted(p.name for p in data_dir.iterdir()) == [".af-tmp", "skills", "workspace"]
    # The worker's own final snapshot is restorable again.
    newest = DataSnapshot.objects.filter(worker_id="w-restorer").get()
    assert newest.status == DataSnapshot.READY


def test_with_only_a_refused_archive_the_worker_starts_empty_and_serves(system, tmp_path):
    bad = store_snapshot(BAD_ARCHIVES["absolute-link"][0](tmp_path / "bad.tar.gz"), age_minutes=5)
    data_dir = system("w-alone", tmp_path / "data")
    bad.refresh_from_db()
    assert bad.status == DataSnapshot.FAILED and "is absolute" in bad.error
    assert not (data_dir / "workspace" / "notes.txt").exists()
    assert (data_dir / "workspace" / "transcript.txt").read_text() == "hello\n"


def test_skills_are_never_restored_from_a_snapshot(system, tmp_path):
    """``skills/`` and ``openclaw/skills`` in an archive are skipped (the manifest decides the
    skills); the rest of the archive is restored, and the snapshot stays ready."""
    from agents.skill_bundle import file_sha256
    from agents.skills import publish_skill

    skill_md = "# Greeter\n"
    files = [
        {"path": "SKILL.md", "content": skill_md, "sha256": file_sha256(skill_md)},
        {"path": "scripts/index.mjs", "content": "export default {};\n"},
    ]
    files[1]["sha256"] = file_sha256(files[1]["content"])
    publish_skill("greeter", "1.0.0", files, actor="test")
    archive = tar_gz(
        tmp_path / "planted.tar.gz",
        workspace_file("kept"),
        (member("skills/evil/SKILL.md"), b"# planted\n"),
        (member("skills/greeter/SKILL.md"), b"# replaced\n"),
        (member("./skills/dot/SKILL.md"), b"# planted\n"),
        (member("openclaw/state.json"), b"{}"),
        (member("openclaw/skills/evil/SKILL.md"), b"# planted\n"),
        (member(".af-tmp/restore-x/planted"), b"x"),
    )
    snapshot = store_snapshot(archive, age_minutes=5)
    data_dir = system("w-skills", tmp_path / "data")
    assert (data_dir / "workspace" / "notes.txt").read_text() == "kept"
    assert (data_dir / "openclaw" / "state.json").read_text() == "{}"
    assert not (data_dir / "openclaw" / "skills").exists()
    skills = data_dir / "skills"
    assert sorted(p.name for p in skills.iterdir() if not p.name.startswith(".")) == ["greeter"]
    assert (skills / "greeter" / "SKILL.md").read_text() == skill_md
    assert leftovers(data_dir) == []
    snapshot.refresh_from_db()
    assert snapshot.status == DataSnapshot.READY


def test_a_venv_in_the_workspace_snapshots_and_restores(system, tmp_path):
    """A venv holds absolute links (bin/python -> /usr/bin/python3): the snapshot leaves
    those out, keeps links inside the data dir (an absolute one stored relative), and the
    next worker restores it."""
    first = tmp_path / "first"
    venv = first / "venv"
    (venv / "lib" / "site-packages").mkdir(parents=True)
    (venv / "lib" / "site-packages" / "mod.py").write_text("VALUE = 1\n")
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    (venv / "bin" / "python3").symlink_to("python")
    (venv / "lib64").symlink_to("lib")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (first / "workspace").mkdir()
    (first / "workspace" / "notes.txt").write_text("venv notes")
    (first / "workspace" / "notes-link").symlink_to(first / "workspace" / "notes.txt")
    (first / "workspace" / "etc-link").symlink_to("../../../../etc")
    system("w-first", first, text="first")
    snapshot = DataSnapshot.objects.get(worker_id="w-first")
    assert snapshot.status == DataSnapshot.READY

    second = system("w-second", tmp_path / "second", text="second")
    snapshot.refresh_from_db()
    assert snapshot.status == DataSnapshot.READY  # restored, not refused
    venv = second / "venv"
    assert (venv / "lib64" / "site-packages" / "mod.py").read_text() == "VALUE = 1\n"
    assert os.readlink(venv / "lib64") == "lib"
    assert not os.path.lexists(venv / "bin" / "python")  # pointed outside: left out
    assert os.readlink(venv / "bin" / "python3") == "python"  # inside (dangling now): kept
    assert os.readlink(second / "workspace" / "notes-link") == "notes.txt"
    assert (second / "workspace" / "notes-link").read_text() == "venv notes"
    assert not os.path.lexists(second / "workspace" / "etc-link")
    transcript = (second / "workspace" / "transcript.txt").read_text()
    assert transcript == "first\nsecond\n"
