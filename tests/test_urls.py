"""``open_store(url)``: every URL form and option opens the store it names, or says why not."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
import redis

from kvsessions import (
    LMDBSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SessionManager,
    SQLiteSessionStore,
    StoreConfigError,
    StoreUnavailableError,
    open_store,
)
from kvsessions.urls import parse_store_url

from .redis_servers import RedisCluster, RedisServer, free_port


def round_trip(store: object) -> None:
    """A session saved through the store comes back (the store really works)."""
    with SessionManager(store=store) as manager:  # type: ignore[arg-type]
        session = manager.create_session("u1", metadata={"via": "url"})
        session.add_message("user", "hello")
        manager.save(session)
        again = manager.get_session(session.session_id)
        assert again is not None and [m.content for m in again.messages] == ["hello"]


def test_memory() -> None:
    store = open_store("memory://")
    assert type(store) is MemorySessionStore and store._ttl_us is None
    round_trip(store)
    assert open_store("memory://?ttl=90")._ttl_us == 90_000_000
    assert open_store("memory:")._ttl_us is None


def test_lmdb_absolute_with_options(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/a.lmdb?durability=fast&map_size=64MiB&ttl=2h"
    assert url.startswith("lmdb:///")  # three slashes: an absolute path
    store = open_store(url)
    assert type(store) is LMDBSessionStore
    assert Path(store.path) == tmp_path / "a.lmdb" and store.durability == "fast"
    assert store._kv._map_size == 64 * 2**20 and store._ttl_us == 7200 * 10**6
    round_trip(store)
    assert (tmp_path / "a.lmdb" / "data.mdb").is_file()


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("lmdb:rel/a.lmdb", "rel/a.lmdb"),
        ("lmdb://rel/b.lmdb", "rel/b.lmdb"),
        ("lmdb://./c.lmdb", "c.lmdb"),
        ("lmdb:with%20space%3F.lmdb", "with space?.lmdb"),  # percent-escapes decoded
        ("d.lmdb", "d.lmdb"),  # a plain path
        ("sqlite:rel/e.db", "rel/e.db"),
        ("sqlite://./f.db", "f.db"),
        ("g.sqlite", "g.sqlite"),
        ("h.sqlite3", "h.sqlite3"),
        ("./data:1.db", "data:1.db"),  # a colon in a plain path's first part: ./ first
    ],
)
def test_relative_paths_are_under_the_working_directory(
    url: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(url)
    round_trip(store)
    store.close()
    kind = LMDBSessionStore if where.endswith(".lmdb") else SQLiteSessionStore
    assert type(store) is kind
    assert (tmp_path / where).exists()


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_store_url("lmdb://~/x.lmdb").target == str(tmp_path / "x.lmdb")
    assert parse_store_url("~/y.db").target == str(tmp_path / "y.db")


def test_sqlite_table_and_options(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/app.db?table=chat&durability=fast&timeout=3&ttl=7d")
    assert type(store) is SQLiteSessionStore and store.durability == "fast"
    assert store._kv.table_name == "chat" and store._kv._timeout == 3.0
    assert store._ttl_us == 7 * 86400 * 10**6
    round_trip(store)
    store.close()
    with sqlite3.connect(tmp_path / "app.db") as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "chat" in tables and "sessions" not in tables
    default = open_store(f"sqlite://{tmp_path}/app.db")  # default table: sessions
    assert default._kv.table_name == "sessions"
    default.close()


def test_plain_paths_by_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "somedir").mkdir()
    assert parse_store_url(str(tmp_path / "somedir")).kind == "lmdb"  # an existing directory
    sqlite3.connect(tmp_path / "plainfile").execute("CREATE TABLE t (x)").connection.close()
    assert parse_store_url(str(tmp_path / "plainfile")).kind == "sqlite"  # SQLite header
    (tmp_path / "notes.txt").write_text("hello")
    for path in (tmp_path / "notes.txt", tmp_path / "missing"):
        with pytest.raises(StoreConfigError, match="neither an LMDB store directory nor"):
            parse_store_url(str(path))
    assert parse_store_url(tmp_path / "p.lmdb").kind == "lmdb"  # a Path works too


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://host/db", r"unknown store URL scheme 'mongodb'.*memory://, lmdb://"),
        ("lmbd:///x", "unknown store URL scheme 'lmbd'"),
        ("lmdb:///x?shards=4", r"unknown option 'shards' for lmdb://.*durability, map_size, ttl"),
        ("sqlite:///x.db?prefix=a", r"unknown option 'prefix'.*table, durability, ttl, timeout"),
        ("memory://?durability=full", r"unknown option 'durability'.*take ttl"),
        ("redis://h:1/0?table=x", r"unknown option 'table'.*prefix, ttl, shards"),
        ("lmdb:///x?durability=safe", "durability is full"),
        ("lmdb:///x?ttl=-3", "ttl is a positive number"),
        ("lmdb:///x?ttl=3w", "ttl is a positive number"),
        ("lmdb:///x?map_size=64GB", "map_size is a number of bytes"),
        ("redis://h:1/0?shards=0", "shards=.*positive whole number"),
        ("redis://h:1/0?timeout=soon", "timeout=.*positive number of seconds"),
        ("lmdb:///x?ttl=1&ttl=2", "given twice"),
        ("lmdb:///x?ttl=", "has no value"),
        ("lmdb:///x?ttl", r"write \?name=value"),
        ("memory://somewhere", "takes no path"),
        ("lmdb://", "names no path"),
        ("sqlite:?table=t", "names no path"),
        ("redis:///0", "names no host"),
        ("redis://h:1/zero", "database number"),
        ("redis://h:99999/0", "not a valid Redis URL"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis://h:1/0?db=2", "unknown option 'db'"),  # the path says the db
        ("", "non-empty str"),
    ],
)
def test_refused_with_what_is_accepted(url: str, message: str) -> None:
    with pytest.raises(StoreConfigError, match=message):
        open_store(url)


def test_messages_never_repeat_a_password() -> None:
    for url in ("redis://:hunter2@h:1/0?ttl=1&ttl=2", "redis://me:hunter2@h:1/x"):
        with pytest.raises(StoreConfigError) as caught:
            open_store(url)
        assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    assert "hunter2" not in parse_store_url("redis://:hunter2@h:1/0").display


def test_create_false_refuses_what_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="no LMDB store at"):
        open_store(f"lmdb://{tmp_path}/new.lmdb", create=False)
    with pytest.raises(StoreConfigError, match="no SQLite database at"):
        open_store(tmp_path / "new.db", create=False)
    assert list(tmp_path.iterdir()) == []  # nothing created
    open_store(f"sqlite://{tmp_path}/x.db?table=chat").close()
    with pytest.raises(StoreConfigError, match=r"no table 'sessions' \(its tables: 'chat'\)"):
        open_store(tmp_path / "x.db", create=False)
    open_store(f"sqlite://{tmp_path}/x.db?table=chat", create=False).close()
    open_store(f"lmdb://{tmp_path}/y.lmdb").close()
    open_store(f"lmdb://{tmp_path}/y.lmdb", create=False).close()


def test_redis_with_options(redis_server: RedisServer) -> None:
    prefix = f"urls-{uuid.uuid4().hex[:8]}:"
    store = open_store(f"{redis_server.url}?prefix={prefix}&ttl=1h&shards=4&timeout=3")
    assert type(store) is RedisSessionStore
    assert store.prefix == prefix and store.ttl == 3600 and store._kv._shards == 4
    assert store._kv._timeouts == (3.0, 2.0)
    round_trip(store)
    client = redis.Redis.from_url(redis_server.url)
    keys = [key for key in client.scan_iter(match=f"{prefix}*") if not key.endswith(b"!format")]
    assert keys and all(0 < client.pttl(key) <= 3_600_000 for key in keys)  # ttl reached it
    client.close()


def test_redis_passes_redis_py_options_through() -> None:
    spec = parse_store_url("rediss://:pw@h:6380/1?prefix=p:&ssl_cert_reqs=none&client_name=cli")
    assert spec.target == "rediss://:pw@h:6380/1?ssl_cert_reqs=none&client_name=cli"
    assert spec.options == {"prefix": "p:"}
    unix = parse_store_url("unix:///run/redis.sock?db=3&prefix=x:")
    assert unix.target == "unix:///run/redis.sock?db=3" and unix.options == {"prefix": "x:"}


def test_redis_down_is_unavailable_not_config() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?connect_timeout=0.5&timeout=0.5"
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1"):
        open_store(url)


def test_redis_cluster(redis_cluster: RedisCluster) -> None:
    prefix = f"urls-{uuid.uuid4().hex[:8]}:"
    store = open_store(f"{redis_cluster.url}?prefix={prefix}&shards=8")
    assert type(store) is RedisSessionStore and store._kv.cluster and store._kv._shards == 8
    round_trip(store)
