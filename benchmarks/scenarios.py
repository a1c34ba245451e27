"""The one-shot benchmark cases: archive_inactive, two processes appending, peak memory.

Each function here runs inside one case's child process (``run.py --child``) and returns
its figures as a dict; :func:`lost_writes` and :func:`rss` start further processes of
their own (``python scenarios.py --worker`` / ``--rss``).

``archive``
    ``archive_inactive(days=30)`` over N sessions of which half were last saved 60 days
    ago (seeded as ``create_session`` writes them, by :func:`workloads.bulk_create`), timed
    against the raw engine doing the same archive (same index range, same header and index
    writes, the same 512 sessions per commit: the reference of the target), and against
    the raw engine only scanning that index range (DESIGN.md §8's literal wording, which
    compares a write-everything operation with a read-only scan: reported, not comparable).
    Every round works on a fresh copy of the seeded store.
``lost_writes``
    Two processes each run ``get_session -> add one message -> save`` N times on one
    session, started together; throughput and how many of the 2N messages the session
    kept.  ``op == "lost"`` loads the whole (growing) session every cycle; ``"lost_window"``
    loads only the header (``get_session(id, messages=0)``; the append still lands after the
    stored messages).  The raw limit (:class:`_RawAppender`) does the same reads and writes
    with the engine directly: a read transaction getting the header (and, for "lost", every
    message), decoded with kvsessions' decoders (``raw``) or plain orjson (``rawjson``,
    informational); then a write transaction that reads the header and the messages the
    other process stored since the load (what kvsessions' save reads after a conflict),
    writes the message at the header's next seq and rewrites the header.
``rss``
    Peak RSS (``ru_maxrss``) of loading / appending to / reading the last 20 of an
    N-message session, each in a fresh process, minus its peak after imports and opening
    the store; plus what stays resident afterwards (anonymous memory and mapped file pages).
    ``ru_maxrss`` also counts the RSS of the process that started the child (Linux carries
    it over ``exec``), so :func:`rss_child` must be started by a small process (run.py's
    main process); VmHWM, reset right before the operation, is reported as a check.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import lmdb
import orjson
from workloads import (
    CONTENT,
    LMDB_MAP_SIZE,
    RAW_READERS,
    SQLITE_TABLE,
    WINDOW,
    _decoders,
    _kvs_read,
    _lmdb_keys,
    _lmdb_rows,
    _LMDBReads,
    _SQLiteReads,
    bulk_create,
    copy_store,
    manager,
    seed_history,
)

from kvsessions import RedisSessionStore, SessionManager, SessionStatus, keys
from kvsessions.codec import to_micros
from kvsessions.model import utcnow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PREFIX = b"K\x01"  # kvsessions' record prefix (magic + format version)
ARCHIVE_CHUNK = 512  # sessions per commit, as kvsessions' archive_inactive
INACTIVE_DAYS = 30


def _now_us() -> int:
    return to_micros(utcnow())


# -- archive_inactive -------------------------------------------------------------------------


def archive(spec: dict[str, Any]) -> dict[str, Any]:
    """archive_inactive over ``spec["history"]`` sessions (half inactive), kvs vs raw."""
    store, durability, total = spec["store"], spec["durability"], spec["history"]
    base = Path(spec["path"])
    started = time.perf_counter()
    template = base / "template"
    old = seed_inactive(store, durability, template, total)
    setup_s = time.perf_counter() - started
    times: dict[str, list[float]] = {"kvs": [], "raw_scan": [], "raw_archive": []}
    counts: dict[str, set[int]] = {name: set() for name in times}
    for round_ in range(spec.get("rounds", 1)):
        where = base / f"kvs{round_}"
        copy_store(store, template, where)
        mgr = manager(store, durability, where)
        clock = time.perf_counter()
        counts["kvs"].add(mgr.archive_inactive(days=INACTIVE_DAYS))
        times["kvs"].append(time.perf_counter() - clock)
        mgr.close()
        where = base / f"raw{round_}"
        copy_store(store, template, where)
        raw = raw_archiver(store, durability, where)
        cutoff = cutoff_us()
        for name, run in (("raw_scan", raw.scan), ("raw_archive", raw.archive)):
            clock = time.perf_counter()
            counts[name].add(run(cutoff))
            times[name].append(time.perf_counter() - clock)
        raw.close()
    if any(found != {old} for found in counts.values()):
        raise RuntimeError(f"archive: expected {old} inactive sessions everywhere, got {counts}")
    best = {name: min(values) for name, values in times.items()}
    return {
        "setup_s": setup_s,
        "sessions": total,
        "archived": old,
        "seconds": times,
        "kvs_s": best["kvs"],
        "raw_scan_s": best["raw_scan"],
        "raw_archive_s": best["raw_archive"],
    }


def seed_inactive(store: str, durability: str, path: Path, total: int) -> int:
    """``total`` sessions in a new store, the first half last saved 60 days ago; that half."""
    seeded = manager(store, durability, path)
    users = max(total // 10, 1)
    long_ago = utcnow() - timedelta(days=2 * INACTIVE_DAYS)
    old = total // 2
    bulk_create(seeded.store, (f"user-{n % users}" for n in range(old)), clock=lambda: long_ago)
    bulk_create(seeded.store, (f"user-{n % users}" for n in range(old, total)))
    seeded.close()
    return old


def raw_archiver(store: str, durability: str, path: Path) -> Any:
    """The raw engine on a store's copy: ``.scan(cutoff)``, ``.archive(cutoff)``, ``.close()``."""
    return (_LMDBArchive if store == "lmdb" else _SQLiteArchive)(path, durability)


