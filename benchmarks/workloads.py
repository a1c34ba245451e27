"""The benchmarked operations, for kvsessions and for the raw engines, shared by both harnesses.

:func:`build` returns a :class:`Workload`: a zero-argument ``op`` doing one operation (one
append + save, or one create), with the history already in place, and a ``close``.
The *raw* variants drive LMDB / SQLite directly with the least work the operation needs at
the same durability (DESIGN.md §8): an append is one transaction writing one ~150-byte
message under a new key and rewriting a ~200-byte header; a create is one transaction with a
header and two small index keys.
"""

from __future__ import annotations

import sqlite3
import struct
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # use the checkout, installed or not
    sys.path.insert(0, str(ROOT))

from kvsessions import (  # noqa: E402
    LMDBSessionStore,
    MemorySessionStore,
    SessionManager,
    SQLiteSessionStore,
)

__all__ = ["DISK_STORES", "STORES", "Workload", "build"]

#: (store kind, durability) pairs; the memory store has no durability and no raw engine.
STORES: list[tuple[str, str]] = [
    ("lmdb", "full"),
    ("lmdb", "fast"),
    ("sqlite", "full"),
    ("sqlite", "fast"),
    ("memory", "none"),
]
DISK_STORES = [pair for pair in STORES if pair[0] != "memory"]

#: ~100 characters of message content, as in a short chat turn.
CONTENT = (
    "Could you summarise the last report and list the three open action items for my team, "
    "please? Thanks"
)
BATCH = 1_000  # messages per commit while pre-filling a history
LMDB_MAP_SIZE = 2**36  # virtual; the file only grows as used
_U64 = struct.Struct(">Q")
# Raw records sized like kvsessions' own: a message ~150 bytes, a header ~200 bytes.
RAW_MESSAGE = b'K\x01{"r":"user","c":"%s","t":1700000000000000,"x":{},"q":0}' % CONTENT.encode()
RAW_HEADER = b'K\x01{"h":"%s"}' % (b"h" * 192)


@dataclass
class Workload:
    """One operation to repeat (``op``) and how to release its resources (``close``)."""

    op: Callable[[], None]
    close: Callable[[], None]


def build(op: str, impl: str, store: str, durability: str, path: Path, history: int) -> Workload:
    """The workload ``op`` ("append" | "create") for ``impl`` ("kvs" | "raw") in ``path``."""
    if impl == "kvs":
        return (_kvs_append if op == "append" else _kvs_create)(store, durability, path, history)
    engine = {"lmdb": _LMDBRaw, "sqlite": _SQLiteRaw}[store](path, durability)
    return (engine.append if op == "append" else engine.create)(history)


# -- kvsessions ------------------------------------------------------------------------------


def _manager(store: str, durability: str, path: Path) -> SessionManager:
    if store == "lmdb":
        return SessionManager(LMDBSessionStore(path / "kv.lmdb", durability=durability))
    if store == "sqlite":
        return SessionManager(SQLiteSessionStore(path / "kv.db", durability=durability))
    return SessionManager(MemorySessionStore())


def _kvs_append(store: str, durability: str, path: Path, history: int) -> Workload:
    manager = _manager(store, durability, path)
    session = manager.create_session(user_id="user-1")
    for start in range(0, history, BATCH):
        for _ in range(min(BATCH, history - start)):
            session.add_message("assistant", CONTENT)
        manager.save(session)

    def op() -> None:
        session.add_message("user", CONTENT)
        manager.save(session)

    return Workload(op, manager.close)


def _kvs_create(store: str, durability: str, path: Path, history: int) -> Workload:
    manager = _manager(store, durability, path)
    counter = iter(range(sys.maxsize))

    def op() -> None:
        manager.create_session(user_id=f"user-{next(counter) % 100}")

    return Workload(op, manager.close)


# -- raw engines -----------------------------------------------------------------------------


def _message_key(sid: bytes, seq: int) -> bytes:
    return b"m" + sid + b"\x00" + _U64.pack(seq)


def _index_keys(sid: bytes, n: int) -> tuple[bytes, bytes]:
    """A user-index key and an activity-index key for a new session, as kvsessions lays them."""
    stamp = _U64.pack(1_700_000_000_000_000 + n)
    user = f"user-{n % 100}".encode()
    return b"u" + user + b"\x00" + stamp + sid + b"\x00", b"aA" + stamp + sid + b"\x00"


class _LMDBRaw:
    def __init__(self, path: Path, durability: str) -> None:
        full = durability == "full"
        self.env = lmdb.open(
            str(path / "raw.lmdb"), map_size=LMDB_MAP_SIZE, sync=full, metasync=full
        )

    def append(self, history: int) -> Workload:
        env, sid = self.env, uuid.uuid4().hex.encode()
        hkey = b"h" + sid + b"\x00"
        for start in range(0, history, BATCH):
            with env.begin(write=True) as txn:
                for seq in range(start, min(start + BATCH, history)):
                    txn.put(_message_key(sid, seq), RAW_MESSAGE)
                txn.put(hkey, RAW_HEADER)
        seq = history

        def op() -> None:
            nonlocal seq
            with env.begin(write=True) as txn:
                txn.put(_message_key(sid, seq), RAW_MESSAGE)
                txn.put(hkey, RAW_HEADER)
            seq += 1

        return Workload(op, env.close)

    def create(self, history: int) -> Workload:
        env, counter = self.env, iter(range(sys.maxsize))

        def op() -> None:
            sid = uuid.uuid4().hex.encode()
            user_key, activity_key = _index_keys(sid, next(counter))
            with env.begin(write=True) as txn:
                txn.put(b"h" + sid + b"\x00", RAW_HEADER)
                txn.put(user_key, b"")
                txn.put(activity_key, b"")

        return Workload(op, env.close)


class _SQLiteRaw:
    def __init__(self, path: Path, durability: str) -> None:
        self.conn = conn = sqlite3.connect(path / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        conn.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def append(self, history: int) -> Workload:
        conn, sid = self.conn, uuid.uuid4().hex.encode()
        hkey = b"h" + sid + b"\x00"
        execute = conn.execute
        for start in range(0, history, BATCH):
            execute("BEGIN")
            rows: Any = (
                (_message_key(sid, s), RAW_MESSAGE)
                for s in range(start, min(start + BATCH, history))
            )
            conn.executemany("INSERT INTO kv VALUES (?, ?)", rows)
            execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (hkey, RAW_HEADER))
            execute("COMMIT")
        seq = history

        def op() -> None:
            nonlocal seq
            execute("BEGIN")
            execute("INSERT INTO kv VALUES (?, ?)", (_message_key(sid, seq), RAW_MESSAGE))
            execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (hkey, RAW_HEADER))
            execute("COMMIT")
            seq += 1

        return Workload(op, conn.close)

    def create(self, history: int) -> Workload:
        execute, counter = self.conn.execute, iter(range(sys.maxsize))

        def op() -> None:
            sid = uuid.uuid4().hex.encode()
            user_key, activity_key = _index_keys(sid, next(counter))
            execute("BEGIN")
            execute("INSERT INTO kv VALUES (?, ?)", (b"h" + sid + b"\x00", RAW_HEADER))
            execute("INSERT INTO kv VALUES (?, ?)", (user_key, b""))
            execute("INSERT INTO kv VALUES (?, ?)", (activity_key, b""))
            execute("COMMIT")

        return Workload(op, self.conn.close)
