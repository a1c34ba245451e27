"""The in-memory backend: a dict plus its keys in order (:mod:`.sorted_keys`), under one lock.

For tests, demos and caches: nothing survives the process.  A write plan holds the lock
for its whole run, so plans are serialized exactly as on the disk engines; a commit applies
its writes in one step under that lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Get, LocalBackend, Scan, Transaction
from .sorted_keys import SortedKeys

__all__ = ["MemoryBackend"]


class MemoryBackend(LocalBackend):
    durability = "none"
    blocking = False  # dict operations: cheaper to run on the event loop than to hand off

    def __init__(self) -> None:
        super().__init__()
        self._data: dict[bytes, bytes] = {}
        self._keys = SortedKeys()
        self._lock = threading.RLock()

    def _begin(self, write: bool) -> Transaction:
        return _MemoryTxn(self, write)

    def _close(self) -> None:
        with self._lock:
            self._data.clear()
            self._keys.clear()


class _MemoryTxn(Transaction):
    """A write transaction holds the lock throughout; a read one only during each read."""

    def __init__(self, backend: MemoryBackend, write: bool) -> None:
        self._b = backend
        self._lock = backend._lock
        self._held = write
        if write:
            self._lock.acquire()

    def answer(self, op: Get | Scan) -> Any:
        with self._lock:
            return super().answer(op)

    def answer_batch(self, ops: tuple[Get | Scan, ...]) -> tuple[Any, ...]:
        with self._lock:
            return super().answer_batch(ops)

    def get(self, key: bytes) -> bytes | None:
        return self._b._data.get(key)

    def scan(
        self, start: bytes, stop: bytes, limit: int | None, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        data = self._b._data
        return [(key, data[key]) for key in self._b._keys.between(start, stop, limit, reverse)]

    def write(
        self,
        put: Mapping[bytes, bytes],
        delete: Sequence[bytes],
        delete_ranges: Sequence[tuple[bytes, bytes]],
    ) -> None:
        data, keys = self._b._data, self._b._keys
        for key in delete:
            if data.pop(key, None) is not None:
                keys.remove(key)
        for start, stop in delete_ranges:
            for key in keys.remove_between(start, stop):
                del data[key]
        for key, value in put.items():
            if key not in data:
                keys.add(key)
            data[key] = bytes(value)

    def commit(self) -> None:
        self._release()

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()