def cutoff_us() -> int:
    """``archive_inactive(days=30)``'s cutoff, now."""
    return to_micros(utcnow() - timedelta(days=INACTIVE_DAYS))


class _LMDBArchive:
    def __init__(self, path: Path, durability: str) -> None:
        full = durability == "full"
        self.env = lmdb.open(
            str(path / "kv.lmdb"), map_size=LMDB_MAP_SIZE, sync=full, metasync=full, max_dbs=0
        )

    def close(self) -> None:
        self.env.close()

    def scan(self, cutoff: int) -> int:
        """Read the activity index range of sessions possibly inactive since ``cutoff``."""
        start, stop = keys.activity_range(SessionStatus.ACTIVE, cutoff)
        with self.env.begin() as txn:
            return len(_lmdb_keys(txn, start, stop))

    def archive(self, cutoff: int) -> int:
        start, stop = keys.activity_range(SessionStatus.ACTIVE, cutoff)
        archived = 0
        while True:
            with self.env.begin(write=True) as txn:
                index = _lmdb_keys(txn, start, stop, ARCHIVE_CHUNK)
                if not index:
                    return archived
                for key in index:
                    sid = keys.parse_index_sid(key, 10)
                    hkey = keys.header_key(sid)
                    new = _archived(txn.get(hkey), cutoff)
                    if new is not None:
                        txn.put(hkey, new[0])
                        txn.put(keys.activity_key(SessionStatus.ARCHIVED, new[1], sid), b"")
                        txn.delete(key)
                        archived += 1
            start = index[-1] + b"\x00"


def _archived(header: bytes, cutoff: int) -> tuple[bytes, int] | None:
    """The header record archived (and its updated_at), or None if it is still active."""
    record = orjson.loads(header[2:])
    if record["updated_at"] >= cutoff:
        return None
    record["status"] = "archived"
    record["version"] += 1
    return PREFIX + orjson.dumps(record), record["updated_at"]


class _SQLiteArchive:
    def __init__(self, path: Path, durability: str) -> None:
        self.conn = sqlite3.connect(path / "kv.db", isolation_level=None)
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")

    def close(self) -> None:
        self.conn.close()

    def scan(self, cutoff: int) -> int:
        start, stop = keys.activity_range(SessionStatus.ACTIVE, cutoff)
        sql = f"SELECT k FROM {SQLITE_TABLE} WHERE k >= ? AND k < ? ORDER BY k"
        return len(self.conn.execute(sql, (start, stop)).fetchall())

    def archive(self, cutoff: int) -> int:
        execute, t = self.conn.execute, SQLITE_TABLE
        start, stop = keys.activity_range(SessionStatus.ACTIVE, cutoff)
        index_sql = f"SELECT k FROM {t} WHERE k >= ? AND k < ? ORDER BY k LIMIT {ARCHIVE_CHUNK}"
        archived = 0
        while True:
            execute("BEGIN IMMEDIATE")
            index = [key for (key,) in execute(index_sql, (start, stop)).fetchall()]
            if not index:
                execute("COMMIT")
                return archived
            put, delete = [], []
            for key in index:
                sid = keys.parse_index_sid(key, 10)
                hkey = keys.header_key(sid)
                header = execute(f"SELECT v FROM {t} WHERE k = ?", (hkey,)).fetchone()[0]
                new = _archived(header, cutoff)
                if new is not None:
                    put += (
                        (hkey, new[0]),
                        (keys.activity_key(SessionStatus.ARCHIVED, new[1], sid), b""),
                    )
                    delete.append((key,))
            self.conn.executemany(f"DELETE FROM {t} WHERE k = ?", delete)
            self.conn.executemany(f"INSERT OR REPLACE INTO {t} (k, v) VALUES (?, ?)", put)
            execute("COMMIT")
            archived += len(delete)
            start = index[-1] + b"\x00"


