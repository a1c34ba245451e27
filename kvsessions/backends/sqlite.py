"""The SQLite backend: one ``WITHOUT ROWID`` table of (key BLOB PRIMARY KEY, value BLOB).

WAL mode; each thread uses its own connection (sqlite3 connections belong to one thread),
opened lazily and reopened after ``fork``.  Write plans run in ``BEGIN IMMEDIATE``, which
takes SQLite's write lock at once, so plans in other threads and processes wait (up to
``timeout`` seconds) instead of interleaving.  Durability:

``"full"`` (default)
    ``synchronous=FULL``: the WAL is fsynced at every commit; an acknowledged save survives
    power loss.
``"fast"``
    ``synchronous=NORMAL``: the WAL is fsynced only at checkpoints.  An acknowledged save
    survives a process crash; power loss or an OS crash can roll back the last commits
    (the database stays consistent).

Table names are SQL identifiers (letters, digits, ``_``), quoted in every statement so SQL
keywords such as ``order`` work; SQLite compares them case-insensitively, so ``Chat`` and
``chat`` name one table (one store's sessions), and it keeps ``sqlite_*`` for itself.  A
table of that name with another layout is refused (:class:`StoreConfigError`) rather than
written to.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import StoreConfigError, StoreError
from ..rebase import AppendHint
from .base import LocalBackend, Rebased, Transaction, _forks, _rebase, store_path

__all__ = ["SQLiteBackend"]

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
#: What ``PRAGMA table_info`` says of a kvsessions table: (name, type, primary key).
_LAYOUT = [("k", "BLOB", 1), ("v", "BLOB", 0)]


MAX_TIMEOUT = 86_400  # seconds: a writer waiting longer than a day is stuck, not slow


class SQLiteBackend(LocalBackend):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table_name: str = "kvsessions",
        durability: str = "full",
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if durability not in ("full", "fast"):
            raise StoreConfigError(f"durability must be 'full' or 'fast', not {durability!r}")
        self.path = store_path(path, "SQLite")
        self.table_name = _checked_table_name(table_name)
        self.durability = durability
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (0 <= timeout <= MAX_TIMEOUT)
        ):
            raise StoreConfigError(
                f"timeout must be a number of seconds from 0 to {MAX_TIMEOUT:,} (how long a "
                f"write waits for another writer's lock), got {timeout!r}"
            )
        self._timeout = timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        t = f'"{table_name}"'  # (quoted: a keyword such as "order" is a name here)
        self._sql_get = f"SELECT v FROM {t} WHERE k = ?"
        self._sql_scan = f"SELECT k, v FROM {t} WHERE k >= ? AND k < ? ORDER BY k"
        self._sql_rscan = f"SELECT k, v FROM {t} WHERE k >= ? AND k < ? ORDER BY k DESC"
        self._sql_put = f"INSERT OR REPLACE INTO {t} (k, v) VALUES (?, ?)"
        self._sql_swap = f"UPDATE {t} SET v = ? WHERE k = ? AND v = ?"
        self._sql_insert_new = f"INSERT OR IGNORE INTO {t} (k, v) VALUES (?, ?)"
        self._sql_del = f"DELETE FROM {t} WHERE k = ?"
        self._sql_del_range = f"DELETE FROM {t} WHERE k >= ? AND k < ?"
        self._connection()  # open now, so a bad path fails here and not at first use

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise _open_error(exc, self) from exc
        try:
            self._set_up(conn)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode, the durability setting, and this store's table (created if absent)."""
        sync = "FULL" if self.durability == "full" else "NORMAL"
        name = self.table_name
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{name}" '
                "(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
            )
            columns = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
        except sqlite3.OperationalError as exc:
            if "already" in str(exc):  # an index of that name
                raise StoreConfigError(
                    f"cannot create table {name!r} in {self.path}: {exc}; pass another "
                    "table_name (in a store URL: ?table=NAME)"
                ) from None
            raise _open_error(exc, self) from exc
        except sqlite3.Error as exc:
            raise _open_error(exc, self) from exc
        if [(col[1].lower(), col[2].upper(), col[5]) for col in columns] != _LAYOUT:
            found = ", ".join(f"{col[1]} {col[2]}".strip() for col in columns)
            raise StoreConfigError(
                f"{self.path} already has a table named {name!r} (SQLite ignores case in "
                f"table names) with columns {found}: not a kvsessions table; pass another "
                "table_name (in a store URL: ?table=NAME) to keep sessions in a table of "
                "their own"
            )

    def _after_fork(self) -> None:
        self._local = threading.local()  # never reuse (or close) the parent's connections
        self._all = []

    def _begin(self, write: bool) -> Transaction:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise _wrap(exc, self, "start a transaction") from exc
        return _SQLiteTxn(conn, self)

    def write_if(
        self,
        key: bytes,
        expected: bytes | None,
        put: Mapping[bytes, bytes],
        delete: Sequence[bytes],
        hint: AppendHint | None,
    ) -> bool | Rebased:
        # LocalBackend.write_if on the connection directly (no transaction object), for a
        # save of ``key`` itself (an append's or a create's header): the compare-and-set
        # is that key's own write, one statement and no read
        new = put.get(key)
        if new is None or key in delete:
            return super().write_if(key, expected, put, delete, hint)
        busy = self._busy
        busy.append(None)  # (LocalBackend.close waits for calls under way)
        try:
            if self._closed or self._forks != _forks[0]:  # (_ensure_usable, inline)
                self._check_usable(None)
            conn = self._connection()
            execute = conn.execute
            try:
                execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _wrap(exc, self, "start a transaction") from exc
            try:
                if expected is not None:
                    swapped = execute(self._sql_swap, (new, key, expected)).rowcount == 1
                else:
                    swapped = execute(self._sql_insert_new, (key, new)).rowcount == 1
                if not swapped:  # others saved first: re-base an append on what they stored
                    row = execute(self._sql_get, (key,)).fetchone()
                    wrapped = _SQLiteTxn(conn, self)
                    rebased = _rebase(wrapped, expected, None if row is None else row[0], put, hint)
                    if rebased is not None:
                        wrapped.commit()
                    return False if rebased is None else rebased
                if delete:
                    conn.executemany(self._sql_del, [(stale,) for stale in delete])
                conn.executemany(self._sql_put, [(k, v) for k, v in put.items() if k != key])
                execute("COMMIT")
                return True
            except sqlite3.Error as exc:
                raise _wrap(exc, self, "write") from exc
            finally:
                if conn.in_transaction:  # (not committed: nothing written)
                    execute("ROLLBACK")
        finally:
            busy.pop()
            if self._closed:
                self._release_when_idle()

    def _close(self) -> None:
        # every thread's connection: LocalBackend.close calls this once no call is under way
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _checked_table_name(name: object) -> str:
    if not isinstance(name, str) or not _TABLE_NAME.match(name):
        raise StoreConfigError(
            f"table_name must be a plain SQL identifier (letters, digits, _; at most 63), "
            f"got {name!r}"
        )
    if name.lower().startswith("sqlite_"):
        raise StoreConfigError(
            f"table_name {name!r} is reserved: SQLite keeps names starting with sqlite_ "
            "(in any case) for its own tables; choose another table_name"
        )
    return name


