"""Redis: kvsessions vs a raw redis-py pipeline doing the same commands, and round trips.

    python benchmarks/redis_ops.py [--seconds 2]

Starts its own throw-away ``redis-server`` on a free loopback port (never 6379).  For
create, append + save (history 10) and load (100 messages), it times kvsessions and the
raw limit — one ``MULTI``/``EXEC`` pipeline with the same writes (create: the header and
two index entries; append: the message and the header), or for a load the same reads
plus the same decoder — in alternating slices, and counts round trips per operation from
the server's ``INFO commandstats``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from kvsessions import RedisSessionStore, SessionManager  # noqa: E402
from kvsessions.codec import decode_header, decode_message  # noqa: E402
from tests.redis_servers import RedisServer  # noqa: E402

CONTENT = "Could you summarise the last report and list the open action items, please?"


def rate(op: Callable[[], object], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        op()
        done += 1
    return done / (time.perf_counter() - started)


def round_trips(client: redis.Redis, op: Callable[[], object]) -> int:
    def calls() -> int:
        stats = client.info("commandstats")
        return sum(
            int(stats.get(f"cmdstat_{c}", {}).get("calls", 0))
            for c in ("evalsha", "eval", "exec", "script")
        )

    before = calls()
    op()
    return calls() - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            return run(server, args.seconds)
        finally:
            server.stop()


def run(server: RedisServer, seconds: float) -> int:
    client = redis.Redis.from_url(server.url)
    manager = SessionManager(store=RedisSessionStore(server.url, prefix="bench:"))
    counter = iter(range(10**9))

    def kvs_create() -> object:
        return manager.create_session(f"user{next(counter) % 100}")

    session = manager.create_session("appender")
    for _ in range(10):
        session.add_message("user", CONTENT)
    manager.save(session)

    def kvs_append() -> object:
        session.add_message("user", CONTENT)
        return manager.save(session)

    loaded = manager.create_session("loader")
    for _ in range(100):
        loaded.add_message("user", CONTENT)
    manager.save(loaded)

    def kvs_load() -> object:
        return manager.get_session(loaded.session_id)

    raw_header = b"K\x01" + b"h" * 250
    raw_message = b"K\x01" + CONTENT.encode() * 2

    def raw_create() -> object:
        sid = uuid.uuid4().hex.encode()
        pipe = client.pipeline(transaction=True)
        pipe.set(b"raw:{t}h" + sid, raw_header)
        pipe.zadd(b"raw:{t}uuser", {b"\x00" * 8 + sid: 0})
        pipe.zadd(b"raw:{t}aA", {b"\x00" * 8 + sid: 0})
        return pipe.execute()

    seq = iter(range(10**9))

    def raw_append() -> object:
        pipe = client.pipeline(transaction=True)
        pipe.zadd(b"raw:{t}m1", {next(seq).to_bytes(8, "big") + raw_message: 0})
        pipe.set(b"raw:{t}h1", raw_header)
        return pipe.execute()

    real_header = client.get(next(iter(client.scan_iter(match="bench:*h*"))))
    for i in range(100):
        client.zadd(
            b"raw:{t}m2",
            {
                i.to_bytes(8, "big")
                + b"K\x01"
                + b'{"r":"user","c":"%s","t":1,"x":{},"q":%d}' % (CONTENT.encode(), i): 0
            },
        )
    client.set(b"raw:{t}h2", real_header)

    def raw_load() -> object:
        pipe = client.pipeline(transaction=True)
        pipe.get(b"raw:{t}h2")
        pipe.zrange(b"raw:{t}m2", 0, -1)
        head, members = pipe.execute()
        decode_header(head)
        return [decode_message(member[8:]) for member in members]

    print(
        f"Redis {client.info('server')['redis_version']} on {server.address}, "
        f"redis-py {redis.__version__} ({_parser()}); {seconds}s per side"
    )
    print(f"{'operation':<18} {'kvsessions/s':>12} {'raw/s':>8} {'ratio':>6} {'round trips':>12}")
    for name, ours, raw in (
        ("create", kvs_create, raw_create),
        ("append + save", kvs_append, raw_append),
        ("load 100 messages", kvs_load, raw_load),
    ):
        kvs_rate = raw_rate = 0.0
        for _ in range(4):  # alternate, so background load hits both alike
            kvs_rate += rate(ours, seconds / 4) / 4
            raw_rate += rate(raw, seconds / 4) / 4
        trips = round_trips(client, ours)
        print(
            f"{name:<18} {kvs_rate:>12,.0f} {raw_rate:>8,.0f} {kvs_rate / raw_rate:>6.2f} "
            f"{trips:>12}"
        )
    return 0


def _parser() -> str:
    """Which reply parser redis-py uses: hiredis (``kvsessions[redis-fast]``) or its own."""
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        return "its Python reply parser"
    import hiredis

    return f"hiredis {hiredis.__version__}"


if __name__ == "__main__":
    sys.exit(main())