# -- two processes appending to one session ---------------------------------------------------

SHARED = "shared-session"


def lost_writes(spec: dict[str, Any]) -> dict[str, Any]:
    """Each impl: ``rounds`` races of 2 processes x ``appends`` load-add-save cycles."""
    store, base = spec["store"], Path(spec["path"])
    server = None
    if store == "redis":
        sys.path.insert(0, str(ROOT))
        from tests.redis_servers import RedisServer

        server = RedisServer(base / "redis").start()
    try:
        out: dict[str, Any] = {}
        for round_ in range(spec.get("rounds", 1)):
            for impl in spec["impls"]:
                where = base / f"{impl}{round_}"
                where.mkdir()
                job = {
                    "impl": impl,
                    "store": store,
                    "durability": spec["durability"],
                    "path": str(where),
                    "url": server.url if server else None,
                    "prefix": f"b{round_}{impl}:",
                    "appends": spec["appends"],
                    "window": spec.get("op") == "lost_window",
                }
                result = _race(job)
                mine = out.setdefault(impl, {"ops": 0, "seconds": 0.0, "rounds": []})
                mine["ops"] += result["ops"]
                mine["seconds"] += result["seconds"]
                mine["rounds"].append(result)
        for figures in out.values():
            figures["ops_per_s"] = figures["ops"] / figures["seconds"]
            figures["kept"] = min(r["kept"] for r in figures["rounds"])
            figures["expected"] = 2 * spec["appends"]
            figures["errors"] = sum(r["errors"] for r in figures["rounds"])
        return out
    finally:
        if server is not None:
            server.stop()


def _race(job: dict[str, Any]) -> dict[str, Any]:
    appender = _appender(job, None)
    appender.prepare()
    appender.close()
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps({**job, "worker": n})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (0, 1)
    ]
    for worker in workers:
        line = worker.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            _, err = worker.communicate()
            raise RuntimeError(f"lost-writes worker failed to start: {err.strip()[-400:]}")
    Path(job["path"], "go").touch()
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=1200)
        if worker.returncode != 0:
            raise RuntimeError(f"lost-writes worker failed: {stderr.strip()[-400:]}")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    counter = _appender(job, None)
    kept, distinct = counter.count()
    counter.close()
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return {
        "ops": sum(r["done"] for r in reports),
        "seconds": seconds,
        "kept": kept,
        "distinct": distinct,
        "errors": sum(r["errors"] for r in reports),
        "error_sample": next((r["error_sample"] for r in reports if r["error_sample"]), None),
    }


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One racing process: open, say ready, wait for the start signal, run the cycles."""
    appender = _appender(job, job["worker"])
    print("ready", flush=True)
    go = Path(job["path"], "go")
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.0005)
    done = errors = 0
    sample = None
    start = time.time()
    for number in range(job["appends"]):
        try:
            appender.cycle(number)
            done += 1
        except Exception as exc:  # a peer may fail under contention: count it, go on
            errors += 1
            sample = sample or f"{type(exc).__name__}: {exc}"[:200]
    end = time.time()
    appender.close()
    return {"start": start, "end": end, "done": done, "errors": errors, "error_sample": sample}


def _appender(job: dict[str, Any], worker_number: int | None) -> Any:
    impl = job["impl"]
    if impl.startswith("peer-"):
        return _PeerAppender(job, worker_number)
    if impl == "kvs":
        return _KVSAppender(job, worker_number)
    return {"lmdb": _RawLMDBAppender, "sqlite": _RawSQLiteAppender, "redis": _RawRedisAppender}[
        job["store"]
    ](job, worker_number)


class _KVSAppender:
    """``get_session`` (whole, or ``messages=0`` with ``job["window"]``) -> add -> save."""

    def __init__(self, job: dict[str, Any], worker_number: int | None) -> None:
        if job["store"] == "redis":
            self.mgr = SessionManager(RedisSessionStore(job["url"], prefix=job["prefix"]))
        else:
            self.mgr = manager(job["store"], job["durability"], Path(job["path"]))
        self.worker = worker_number
        self.window = 0 if job.get("window") else None

    def prepare(self) -> None:
        self.mgr.create_session(user_id="user-1", session_id=SHARED)

    def cycle(self, number: int) -> None:
        session = self.mgr.get_session(SHARED, messages=self.window)
        assert session is not None
        session.add_message("user", f"{self.worker}-{number}")
        self.mgr.save(session)

    def count(self) -> tuple[int, int]:
        session = self.mgr.get_session(SHARED)
        assert session is not None
        return session.message_count, len({m.content for m in session.messages})

    def close(self) -> None:
        self.mgr.close()


def _raw_header() -> dict[str, Any]:
    """A header with kvsessions' header fields (so ``codec.decode_header`` reads it)."""
    now = _now_us()
    return {
        "user_id": "user-1", "created_at": now, "updated_at": now, "status": "active",
        "version": 1, "next_seq": 0, "count": 0, "metadata": {}, "state": {}, "recent": [],
    }  # fmt: skip


