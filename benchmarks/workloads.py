"""The benchmarked operations, for kvsessions and for the raw engines, shared by both harnesses.

:func:`build_case` returns one :class:`Workload` per side of a case: a zero-argument ``op``
doing one operation, with its data already in place, and a ``close``.

*Write* cases (``append``, ``create``): each side in its own directory with the same history.
The raw variants drive LMDB / SQLite directly with the least work the operation needs at
the same durability (DESIGN.md §8): an append is one transaction writing one ~150-byte
message under a new key and rewriting a ~200-byte header; a create is one transaction with a
header and two small index keys.  Those records are constant bytes (``raw``, the §8
reference).  ``rawjson`` (information only) does the same transactions but builds its
records as a store must: it reads the clock and encodes the message and a kvsessions-shaped
header (counters moved on) with orjson for every operation, so the gap to kvsessions splits
into the encoding any store pays and kvsessions' own bookkeeping.

*Read* cases (``load``, ``load_last``, ``messages_last``, ``list``): kvsessions seeds one
store; the raw sides read a byte-for-byte copy of it (the very records kvsessions wrote)
with the engine directly.  ``raw`` decodes them with kvsessions' own decoders
(``codec.decode_header`` and the batch ``codec.decode_messages``): DESIGN.md §8's "raw
read + the same decoder", the reference of the loads and listing targets.  ``rawjson``
decodes them with plain ``orjson.loads`` into dicts (informational: what a store without
a model layer would return).  Every side is checked to return the same number of records
before anything is timed.  Reads do not depend on the durability setting; the stores are
opened at "fast".

Peers (``peer-*`` stores) are built by :mod:`peers`.
"""

from __future__ import annotations

import gc
import shutil
import sqlite3
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # use the checkout, installed or not
    sys.path.insert(0, str(ROOT))

from kvsessions import (  # noqa: E402
    LMDBSessionStore,
    MemorySessionStore,
    SessionManager,
    SQLiteSessionStore,
    keys,
)
from kvsessions.codec import decode_header, decode_messages  # noqa: E402
from kvsessions.model import utcnow  # noqa: E402

__all__ = [
    "DISK_STORES",
    "RAW_READERS",
    "READ_OPS",
    "STORES",
    "Workload",
    "build",
    "build_case",
    "bulk_create",
    "copy_store",
    "manager",
    "seed_history",
]

#: (store kind, durability) pairs; the memory store has no durability and no raw engine.
STORES: list[tuple[str, str]] = [
    ("lmdb", "full"),
    ("lmdb", "fast"),
    ("sqlite", "full"),
    ("sqlite", "fast"),
    ("memory", "none"),
]
DISK_STORES = [pair for pair in STORES if pair[0] != "memory"]
READ_OPS = ("load", "load_last", "messages_last", "list")
#: The raw sides of a read case and their decoders: ``raw`` = the engine + kvsessions' own
#: decoders (DESIGN.md §8's "raw read + the same decoder"), ``rawjson`` = the engine +
#: plain orjson into dicts (shown for information).
RAW_READERS = {"raw": "codec", "rawjson": "json"}

#: ~100 characters of message content, as in a short chat turn.
CONTENT = (
    "Could you summarise the last report and list the three open action items for my team, "
    "please? Thanks"
)
BATCH = 1_000  # messages per commit while pre-filling a history
BULK_BATCH = 20_000  # sessions per transaction while seeding many sessions
WINDOW = 20  # messages in a bounded read ("the last 20")
LIST_USER = "bench-user"  # the user whose sessions are listed
LIST_USER_SESSIONS = 10  # ... and how many they have (2 messages each)
SESSIONS_PER_USER = 10  # the other users' sessions each
LMDB_MAP_SIZE = 2**36  # virtual; the file only grows as used
SQLITE_TABLE = "sessions"  # SQLiteSessionStore's default table_name
_U64 = struct.Struct(">Q")
# Raw records sized like kvsessions' own: a message ~150 bytes, a header ~200 bytes.
RAW_MESSAGE = b'K\x01{"r":"user","c":"%s","t":1700000000000000,"x":{},"q":0}' % CONTENT.encode()
RAW_HEADER = b'K\x01{"h":"%s"}' % (b"h" * 192)
_loads = orjson.loads


