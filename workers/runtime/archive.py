"""Workspace archives (SPEC §9, §23): tar.gz of the data dir, and a restore that refuses an
unsafe archive before writing anything.

An archive comes from a previous worker, i.e. from agent code: it is untrusted input. The
restore reads it twice. The first pass reads only the tar headers (streaming, so the gzip
ratio does not matter) and refuses the archive when it breaks a rule: more than
``max_members`` members, more than ``max_bytes`` of file data by the headers' sizes, a special
file, a name with ``..`` or beneath a symlink, or a link that leaves the data dir (absolute,
or relative and resolving outside once every symlink of the archive is followed — chains
included, the way the kernel would follow them). The second pass extracts into a staging
directory in the data dir's scratch space (``.af-tmp``) with ``filter="data"`` (Python's own
check, as a second line), and only a complete extraction is swapped in; anything else
removes the staging directory.

The data dir's ``skills/`` (the materialised global skills) and ``openclaw/skills`` and
``openclaw/workspace/skills`` (OpenClaw's links to them) are never archived and never restored:
the manifest decides the skills.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB

# The worker's own scratch space inside the data dir (downloads, restore staging, the archive
# being written): on the data dir's filesystem, so the restore's final renames never copy.
WORK_DIR = ".af-tmp"
# Never archived, never restored (SPEC §23). ``skills`` is also kept when the data dir is
# cleared for another conversation: it is re-materialised from the manifest, not per chat.
PROTECTED = (
    (WORK_DIR,),
    ("skills",),
    ("openclaw", "skills"),
    ("openclaw", "workspace", "skills"),
)
SKIP_DIRS = {"skills", WORK_DIR}

MAX_LINK_HOPS = 40  # the kernel's own limit (ELOOP)
MAX_NAME = 4096  # PATH_MAX: longer names or link targets are refused outright


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = GiB  # total uncompressed file data, counted from the tar headers
    max_members: int = 100_000
    # The compressed download (the server's own upload cap, AGENT_FACTORY_SNAPSHOT_MAX_BYTES).
    max_download_bytes: int = 2 * GiB


DEFAULT_LIMITS = ArchiveLimits()


class ArchiveRefused(ValueError):
    """The archive breaks a rule of SPEC §23; the message says which (it goes to the server)."""


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _protected(parts) -> bool:
    return any(tuple(parts[: len(p)]) == p for p in PROTECTED)


class LinkResolver:
    """Resolves a path of the archive as the kernel would once extracted: every symlink of
    the archive is followed (chains, ``..`` after a link). ``None`` when the path leaves the
    root at any step, meets an absolute target, or loops."""

    def __init__(self, links: dict[tuple, str]):
        self.links = links  # location (parts) -> raw target

    def resolve(self, parts) -> tuple | None:
        out: list[str] = []
        pending = deque(parts)
        hops = 0
        while pending:
            part = pending.popleft()
            if part == "..":
                if not out:
                    return None
                out.pop()
                continue
            out.append(part)
            target = self.links.get(tuple(out))
            if target is None:
                continue
            hops += 1
            if hops > MAX_LINK_HOPS or target.startswith("/"):
                return None
            out.pop()
            pending.extendleft(reversed(_parts(target)))
        return tuple(out)


def _writable(resolver: LinkResolver, parts) -> bool:
    """Inside the root and not in a protected place (a link may point into ``skills/``;
    nothing may be written there)."""
    resolved = resolver.resolve(parts)
    return resolved is not None and not _protected(resolved)


# Creating archives ---------------------------------------------------------------------------
def _walk(data_dir: Path):
    """Every entry under the data dir, a directory before its contents (links not followed),
    protected ones left out."""
    stack = [()]
    while stack:
        prefix = stack.pop()
        subdirs = []
        for entry in sorted(os.scandir(data_dir.joinpath(*prefix)), key=lambda e: e.name):
            parts = (*prefix, entry.name)
            if _protected(parts):
                continue
            yield parts, entry
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(parts)
        stack.extend(reversed(subdirs))


def _archived_link_target(data_dir: Path, parts: tuple, target: str) -> str | None:
    """The target to store for a symlink at ``parts``, or None to leave it out. A link into
    the data dir given as an absolute path is stored relative (the data dir moves between
    workers); one pointing outside (a venv's ``bin/python``) is not the workspace's to keep."""
    if target.startswith("/"):
        normalised = Path(os.path.normpath(target))
        for root in (data_dir, Path(os.path.realpath(data_dir))):
            if normalised.is_relative_to(root):
                inside = normalised.relative_to(root)
                break
        else:
            return None
        target = os.path.relpath(inside.as_posix() or ".", "/".join(parts[:-1]) or ".")
    return target if target else None


def make_archive(
    data_dir: Path, destination: Path, limits: ArchiveLimits = DEFAULT_LIMITS
) -> tuple[str, int]:
    """Write the data dir as tar.gz to ``destination``; returns (sha256, size in bytes).

    Keeps regular files, directories and the symlinks that stay inside the data dir (judged
    by the same resolver the restore uses, so a kept link never gets an archive refused);
    leaves out other links and special files. Raises ArchiveRefused when the workspace is
    past the limits (an archive no worker would restore is not worth uploading).
    """
    data_dir = Path(os.path.abspath(data_dir))
    entries = []
    links: dict[tuple, str] = {}
    if data_dir.exists():
        for parts, entry in _walk(data_dir):
            if entry.is_symlink():
                target = _archived_link_target(data_dir, parts, os.readlink(entry.path))
                if target is not None:
                    links[parts] = target
                    entries.append((parts, entry, target))
            elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
                entries.append((parts, entry, None))  # sockets, FIFOs, devices: left out
            if len(entries) > limits.max_members:
                raise ArchiveRefused(_limit_reason(len(entries), 0, limits))
    # A link is kept when it resolves inside, judged exactly as the restore will judge it.
    # One that passes through a dropped link resolves outside (or loops) too, so dropping
    # changes the resolution of no kept link.
    resolver = LinkResolver(links)
    unsafe = {parts for parts in links if resolver.resolve(parts) is None}
    total = members = 0
    with tarfile.open(destination, mode="w:gz") as tar:
        for parts, entry, target in entries:
            if parts in unsafe:
                continue
            try:
                info = tar.gettarinfo(entry.path, arcname="/".join(parts))
            except FileNotFoundError:
                continue  # gone since the walk
            if info is None:
                continue
            members += 1
            if info.issym():
                info.linkname = target
            elif info.isreg():
                total += info.size
            if members > limits.max_members or total > limits.max_bytes:
                raise ArchiveRefused(_limit_reason(members, total, limits))
            if info.isreg():
                try:
                    handle = open(entry.path, "rb")  # noqa: SIM115 (closed just below)
                except FileNotFoundError:
                    continue
                with handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return _file_sha256(destination), destination.stat().st_size


def _limit_reason(members: int, total: int, limits: ArchiveLimits) -> str:
    if members > limits.max_members:
        return f"more than {limits.max_members} members"
    return f"more than {limits.max_bytes} bytes uncompressed"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


# Restoring archives --------------------------------------------------------------------------
UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def check_archive(archive: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> None:
    """The first pass: raise ArchiveRefused unless every rule holds. Reads headers only,
    counting members and sizes as they stream past (the gzip size says nothing)."""
    members = total = 0
    entries = []
    links: dict[tuple, str] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # nothing is extracted in this pass: keep no headers
                members += 1
                if member.isreg():
                    total += member.size
                if members > limits.max_members or total > limits.max_bytes:
                    raise ArchiveRefused(_limit_reason(members, total, limits))
                entries.append(_checked_entry(member, links))
    except UNREADABLE as exc:
        raise ArchiveRefused(f"not a readable tar.gz ({type(exc).__name__})") from None
    resolver = LinkResolver(links)
    for parts, kind, linkname in entries:
        if kind == "skipped":
            continue
        # tar never stores an entry beneath a symlink; one that does writes through it.
        if any(parts[:i] in links for i in range(1, len(parts))):
            raise ArchiveRefused(f"{'/'.join(parts)!r} lies beneath a symlink")
        # A symlink is followed to where it points; a hard link's target is named from the
        # root; any other entry is checked at its own path (through a link of the same name).
        if kind == "symlink":
            ok = resolver.resolve(parts) is not None
        else:
            ok = _writable(resolver, _parts(linkname) if kind == "hardlink" else parts)
        if not ok:
            raise ArchiveRefused(f"{kind} {'/'.join(parts)!r} leaves the data dir")


def _checked_entry(member: tarfile.TarInfo, links: dict) -> tuple:
    name = member.name
    if len(name) > MAX_NAME or len(member.linkname) > MAX_NAME:
        raise ArchiveRefused("a name or link target longer than 4096 characters")
    parts = tuple(_parts(name.lstrip("/")))
    if ".." in parts:
        raise ArchiveRefused(f"{name!r} contains '..'")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise ArchiveRefused(f"{name!r} is a special file")
    if _protected(parts):
        return (parts, "skipped", "")  # never restored
    if not (member.issym() or member.islnk()):
        return (parts, "entry", "")
    target = member.linkname
    if not target:
        raise ArchiveRefused(f"link {name!r} has no target")
    if target.startswith("/"):
        raise ArchiveRefused(f"link {name!r} is absolute ({target})")
    if member.islnk():
        return (parts, "hardlink", target)
    links[parts] = target
    return (parts, "symlink", target)


def _restore_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    if _protected(_parts(member.name.lstrip("/"))):
        return None
    return tarfile.data_filter(member, path)


def restore_archive(
    archive: Path, expected_sha256: str, data_dir: Path, limits: ArchiveLimits = DEFAULT_LIMITS
) -> None:
    """Verify the hash and every rule, extract into a staging directory inside the data dir,
    then swap the result in. Raises ArchiveRefused (the archive's fault: the data dir is left
    as it was) or OSError (the disk's: e.g. full)."""
    if _file_sha256(archive) != expected_sha256:
        raise ArchiveRefused("the archive does not match its SHA-256")
    check_archive(archive, limits)
    staging = Path(tempfile.mkdtemp(prefix="restore-", dir=work_dir(data_dir)))
    try:
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                # Checked above; the data filter re-checks every member as it is written.
                tar.extractall(staging, filter=_restore_filter)  # noqa: S202
        except UNREADABLE as exc:
            raise ArchiveRefused(f"refused while extracting: {exc}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
                raise  # the disk, not the archive
            raise ArchiveRefused(f"cannot be extracted: {exc.strerror or exc}") from None
        _swap_in(staging, data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, data_dir: Path) -> None:
    """Move the extracted entries into the data dir, replacing same-named ones; the
    protected entries of the data dir (skills, OpenClaw's link to them) stay as they are."""
    for parts in PROTECTED:
        if len(parts) < 2:
            continue
        current = data_dir.joinpath(*parts)
        if os.path.lexists(current) and staging.joinpath(*parts[:-1]).is_dir():
            current.rename(staging.joinpath(*parts))
    for child in staging.iterdir():
        target = data_dir / child.name
        if os.path.lexists(target):
            remove_entry(target)
        child.rename(target)


def work_dir(data_dir: Path) -> Path:
    """The data dir's scratch directory (created on demand)."""
    path = data_dir / WORK_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_entry(path: Path) -> None:
    """Delete a file, a symlink (never what it points to) or a directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def clear_data_dir(data_dir: Path) -> None:
    """Empty the data dir of everything a snapshot would hold (SKIP_DIRS stay)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for child in data_dir.iterdir():
        if child.name not in SKIP_DIRS:
            remove_entry(child)