def _raw_message(text: str, seq: int) -> bytes:
    return PREFIX + orjson.dumps({"r": "user", "c": text, "t": _now_us(), "x": {}, "q": seq})


def _raw_appended(header: bytes, text: str) -> tuple[int, bytes, bytes]:
    """The seq for a new message, its record, and the header rewritten after it."""
    record = orjson.loads(header[2:])
    seq = record["next_seq"]
    record.update(next_seq=seq + 1, count=record["count"] + 1, version=record["version"] + 1)
    record["updated_at"] = _now_us()
    return seq, _raw_message(text, seq), PREFIX + orjson.dumps(record)


def _next_seq(header: Any) -> int:
    """``next_seq`` of a decoded header (a ``HeaderRecord``, or a plain-JSON dict)."""
    return header["next_seq"] if type(header) is dict else header.next_seq  # type: ignore[no-any-return]


_HKEY = keys.header_key(SHARED)
_MFIRST, _MEND = keys.message_range(SHARED)


class _RawAppender:
    """The raw limit of kvsessions' cycle, doing the same reads and writes per cycle.

    Load: one read transaction getting the header and (unless ``job["window"]``) every
    message, decoded with kvsessions' decoders (``impl == "raw"``) or plain orjson
    (``"rawjson"``).  Save: one write transaction that reads the header, reads (and
    decodes) the messages the other process added since the load -- what kvsessions' save
    reads after a conflict to keep the held session complete -- then writes the message at
    the header's next seq and rewrites the header.
    """

    def __init__(self, job: dict[str, Any], worker_number: int | None) -> None:
        self.worker = worker_number
        self.window = bool(job.get("window"))
        self.header_of, self.messages_of = _decoders(RAW_READERS[job["impl"]])
        self.known = 0  # next_seq as of the last load
        self.held: list[Any] = []  # the loaded messages (kept, as a caller would)

    def cycle(self, number: int) -> None:
        header, rows = self._read(not self.window)
        self.known = _next_seq(self.header_of(header))
        self.held = self.messages_of(rows)
        self.held += self._append(f"{self.worker}-{number}")

    def count(self) -> tuple[int, int]:
        _, rows = self._read(True)
        contents = [orjson.loads(value[2:])["c"] for _, value in rows]
        return len(contents), len(set(contents))

    def _missed(self, current_next: int) -> tuple[bytes, bytes] | None:
        """Key range of the messages stored since our load, if any."""
        if current_next <= self.known:
            return None
        return keys.message_range(SHARED, self.known, current_next)

    def _read(self, messages: bool) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        raise NotImplementedError

    def _append(self, text: str) -> list[Any]:
        raise NotImplementedError