@dataclass
class Workload:
    """One operation to repeat (``op``) and how to release its resources (``close``).

    ``records``: how many records one ``op`` returns (reads), to check both sides agree.
    """

    op: Callable[[], Any]
    close: Callable[[], None]
    setup_s: float = 0.0
    records: int | None = None


def build_case(
    op: str, impls: list[str], store: str, durability: str, path: Path, size: int
) -> dict[str, Workload]:
    """Every side (``impls``) of one case, built under ``path``."""
    if store.startswith("peer-"):
        import peers  # imported only here: the peers are a benchmark extra

        return {impl: _timed(lambda: peers.build(op, store, path, size)) for impl in impls}
    if op in READ_OPS:
        return _build_reads(op, impls, store, durability, path, size)
    if op == "scale":
        return _build_scale(impls, store, durability, path, size)
    works = {}
    for impl in impls:
        (path / impl).mkdir()
        works[impl] = _timed(lambda: build(op, impl, store, durability, path / impl, size))  # noqa: B023
    return works


def _timed(make: Callable[[], Workload]) -> Workload:
    started = time.perf_counter()
    work = make()
    work.setup_s = time.perf_counter() - started
    return work


def build(op: str, impl: str, store: str, durability: str, path: Path, history: int) -> Workload:
    """The write workload ``op`` ("append" | "create") for ``impl`` ("kvs" | "raw") in ``path``."""
    if impl == "kvs":
        return (_kvs_append if op == "append" else _kvs_create)(store, durability, path, history)
    engine = _raw_engine(store, durability, path)
    records = _encoded_records() if impl == "rawjson" else None
    return (engine.append if op == "append" else engine.create)(history, records)


def _raw_engine(store: str, durability: str, path: Path) -> _LMDBRaw | _SQLiteRaw:
    """The raw engine of ``store`` ("lmdb" | "sqlite"), in ``path``."""
    return {"lmdb": _LMDBRaw, "sqlite": _SQLiteRaw}[store](path, durability)


# -- kvsessions ------------------------------------------------------------------------------


def manager(store: str, durability: str, path: Path) -> SessionManager:
    """A manager on a fresh (or existing) store of ``store`` kind under ``path``."""
    if store == "lmdb":
        return SessionManager(LMDBSessionStore(path / "kv.lmdb", durability=durability))
    if store == "sqlite":
        return SessionManager(SQLiteSessionStore(path / "kv.db", durability=durability))
    return SessionManager(MemorySessionStore())


_manager = manager


def seed_history(manager: SessionManager, size: int, user_id: str = "user-1") -> str:
    """A session with ``size`` messages (user/assistant turns), saved 1,000 per commit."""
    session = manager.create_session(user_id=user_id)
    for start in range(0, size, BATCH):
        for number in range(start, min(start + BATCH, size)):
            session.add_message("user" if number % 2 == 0 else "assistant", CONTENT)
        manager.save(session)
    return session.session_id


def bulk_create(
    store: Any,
    users: Iterable[str],
    clock: Callable[[], datetime] = utcnow,
    batch: int = BULK_BATCH,
) -> int:
    """Create one session per user id exactly as ``create_session`` would, ``batch`` per commit.

    Seeding a million sessions one commit each takes 26 s (LMDB "fast") to 95 s (SQLite
    "fast") on a 2-vCPU VM; this drives kvsessions' own create plans (so every record is the
    one ``create_session`` writes) and applies their commits with the backend's group commit
    (as the asyncio manager does), ``batch`` to a transaction: ~19 s and ~38 s.  ``clock``
    stands for the time of creation.
    """
    operations, backend = store._operations(clock), store._backend
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of live plans make each cyclic GC pass slow: 2x overall
    try:
        return _bulk_create(operations, backend, users, batch)
    finally:
        if collecting:
            gc.enable()


