"""The LMDB backend: one LMDB environment (a directory), one database inside it.

LMDB serializes writers across threads and processes with its own lock, so a write plan
that holds a write transaction from its first read to its commit cannot be interleaved.
Durability:

``"full"`` (default)
    ``sync=True``: every commit is fsynced before ``save`` returns; an acknowledged save
    survives power loss.
``"fast"``
    ``sync=False``: commits reach the OS page cache, not the disk.  An acknowledged save
    survives a crash of the process, but power loss or an OS crash can lose the last
    commits and, as LMDB documents for ``MDB_NOSYNC``, may corrupt the file unless the
    filesystem preserves write order (this backend never sets ``MDB_WRITEMAP``).

LMDB forbids opening one environment twice in a process (it would break its locks), so
stores on the same path share one environment handle, reference-counted.  A process that
forks after opening the store reopens the environment in the child on first use, as LMDB
requires.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lmdb

from ..errors import StoreConfigError, StoreError
from ..rebase import AppendHint
from .base import (
    Batch,
    Get,
    LocalBackend,
    Rebased,
    Scan,
    Transaction,
    _forks,
    append_edit,
    store_path,
)

__all__ = ["LMDBBackend"]

DEFAULT_MAP_SIZE = 2**36 if sys.maxsize > 2**32 else 2**30  # virtual; the file grows as used


_shared_lock = threading.Lock()
_shared: dict[tuple[int, str], list[object]] = {}  # (pid, path) -> [env, refs, durability]


class LMDBBackend(LocalBackend):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "full",
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:
        super().__init__()
        if durability not in ("full", "fast"):
            raise StoreConfigError(f"durability must be 'full' or 'fast', not {durability!r}")
        if (
            isinstance(map_size, bool)
            or not isinstance(map_size, int)
            or not 0 < map_size <= (sys.maxsize)
        ):
            raise StoreConfigError(
                f"map_size must be a number of bytes from 1 to {sys.maxsize}, got {map_size!r}"
            )
        self.durability = durability
        self.path = store_path(path, "LMDB")
        self._map_size = map_size
        self._env = self._open()

    def _open(self) -> lmdb.Environment:
        with _shared_lock:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._share_key = (os.getpid(), str(self.path.resolve()))
            except OSError as exc:
                raise StoreError(f"cannot create the LMDB directory {self.path}: {exc}") from exc
            entry = _shared.get(self._share_key)
            if entry is None:
                entry = _shared[self._share_key] = [self._open_env(), 0, self.durability]
            elif entry[2] != self.durability:
                raise StoreConfigError(
                    f"LMDB store {self.path} is already open in this process with durability="
                    f"{entry[2]!r}; open it with the same durability (LMDB shares one handle)"
                )
            entry[1] += 1  # type: ignore[operator]
            return entry[0]  # type: ignore[return-value]

    def _release(self) -> None:
        with _shared_lock:
            entry = _shared.get(self._share_key)
            if entry is not None and entry[0] is self._env:
                entry[1] -= 1  # type: ignore[operator]
                if entry[1] == 0:
                    del _shared[self._share_key]
                    self._env.close()

    def _open_env(self) -> lmdb.Environment:
        try:
            env = lmdb.open(
                str(self.path),
                map_size=self._map_size,
                subdir=True,
                max_dbs=0,
                sync=self.durability == "full",
                metasync=self.durability == "full",
                readahead=False,
                max_readers=512,
                lock=True,
            )
            env.reader_check()  # free reader slots left by processes that were killed
            return env
        except (lmdb.Error, OSError) as exc:
            raise StoreError(
                f"cannot open LMDB store at {self.path}: {exc}; check the path is a writable "
                "directory (or a new path) and not opened by an incompatible LMDB version"
            ) from exc

    def _after_fork(self) -> None:
        # py-lmdb refuses a second open of a file it believes open in this process, and a
        # forked child inherits that belief: close the child's copy of the handle first.
        # (LMDB documents fork as safe only while no transaction is open in the parent.)
        with contextlib.suppress(lmdb.Error):
            self._env.close()
        self._env = self._open()

    def _begin(self, write: bool) -> Transaction:
        # (db, parent, write, buffers) positionally: a third cheaper than by keyword
        try:
            return _LMDBTxn(self._env.begin(None, None, write, False), self)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)  # another process grew the map: adopt its size
            return _LMDBTxn(self._env.begin(None, None, write, False), self)
        except lmdb.Error as exc:
            raise StoreError(
                f"LMDB store at {self.path} failed to start a transaction: {exc}"
            ) from exc

    def write_if(
        self,
        key: bytes,
        expected: bytes | None,
        put: Mapping[bytes, bytes],
        delete: Sequence[bytes],
        hint: AppendHint | None,
    ) -> bool | Rebased:
        # LocalBackend.write_if on the engine directly: a save's whole cost in Python is
        # a few microseconds, and the transaction wrapper's calls were a tenth of it
        busy = self._busy
        busy.append(None)  # (LocalBackend.close waits for calls under way)
        try:
            if self._closed or self._forks != _forks[0]:  # (_ensure_usable, inline)
                self._check_usable(None)
            try:
                txn = self._env.begin(None, None, True, False)
            except lmdb.Error:
                return super().write_if(key, expected, put, delete, hint)  # (reports, adapts)
            current = txn.get(key)
            edit = None
            if current != expected:  # others saved first: re-base, as a commit would
                # the edit is made outside the write lock (which the other writer waits for),
                # on the header read here, and applied if that header is still the stored one
                txn.abort()
                edit = append_edit(expected, current, put, hint)
                if edit is None:
                    return False
                try:
                    txn = self._env.begin(None, None, True, False)
                except lmdb.Error:
                    return super().write_if(key, expected, put, delete, hint)
                now_stored = txn.get(key)
                if now_stored != current:  # moved again meanwhile: edit under the lock
                    edit = append_edit(expected, now_stored, put, hint)
                    if edit is None:
                        txn.abort()
                        return False
                put, delete = edit.put, edit.delete
            try:
                for stale in delete:
                    txn.delete(stale)
                for new_key, value in put.items():
                    txn.put(new_key, value)
                missed = _forward_rows(txn, *edit.missed, None) if edit and edit.missed else []
            except lmdb.Error as exc:
                txn.abort()
                raise _write_error(exc, self) from exc
            try:
                txn.commit()
            except lmdb.Error as exc:
                raise _commit_error(exc, self) from exc
            return True if edit is None else Rebased(edit.header, missed, edit.counters)
        finally:
            busy.pop()
            if self._closed:
                self._release_when_idle()

    def read(self, op: Get | Scan | Batch) -> Any:
        # LocalBackend.read on the engine directly for a header-only load's one Get (how
        # agent code appends: load the header, add, save), as write_if does for saves
        if type(op) is not Get:
            return super().read(op)
        busy = self._busy
        busy.append(None)
        try:
            if self._closed or self._forks != _forks[0]:
                self._check_usable(None)
            try:
                txn = self._env.begin(None, None, False, False)
            except lmdb.Error:
                return super().read(op)  # (reports, adapts)
            try:
                return txn.get(op.key)
            finally:
                txn.abort()
        finally:
            busy.pop()
            if self._closed:
                self._release_when_idle()

    def _close(self) -> None:
        self._release()

    def sync(self) -> None:
        """Flush everything committed so far to disk (useful with ``durability="fast"``)."""
        busy = self._busy
        busy.append(None)
        try:
            self._ensure_usable()
            self._env.sync(True)
        finally:
            busy.pop()
            if self._closed:
                self._release_when_idle()


class _LMDBTxn(Transaction):
    __slots__ = ("_backend", "_done", "_txn", "get")

    #: ``Transaction.get`` is the engine's own method (``buffers=False``: it returns bytes),
    #: so every read of a plan saves a Python call.
    get: Callable[[bytes], bytes | None]  # type: ignore[assignment]

    def __init__(self, txn: lmdb.Transaction, backend: LMDBBackend) -> None:
        self._txn = txn
        self._backend = backend
        self._done = False
        self.get = txn.get  # type: ignore[assignment]

    def scan(
        self, start: bytes, stop: bytes, limit: int | None, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        if limit is not None and limit <= 0:
            return []
        if not reverse:
            return _forward_rows(self._txn, start, stop, limit)
        rows: list[tuple[bytes, bytes]] = []
        with self._txn.cursor() as cursor:
            found = cursor.set_range(stop)
            found = cursor.prev() if found else cursor.last()
            while found:
                key = cursor.key()
                if key < start:  # type: ignore[operator]
                    break
                if key < stop:  # type: ignore[operator]
                    rows.append((key, cursor.value()))  # type: ignore[arg-type]
                    if limit is not None and len(rows) >= limit:
                        break
                found = cursor.prev()
        return rows

    def write(
        self,
        put: Mapping[bytes, bytes],
        delete: Sequence[bytes],
        delete_ranges: Sequence[tuple[bytes, bytes]],
    ) -> None:
        txn = self._txn
        try:
            if delete:
                for key in delete:
                    txn.delete(key)
            if delete_ranges:
                with txn.cursor() as cursor:
                    for start, stop in delete_ranges:
                        found = cursor.set_range(start)
                        while found and cursor.key() < stop:  # type: ignore[operator]
                            found = cursor.delete()
            for key, value in put.items():
                txn.put(key, value)
        except lmdb.Error as exc:
            raise _write_error(exc, self._backend) from exc

    def commit(self) -> None:
        self._done = True
        try:
            self._txn.commit()
        except lmdb.Error as exc:
            raise _commit_error(exc, self._backend) from exc

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._txn.abort()


def _forward_rows(
    txn: lmdb.Transaction, start: bytes, stop: bytes, limit: int | None
) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` rows from ``start`` up to ``stop``, the first ``limit`` of them."""
    rows: list[tuple[bytes, bytes]] = []
    with txn.cursor() as cursor:
        found = cursor.set_range(start)
        for key, value in cursor.iternext() if found else ():
            if key >= stop:  # type: ignore[operator]
                break
            rows.append((key, value))  # type: ignore[arg-type]
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _write_error(exc: lmdb.Error, backend: LMDBBackend) -> StoreError:
    if isinstance(exc, lmdb.MapFullError):
        return StoreError(
            f"the LMDB store at {backend.path} is full (map_size={backend._map_size} bytes); "
            "nothing was written. Reopen it with a larger LMDBSessionStore(path, map_size=...)"
        )
    return StoreError(f"LMDB write failed at {backend.path}: {exc}; nothing was written")


def _commit_error(exc: lmdb.Error, backend: LMDBBackend) -> StoreError:
    return StoreError(
        f"LMDB commit failed at {backend.path}: {exc}; nothing was written (check free disk space)"
    )