class _RawLMDBAppender(_RawAppender):
    def __init__(self, job: dict[str, Any], worker_number: int | None) -> None:
        super().__init__(job, worker_number)
        full = job["durability"] == "full"
        self.env = lmdb.open(
            str(Path(job["path"], "raw.lmdb")),
            map_size=LMDB_MAP_SIZE,
            sync=full,
            metasync=full,
            max_dbs=0,
        )

    def prepare(self) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(_HKEY, PREFIX + orjson.dumps(_raw_header()))

    def _read(self, messages: bool) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        with self.env.begin() as txn:
            return txn.get(_HKEY), _lmdb_rows(txn, _MFIRST, _MEND) if messages else []

    def _append(self, text: str) -> list[Any]:
        with self.env.begin(write=True) as txn:
            seq, message, header = _raw_appended(txn.get(_HKEY), text)
            missed = self._missed(seq)
            rows = _lmdb_rows(txn, *missed) if missed else []
            txn.put(keys.message_key(SHARED, seq), message)
            txn.put(_HKEY, header)
        return self.messages_of(rows)

    def close(self) -> None:
        self.env.close()


class _RawSQLiteAppender(_RawAppender):
    def __init__(self, job: dict[str, Any], worker_number: int | None) -> None:
        super().__init__(job, worker_number)
        self.conn = conn = sqlite3.connect(
            Path(job["path"], "raw.db"), isolation_level=None, timeout=60
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if job['durability'] == 'full' else 'NORMAL'}")
        conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def prepare(self) -> None:
        self.conn.execute(
            "INSERT INTO kv VALUES (?, ?)", (_HKEY, PREFIX + orjson.dumps(_raw_header()))
        )

    def _read(self, messages: bool) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        execute = self.conn.execute
        if not messages:  # one statement: its own snapshot
            return execute("SELECT v FROM kv WHERE k = ?", (_HKEY,)).fetchone()[0], []
        execute("BEGIN")
        header = execute("SELECT v FROM kv WHERE k = ?", (_HKEY,)).fetchone()[0]
        rows = execute("SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k", (_MFIRST, _MEND))
        rows = rows.fetchall()
        execute("COMMIT")
        return header, rows

    def _append(self, text: str) -> list[Any]:
        execute = self.conn.execute
        execute("BEGIN IMMEDIATE")
        current = execute("SELECT v FROM kv WHERE k = ?", (_HKEY,)).fetchone()[0]
        seq, message, header = _raw_appended(current, text)
        missed = self._missed(seq)
        rows = []
        if missed:
            sql = "SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k"
            rows = execute(sql, missed).fetchall()
        execute("INSERT INTO kv VALUES (?, ?)", (keys.message_key(SHARED, seq), message))
        execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (_HKEY, header))
        execute("COMMIT")
        return self.messages_of(rows)

    def close(self) -> None:
        self.conn.close()


# One round trip per append, as kvsessions: the server assigns the seq, stores the message
# (its record completed with that seq) and returns the messages stored since our load.
_REDIS_APPEND = """
local seq = redis.call('HINCRBY', KEYS[1], 'next_seq', 1) - 1
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1] .. seq .. '}')
local missed = {}
if seq > tonumber(ARGV[3]) then
  missed = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[3], seq - 1)
end
return {seq, missed}
"""


class _RawRedisAppender(_RawAppender):
    """Redis: the header is a hash (its fields come back decoded), messages a sorted set
    scored by seq whose members are kvsessions-shaped message records."""

    def __init__(self, job: dict[str, Any], worker_number: int | None) -> None:
        import redis

        super().__init__(job, worker_number)
        self.client = redis.Redis.from_url(job["url"])
        self.append = self.client.register_script(_REDIS_APPEND)
        tag = job["prefix"].encode() + b"{s}"
        self.hkey, self.mkey = tag + b"h", tag + b"m"

    def prepare(self) -> None:
        self.client.hset(self.hkey, mapping={"next_seq": 0, "count": 0, "version": 1})

    def cycle(self, number: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.hkey)
        if not self.window:
            pipe.zrange(self.mkey, 0, -1)
        header, *members = pipe.execute()
        self.known = int(header[b"next_seq"])
        self.held = self.messages_of([(m, m) for m in members[0]]) if members else []
        text = f"{self.worker}-{number}"
        head = b'%s{"r":"user","c":"%s","t":%d,"x":{},"q":' % (PREFIX, text.encode(), _now_us())
        _, missed = self.append(keys=[self.hkey, self.mkey], args=[head, _now_us(), self.known])
        self.held += self.messages_of([(m, m) for m in missed])

    def count(self) -> tuple[int, int]:
        members = self.client.zrange(self.mkey, 0, -1)
        contents = [orjson.loads(member[2:])["c"] for member in members]
        return len(contents), len(set(contents))

    def close(self) -> None:
        self.client.close()