def _bulk_create(operations: Any, backend: Any, users: Iterable[str], batch: int) -> int:
    made = 0
    for chunk in _chunks(users, batch):
        plans = [operations.create(user, None, None).plan for user in chunk]
        commits = [plan.send(None) for plan in plans]
        if commits and type(commits[0]).__name__ != "Commit":
            raise RuntimeError(
                f"kvsessions' create plan now starts with {type(commits[0]).__name__}, not a "
                "Commit: update benchmarks/workloads.bulk_create to drive it"
            )
        for plan, answer in zip(plans, backend.commit_many(commits), strict=True):
            if answer is not None:
                raise RuntimeError(f"seeding a session failed: {answer!r}")
            try:
                plan.send(None)
            except StopIteration:
                continue
            raise RuntimeError("kvsessions' create plan wants more than one step after commit")
        made += len(chunk)
    return made


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _kvs_append(store: str, durability: str, path: Path, history: int) -> Workload:
    manager = _manager(store, durability, path)
    return Workload(_kvs_appender(manager, history), manager.close)


def _kvs_appender(manager: SessionManager, history: int) -> Callable[[], None]:
    """add_message + save on a new session of ``manager`` that holds ``history`` messages."""
    session = manager.create_session(user_id="user-1")
    for start in range(0, history, BATCH):
        for _ in range(min(BATCH, history - start)):
            session.add_message("assistant", CONTENT)
        manager.save(session)

    def op() -> None:
        session.add_message("user", CONTENT)
        manager.save(session)

    return op


SHORT_HISTORY = 10  # the short session of a "scale" case


def _build_scale(
    impls: list[str], store: str, durability: str, path: Path, history: int
) -> dict[str, Workload]:
    """Appends to two sessions of one store, one holding ``SHORT_HISTORY`` messages and one
    ``history``, as sides ``kvs_short`` and ``kvs`` (and ``raw_short`` / ``raw``, the raw
    engine doing the same in a store of its own): timed alternately in one process, their
    ratio is what a longer history costs, free of drift between processes."""
    works: dict[str, Workload] = {}
    if "kvs" in impls:
        (path / "kvs").mkdir()
        manager = _manager(store, durability, path / "kvs")
        close = manager.close
        works["kvs_short"] = _timed(lambda: Workload(_kvs_appender(manager, SHORT_HISTORY), close))
        works["kvs"] = _timed(lambda: Workload(_kvs_appender(manager, history), close))
    if "raw" in impls:
        (path / "raw").mkdir()
        engine = _raw_engine(store, durability, path / "raw")
        works["raw_short"] = _timed(lambda: engine.append(SHORT_HISTORY, None))
        works["raw"] = _timed(lambda: engine.append(history, None))
    return {impl: works[impl] for impl in impls}


def _kvs_create(store: str, durability: str, path: Path, history: int) -> Workload:
    manager = _manager(store, durability, path)
    counter = iter(range(sys.maxsize))

    def op() -> None:
        manager.create_session(user_id=f"user-{next(counter) % 100}")

    return Workload(op, manager.close)


# -- reads: kvsessions and the raw engine over the same records -------------------------------


def _build_reads(
    op: str, impls: list[str], store: str, durability: str, path: Path, size: int
) -> dict[str, Workload]:
    started = time.perf_counter()
    kvs_path = path / "kvs"
    kvs_path.mkdir()
    mgr = _manager(store, durability, kvs_path)
    if op == "list":
        seed_list(mgr, size)
        target = LIST_USER
    else:
        target = seed_history(mgr, size)
    works: dict[str, Workload] = {}
    raws = [impl for impl in impls if impl in RAW_READERS]
    if raws:
        mgr.close()
        copy_store(store, kvs_path, path / "raw")
        mgr = _manager(store, durability, kvs_path)
        raw = {"lmdb": _LMDBReads, "sqlite": _SQLiteReads}[store](path / "raw")
        for impl in raws:  # one handle on the copy (LMDB allows one per process), two decoders
            works[impl] = Workload(raw.op(op, target, RAW_READERS[impl]), raw.close)
    works["kvs"] = Workload(_kvs_read(mgr, op, target), mgr.close)
    for work in works.values():
        work.setup_s = time.perf_counter() - started
        work.records = _count(work.op())
    if len({work.records for work in works.values()}) > 1:
        raise RuntimeError(
            f"{op}: the sides read different numbers of records "
            f"{ {impl: work.records for impl, work in works.items()} }"
        )
    for impl in set(works) - set(impls):  # built only to seed or to check the other side
        works.pop(impl).close()
    return works