#: What to do about a file SQLite finds damaged (or that is not a SQLite database).
_DAMAGED = (
    "the file is damaged or is not a SQLite database: check the path, restore the file "
    "from a backup, or salvage what it holds with the sqlite3 shell's .recover command"
)


def _is_damage(exc: Exception) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(exc)


def _open_error(exc: Exception, backend: SQLiteBackend) -> StoreError:
    advice = _DAMAGED if _is_damage(exc) else "check the path is a writable file location"
    return StoreError(f"cannot open SQLite store at {backend.path}: {exc}; {advice}")


def _wrap(exc: sqlite3.Error, backend: SQLiteBackend, doing: str) -> StoreError:
    hint = ""
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        hint = f"; another writer held the lock longer than timeout={backend._timeout}s"
    elif _is_damage(exc):
        hint = f"; {_DAMAGED}"
    elif "full" in str(exc):
        hint = "; free some disk space"
    return StoreError(
        f"SQLite store at {backend.path} failed to {doing}: {exc}{hint}; nothing was written"
    )


class _SQLiteTxn(Transaction):
    def __init__(self, conn: sqlite3.Connection, backend: SQLiteBackend) -> None:
        self._conn = conn
        self._b = backend
        self._done = False

    def get(self, key: bytes) -> bytes | None:
        try:
            row = self._conn.execute(self._b._sql_get, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise _wrap(exc, self._b, "read") from exc
        return None if row is None else row[0]

    def scan(
        self, start: bytes, stop: bytes, limit: int | None, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        sql = self._b._sql_rscan if reverse else self._b._sql_scan
        try:
            if limit is not None:
                return self._conn.execute(sql + " LIMIT ?", (start, stop, limit)).fetchall()
            return self._conn.execute(sql, (start, stop)).fetchall()
        except sqlite3.Error as exc:
            raise _wrap(exc, self._b, "read") from exc

    def write(
        self,
        put: Mapping[bytes, bytes],
        delete: Sequence[bytes],
        delete_ranges: Sequence[tuple[bytes, bytes]],
    ) -> None:
        conn = self._conn
        try:
            if delete:
                conn.executemany(self._b._sql_del, [(key,) for key in delete])
            if delete_ranges:
                conn.executemany(self._b._sql_del_range, delete_ranges)
            conn.executemany(self._b._sql_put, put.items())
        except sqlite3.Error as exc:
            raise _wrap(exc, self._b, "write") from exc

    def commit(self) -> None:
        self._done = True
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise _wrap(exc, self._b, "commit") from exc

    def abort(self) -> None:
        if not self._done:
            self._done = True
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
