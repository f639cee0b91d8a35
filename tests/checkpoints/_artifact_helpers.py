"""Helpers shared by the artifact store tests."""

from __future__ import annotations

import io

SMALL_CHUNK = 1000  # the chunk size of the db_store fixture


class FailingReader(io.RawIOBase):
    """A content body that yields ``fail_after`` bytes and then raises."""

    def __init__(self, fail_after: int) -> None:
        self._left = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._left <= 0:
            raise OSError("simulated failure mid-stream")
        n = min(len(b), self._left, 700)
        b[:n] = b"x" * n
        self._left -= n
        return n


def read_artifact(store, artifact_id: str) -> bytes:
    with store.open_reader(artifact_id) as f:
        return f.read()


def payload(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))
