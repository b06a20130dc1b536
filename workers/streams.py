"""Storing a request body as it arrives (snapshots, reply uploads): hashed on the way,
refused past a limit before the storage has taken more than one chunk too many."""

from __future__ import annotations

import hashlib

CHUNK = 1024 * 1024


class StreamTooLarge(Exception):
    """The body passed the reader's limit; what the storage wrote so far is to be deleted."""


class CappedHashingReader:
    """A file-like ``read`` over ``stream`` for ``storage.save``: SHA-256 and size of what
    went through, ``StreamTooLarge`` once more than ``limit`` bytes came."""

    def __init__(self, stream, limit: int):
        self._stream = stream
        self._limit = limit
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, n=-1) -> bytes:
        chunk = self._stream.read(CHUNK if n is None or n < 0 else n)
        self._digest.update(chunk)
        self.size += len(chunk)
        if self.size > self._limit:
            raise StreamTooLarge()
        return chunk

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