class _PeerAppender:
    def __init__(self, job: dict[str, Any], worker_number: int | None) -> None:
        import peers

        self.peers, self.peer, self.path = peers, job["impl"], Path(job["path"])
        self._cycle: Callable[[int], None] | None = None
        self._close: Callable[[], None] = lambda: None
        if worker_number is not None:
            self._cycle, self._close = peers.appender(self.peer, self.path, worker_number)

    def prepare(self) -> None:
        store = self.peers._open(self.peer, self.path)
        self.peers.seed(store, 0)
        store.close()

    def cycle(self, number: int) -> None:
        assert self._cycle is not None
        self._cycle(number)

    def count(self) -> tuple[int, int]:
        return self.peers.count(self.peer, self.path)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._close()


# -- peak RSS ----------------------------------------------------------------------------------

RSS_OPS = [
    "load", "raw_load", "raw_load_json", "load_last", "messages_last", "append_window",
    "append_loaded",
]  # fmt: skip
RSS_LABELS = {
    "load": "get_session(id): all messages",
    "raw_load": "raw read + kvsessions' decoders of all",
    "raw_load_json": "raw read + orjson decode of all",
    "load_last": "get_session(id, messages=20)",
    "messages_last": "get_messages(id, 20)",
    "append_window": "get_session(id, messages=20) + add_message + save",
    "append_loaded": "get_session(id) + add_message + save",
}


def rss_seed(spec: dict[str, Any]) -> dict[str, Any]:
    """Seed the N-message session the :func:`rss_child` measurements read (in ``path``)."""
    store, size, base = spec["store"], spec["history"], Path(spec["path"])
    started = time.perf_counter()
    mgr = manager(store, "fast", base)
    sid = seed_history(mgr, size)
    mgr.close()
    store_bytes = sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
    return {"setup_s": time.perf_counter() - started, "store_mb": store_bytes / 2**20, "sid": sid}


def _status_kb() -> dict[str, int]:
    """Current and peak RSS, anonymous and file-backed resident memory (KiB), from /proc."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_child(job: dict[str, Any]) -> dict[str, Any]:
    """One measurement: open, baseline, run the operation once, report the growth (MiB)."""
    store, path, sid, op = job["store"], Path(job["path"]), job["sid"], job["op"]
    if op in ("raw_load", "raw_load_json"):
        reader = (_LMDBReads if store == "lmdb" else _SQLiteReads)(path)
        run: Callable[[], Any] = reader.op(
            "load", sid, "json" if op == "raw_load_json" else "codec"
        )
        close = reader.close
    else:
        mgr = manager(store, "fast", path)
        close = mgr.close
        run = _rss_op(mgr, op, sid)
    gc.collect()
    hwm_reset = _reset_peak()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = _status_kb()
    result = run()
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    after = _status_kb()
    records = len(result[1]) if isinstance(result, tuple) else _records(result)
    del result
    close()
    mib = 1024
    return {
        "records": records,
        "peak_mb": (peak_after - peak_before) / mib,
        "retained_mb": (after["VmRSS"] - before["VmRSS"]) / mib,
        "retained_anon_mb": (after["RssAnon"] - before["RssAnon"]) / mib,
        "retained_file_mb": (after["RssFile"] - before["RssFile"]) / mib,
        "baseline_mb": peak_before / mib,
        # the same peak from VmHWM, reset just before the operation (None: not resettable)
        "hwm_peak_mb": (after["VmHWM"] - before["VmRSS"]) / mib if hwm_reset else None,
    }


def _records(result: Any) -> int:
    if isinstance(result, list):
        return len(result)
    return len(result.messages)


def _rss_op(mgr: SessionManager, op: str, sid: str) -> Callable[[], Any]:
    if op in ("load", "load_last", "messages_last"):
        return _kvs_read(mgr, op, sid)

    def append() -> Any:
        session = mgr.get_session(sid, messages=WINDOW if op == "append_window" else None)
        assert session is not None
        session.add_message("user", CONTENT)
        mgr.save(session)
        return session

    return append


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help="run one lost-writes worker (JSON job)")
    parser.add_argument("--rss", help="run one peak-RSS measurement (JSON job)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
    elif args.rss:
        print(json.dumps(rss_child(json.loads(args.rss))), flush=True)
    else:
        parser.error("run through benchmarks/run.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