def seed_list(manager: SessionManager, total: int) -> None:
    """``total`` sessions: :data:`LIST_USER` has 10 (2 messages each), other users 10 each."""
    for _ in range(LIST_USER_SESSIONS):
        session = manager.create_session(user_id=LIST_USER)
        session.add_message("user", CONTENT)
        session.add_message("assistant", CONTENT)
        manager.save(session)
    others = total - LIST_USER_SESSIONS
    users = max(others // SESSIONS_PER_USER, 1)
    bulk_create(manager.store, (f"user-{n % users}" for n in range(others)))


def copy_store(store: str, source: Path, target: Path) -> None:
    """Copy a closed store's files (not LMDB's lock file) to ``target``."""
    name = "kv.lmdb" if store == "lmdb" else "kv.db"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("lock.mdb"))
    assert (target / name).exists()


def _kvs_read(mgr: SessionManager, op: str, target: str) -> Callable[[], Any]:
    if op == "load":
        return lambda: mgr.get_session(target)
    if op == "load_last":
        return lambda: mgr.get_session(target, messages=WINDOW)
    if op == "messages_last":
        return lambda: mgr.get_messages(target, WINDOW)
    return lambda: mgr.get_sessions_for_user(target)


def _count(result: Any) -> int:
    """Records in a read's result: a session counts its header and its messages."""
    if result is None:
        return 0
    if isinstance(result, tuple):  # raw: (header, [messages])
        return 1 + len(result[1])
    if isinstance(result, list):  # sessions, (header, messages) pairs, or messages
        return sum(_count(item) if isinstance(item, tuple) or hasattr(item, "messages") else 1
                   for item in result)  # fmt: skip
    return 1 + len(result.messages)  # a Session


#: The raw readers' decoders: ``"codec"`` = kvsessions' own (``decode_header`` and the batch
#: ``decode_messages``), the §8 reference ("raw read + the same decoder"); ``"json"`` =
#: plain ``orjson.loads`` of each record into dicts (an informational extra).
DECODERS = ("codec", "json")


def _json_header(data: bytes) -> Any:
    return _loads(data[2:])


def _json_messages(rows: Iterable[tuple[bytes, bytes]]) -> list[Any]:
    return [_loads(value[2:]) for _, value in rows]


def _json_values(rows: Iterable[tuple[bytes]]) -> list[Any]:
    return [_loads(value[2:]) for (value,) in rows]


def _decoders(decoder: str) -> tuple[Callable[[bytes], Any], Callable[[Any], list[Any]]]:
    """(header decoder, decoder of a list of ``(key, value)`` message rows)."""
    if decoder == "codec":
        return decode_header, decode_messages
    if decoder == "json":
        return _json_header, _json_messages
    raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")


class _LMDBReads:
    """Reads of kvsessions' records straight from LMDB (``close`` may be called twice)."""

    def __init__(self, path: Path) -> None:
        self.env = lmdb.open(
            str(path / "kv.lmdb"), map_size=LMDB_MAP_SIZE, readahead=False, max_dbs=0
        )

    def close(self) -> None:
        self.env.close()

    def op(self, op: str, target: str, decoder: str = "codec") -> Callable[[], Any]:
        """``op`` on ``target``, its records decoded by ``decoder`` (see :data:`DECODERS`)."""
        env, rows_of = self.env, _lmdb_rows
        header_of, messages_of = _decoders(decoder)
        if op == "list":
            start, stop = keys.user_range(target)
            fixed = len(start) + 8

            def listing() -> list[tuple[Any, list[Any]]]:
                with env.begin() as txn:
                    index = _lmdb_keys(txn, start, stop)
                    sids = [keys.parse_index_sid(key, fixed) for key in index]
                    found = [
                        (txn.get(keys.header_key(sid)), rows_of(txn, *keys.message_range(sid)))
                        for sid in sids
                    ]
                return [(header_of(h), messages_of(rows)) for h, rows in found]

            return listing
        hkey = keys.header_key(target)
        first, end = keys.message_range(target)
        if op == "messages_last":

            def last_messages() -> list[Any]:
                with env.begin() as txn:
                    rows = rows_of(txn, first, end, WINDOW)
                return messages_of(rows)

            return last_messages
        limit = WINDOW if op == "load_last" else None

        def load() -> tuple[Any, list[Any]]:
            with env.begin() as txn:
                header = txn.get(hkey)
                rows = rows_of(txn, first, end, limit)
            return header_of(header), messages_of(rows)

        return load


def _lmdb_keys(
    txn: lmdb.Transaction, start: bytes, stop: bytes, limit: int | None = None
) -> list[bytes]:
    """Keys of ``start <= key < stop`` (the first ``limit`` of them)."""
    cursor, found = txn.cursor(), []
    if cursor.set_range(start):
        for key in cursor.iternext(values=False):
            if key >= stop:
                break
            found.append(key)
            if len(found) == limit:
                break
    return found


def _lmdb_rows(
    txn: lmdb.Transaction, start: bytes, stop: bytes, last: int | None = None
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of ``start <= key < stop`` in key order; with ``last``, only the last
    ones (read by a reverse scan)."""
    cursor, found = txn.cursor(), []
    if last is None:
        if cursor.set_range(start):
            for item in cursor:
                if item[0] >= stop:
                    break
                found.append(item)
        return found
    more = cursor.prev() if cursor.set_range(stop) else cursor.last()
    while more and len(found) < last:
        key = cursor.key()
        if key < start:
            break
        found.append((key, cursor.value()))
        more = cursor.prev()
    found.reverse()
    return found


class _SQLiteReads:
    """Reads of kvsessions' records straight from SQLite (``close`` may be called twice).

    kvsessions' decoder takes ``(key, value)`` rows, so its reads select ``k, v``; the
    plain-JSON ones select only ``v`` (the least they need).
    """

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path / "kv.db", isolation_level=None)

    def close(self) -> None:
        self.conn.close()

    def op(self, op: str, target: str, decoder: str = "codec") -> Callable[[], Any]:
        """``op`` on ``target``, its records decoded by ``decoder`` (see :data:`DECODERS`)."""
        execute, t = self.conn.execute, SQLITE_TABLE
        header_of, messages_of = _decoders(decoder)
        c = "k, v"
        if decoder == "json":
            c, messages_of = "v", _json_values
        get = f"SELECT v FROM {t} WHERE k = ?"
        scan = f"SELECT {c} FROM {t} WHERE k >= ? AND k < ? ORDER BY k"
        last = f"SELECT {c} FROM {t} WHERE k >= ? AND k < ? ORDER BY k DESC LIMIT {WINDOW}"
        if op == "list":
            start, stop = keys.user_range(target)
            fixed = len(start) + 8
            index = f"SELECT k FROM {t} WHERE k >= ? AND k < ? ORDER BY k"

            def listing() -> list[tuple[Any, list[Any]]]:
                execute("BEGIN")
                rows = execute(index, (start, stop)).fetchall()
                found = []
                for (key,) in rows:
                    sid = keys.parse_index_sid(key, fixed)
                    header = execute(get, (keys.header_key(sid),)).fetchone()[0]
                    found.append((header, execute(scan, keys.message_range(sid)).fetchall()))
                execute("COMMIT")
                return [(header_of(h), messages_of(msgs)) for h, msgs in found]

            return listing
        hkey = keys.header_key(target)
        bounds = keys.message_range(target)
        if op == "messages_last":

            def last_messages() -> list[Any]:
                rows = execute(last, bounds).fetchall()  # one statement: its own snapshot
                rows.reverse()
                return messages_of(rows)

            return last_messages
        messages = last if op == "load_last" else scan

        def load() -> tuple[Any, list[Any]]:
            execute("BEGIN")
            header = execute(get, (hkey,)).fetchone()[0]
            rows = execute(messages, bounds).fetchall()
            execute("COMMIT")
            if op == "load_last":
                rows.reverse()
            return header_of(header), messages_of(rows)

        return load


# -- raw engines: writes -----------------------------------------------------------------------


def _message_key(sid: bytes, seq: int) -> bytes:
    return b"m" + sid + b"\x00" + _U64.pack(seq)


class _Records:
    """The records ``rawjson`` writes: ``message(seq)`` and ``header(next_seq)``.

    (The ``raw`` reference writes constant bytes with no call at all: its ops below are
    written out apart from these so that it does nothing but drive the engine.)
    """

    def __init__(self, message: Callable[[int], bytes], header: Callable[[int], bytes]) -> None:
        self.message, self.header = message, header


def _encoded_records() -> _Records:
    """Records built as a store must: the clock read, the message and the header encoded."""
    now_us, dumps = _micros_now, orjson.dumps
    fields = {
        "user_id": "user-1", "created_at": now_us(), "updated_at": 0, "status": "active",
        "version": 0, "next_seq": 0, "count": 0, "metadata": {}, "state": {}, "recent": [],
    }  # fmt: skip

    def message(seq: int) -> bytes:
        return b"K\x01" + dumps({"r": "user", "c": CONTENT, "t": now_us(), "x": {}, "q": seq})

    def header(next_seq: int) -> bytes:
        fields["updated_at"] = now_us()
        fields["version"] += 1
        fields["next_seq"] = fields["count"] = next_seq
        return b"K\x01" + dumps(fields)

    return _Records(message, header)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros_now() -> int:
    delta = utcnow() - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _index_keys(sid: bytes, n: int) -> tuple[bytes, bytes]:
    """A user-index key and an activity-index key for a new session, as kvsessions lays them."""
    stamp = _U64.pack(1_700_000_000_000_000 + n)
    user = f"user-{n % 100}".encode()
    return b"i" + user + b"\x00" + stamp + sid + b"\x00", b"aA" + stamp + sid + b"\x00"


class _LMDBRaw:
    def __init__(self, path: Path, durability: str) -> None:
        full = durability == "full"
        self.env = lmdb.open(
            str(path / "raw.lmdb"), map_size=LMDB_MAP_SIZE, sync=full, metasync=full
        )

    def append(self, history: int, records: _Records | None) -> Workload:
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

        def encoding_op() -> None:
            nonlocal seq
            with env.begin(write=True) as txn:
                txn.put(_message_key(sid, seq), message(seq))
                txn.put(hkey, header(seq + 1))
            seq += 1

        if records is None:
            return Workload(op, env.close)
        message, header = records.message, records.header
        return Workload(encoding_op, env.close)

    def create(self, history: int, records: _Records | None) -> Workload:
        env, counter = self.env, iter(range(sys.maxsize))

        def op(header: bytes = RAW_HEADER) -> None:
            sid = uuid.uuid4().hex.encode()
            user_key, activity_key = _index_keys(sid, next(counter))
            with env.begin(write=True) as txn:
                txn.put(b"h" + sid + b"\x00", header)
                txn.put(user_key, b"")
                txn.put(activity_key, b"")

        if records is None:
            return Workload(op, env.close)
        encode = records.header
        return Workload(lambda: op(encode(0)), env.close)


class _SQLiteRaw:
    def __init__(self, path: Path, durability: str) -> None:
        self.conn = conn = sqlite3.connect(path / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        conn.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def append(self, history: int, records: _Records | None) -> Workload:
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

        def encoding_op() -> None:
            nonlocal seq
            execute("BEGIN")
            execute("INSERT INTO kv VALUES (?, ?)", (_message_key(sid, seq), message(seq)))
            execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (hkey, header(seq + 1)))
            execute("COMMIT")
            seq += 1

        if records is None:
            return Workload(op, conn.close)
        message, header = records.message, records.header
        return Workload(encoding_op, conn.close)

    def create(self, history: int, records: _Records | None) -> Workload:
        execute, counter = self.conn.execute, iter(range(sys.maxsize))

        def op(header: bytes = RAW_HEADER) -> None:
            sid = uuid.uuid4().hex.encode()
            user_key, activity_key = _index_keys(sid, next(counter))
            execute("BEGIN")
            execute("INSERT INTO kv VALUES (?, ?)", (b"h" + sid + b"\x00", header))
            execute("INSERT INTO kv VALUES (?, ?)", (user_key, b""))
            execute("INSERT INTO kv VALUES (?, ?)", (activity_key, b""))
            execute("COMMIT")

        if records is None:
            return Workload(op, self.conn.close)
        encode = records.header
        return Workload(lambda: op(encode(0)), self.conn.close)
