"""The Redis backend where a review found it fragile: TTLs, half-written commits, clear_all
against concurrent writers, cluster slot migration, URLs, constructor arguments, damaged
keys, huge limits and the blocking update() backoff.

Every test starts its own servers (the shared fixtures, or one of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import kvsessions.backends.redis as redis_backend
from kvsessions import (
    AsyncSessionManager,
    CorruptRecordError,
    RedisSessionStore,
    SessionManager,
    StoreConfigError,
    StoreUnavailableError,
)
from kvsessions.backends.base import READ_PLAN_BACKOFF_CAP
from kvsessions.backends.redis import RedisBackend, shard_tags

from .conftest import require_redis
from .redis_servers import RedisCluster, RedisServer, free_port


def fresh_prefix() -> str:
    return f"r{uuid.uuid4().hex[:10]}:"


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


def base_of(prefix: str, sid: str, shards: int = 16) -> bytes:
    """``P{T}``: where the keys of session ``sid`` live."""
    tag = shard_tags(shards)[zlib.crc32(sid.encode()) % shards]
    return prefix.encode() + b"{" + tag + b"}"


def sid_in_shard(shard: int, shards: int = 16) -> str:
    """A session id whose keys live under shard ``shard``."""
    n = 0
    while zlib.crc32(f"n{n}".encode()) % shards != shard:
        n += 1
    return f"n{n}"


def ours(c: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(c.scan_iter(match=prefix + "{*", count=1000))


# -- 1, 2: ttl -------------------------------------------------------------------------


def test_a_write_rearms_the_creation_index_too(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    manager = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix, ttl=1.0))
    session = manager.create_session("alice", session_id="s1")
    time.sleep(0.6)
    session.add_message("user", "still here")
    manager.save(session)
    assert client(redis_server).pttl(base_of(prefix, "s1") + b"c") > 700
    time.sleep(0.6)  # 1.2 s after creation, 0.6 s after the last write
    assert [s.session_id for s in manager.list_sessions(order="created").sessions] == ["s1"]
    listed = manager.list_sessions("alice", order="created").sessions
    assert [s.session_id for s in listed] == ["s1"]
    manager.close()


def test_without_ttl_a_commit_sends_no_expiry_work(redis_server: RedisServer) -> None:
    """ttl is fixed per prefix: with none, commits arm or clear no TTL (clearing one an
    earlier ttl left cost every commit about a sixth of its speed), so keys stay as
    they were written: without expiry."""
    prefix = fresh_prefix()
    manager = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix))
    session = manager.create_session("alice", session_id="s1")
    session.add_message("user", "first")
    manager.save(session)
    c = client(redis_server)
    assert {key: c.pttl(key) for key in ours(c, prefix)} == dict.fromkeys(ours(c, prefix), -1)
    manager.close()


# -- 3: a failing commit writes nothing ------------------------------------------------


def test_a_key_of_the_wrong_type_in_the_way_stops_the_commit_before_any_write(
    redis_server: RedisServer,
) -> None:
    prefix = fresh_prefix()
    c = client(redis_server)
    damaged = base_of(prefix, "s1") + b"ialice\x00"
    c.set(damaged, b"not a zset")
    manager = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix))
    with pytest.raises(CorruptRecordError, match="kvsessions check"):
        manager.create_session("alice", session_id="s1")
    assert ours(c, prefix) == [damaged]  # no header, no other index entry
    assert manager.get_session("s1") is None
    c.delete(damaged)
    assert manager.create_session("alice", session_id="s1").user_id == "alice"
    manager.close()


@pytest.mark.parametrize("ttl", [1e20, 10**30, 200 * 365 * 86400])
def test_a_ttl_redis_cannot_arm_is_refused(redis_server: RedisServer, ttl: float) -> None:
    with pytest.raises(StoreConfigError, match="ttl"):
        RedisSessionStore(redis_server.url, prefix=fresh_prefix(), ttl=ttl)


# -- 4: clear_all against concurrent writers -------------------------------------------


def test_clear_all_deletes_a_session_saved_meanwhile_whole_or_not_at_all(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = fresh_prefix()
    manager = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix, shards=1024))
    other = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix, shards=1024))
    for i in range(400):  # ~1,600 keys: SCAN takes several pages
        manager.create_session("old", session_id=f"old{i}")
    ask = RedisBackend._ask
    fired: list[int] = []

    def ask_then_save(self: Any, node: str, commands: Any, **kw: Any) -> Any:
        replies = yield from ask(self, node, commands, **kw)
        if commands and commands[0][0] == "SCAN" and not fired:
            fired.append(1)  # another client saves while clear_all is under way
            for i in range(100):
                session = other.create_session("new", session_id=f"new{i}")
                session.add_message("user", "a")
                session.add_message("user", "b")
                other.save(session)
        return replies

    monkeypatch.setattr(RedisBackend, "_ask", ask_then_save)
    manager.clear_all()
    monkeypatch.undo()
    survivors = set()
    for i in range(100):
        loaded = other.get_session(f"new{i}")
        if loaded is not None:
            assert loaded.message_count == len(loaded.messages) == 2, loaded.session_id
            survivors.add(loaded.session_id)
    assert {s.session_id for s in other.get_sessions_for_user("new")} == survivors
    assert other.get_sessions_for_user("old") == []
    c = client(redis_server)
    for key in ours(c, prefix):  # no message set outlives its header
        assert b"}m" not in key or c.exists(key.replace(b"}m", b"}h", 1)), key
    other.clear_all()
    assert ours(c, prefix) == []
    manager.close()
    other.close()


# -- 5: cluster slot migration ----------------------------------------------------------


def test_a_migrating_slot_is_followed_with_asking(redis_cluster: RedisCluster) -> None:
    prefix = fresh_prefix()
    store = RedisSessionStore(redis_cluster.url, prefix=prefix)
    manager = SessionManager(store=store)
    session = manager.create_session("u", session_id="S")
    session.add_message("user", "hello")
    manager.save(session)
    shard = zlib.crc32(b"S") % 16
    newcomer = sid_in_shard(shard)
    slot = redis.crc.key_slot(shard_tags(16)[shard])
    nodes = {node.port: client(node) for node in redis_cluster.nodes}
    ids = {port: c.execute_command("CLUSTER", "MYID").decode() for port, c in nodes.items()}
    owner = next(
        p for p, c in nodes.items() if c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
    )
    target = next(p for p in nodes if p != owner)
    nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    nodes[owner].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    try:
        while moving := nodes[owner].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
            nodes[owner].execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moving
            )
        loaded = manager.get_session("S")  # the old owner answers ASK for each of these
        assert loaded is not None and [m.content for m in loaded.messages] == ["hello"]
        assert manager.get_session("S", messages=0) is not None
        loaded.add_message("user", "during the move")
        manager.save(loaded)
        with pytest.raises(StoreUnavailableError, match="retry later"):  # Redis: TRYAGAIN
            manager.create_session("u", session_id=newcomer)  # (new keys, a multi-key script)
        amanager = AsyncSessionManager(store=RedisSessionStore(redis_cluster.url, prefix=prefix))
        aloaded = asyncio.run(amanager.get_session("S"))
        assert aloaded is not None and len(aloaded.messages) == 2
        asyncio.run(amanager.close())
    finally:
        for port in (target, owner, *nodes):  # the migration ends: the target owns the slot
            nodes[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    final = manager.get_session("S")
    assert final is not None and [m.content for m in final.messages] == ["hello", "during the move"]
    assert manager.get_session(newcomer) is None
    assert manager.create_session("u", session_id=newcomer).user_id == "u"
    manager.clear_all()
    manager.close()


# -- 6: URLs ---------------------------------------------------------------------------


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[str]:
    """A redis-server of our own listening only on a unix socket; its path."""
    require_redis()
    path = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(path),
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield str(path)
    finally:
        process.kill()
        process.wait(10)


def test_a_unix_socket_url_opens_the_store(unix_server: str) -> None:
    manager = SessionManager(store=RedisSessionStore(f"unix://{unix_server}", prefix="ux:"))
    session = manager.create_session("u")
    loaded = manager.get_session(session.session_id)
    assert loaded is not None and loaded.user_id == "u"
    manager.close()


def test_an_ipv6_cluster_url_names_its_node_in_brackets() -> None:
    with contextlib.ExitStack() as stack:
        try:  # a port of ours that refuses connections: bound, never listening
            probe = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
        except OSError:  # no IPv6 here: nothing can answer on ::1 anyway
            port = free_port()
        with pytest.raises(StoreUnavailableError, match=rf"\[::1\]:{port}"):
            RedisSessionStore(f"redis+cluster://[::1]:{port}", prefix="v6:", connect_timeout=0.5)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:abc/0",
        "redis://127.0.0.1:99999/0",
        "redis:///0",
        "redis+cluster://:7000",
        "unix://",
        "http://127.0.0.1:6379/0",
        b"redis://127.0.0.1:6379/0",
    ],
)
def test_a_bad_url_is_a_config_error(url: Any) -> None:
    with pytest.raises(StoreConfigError):
        RedisSessionStore(url, prefix="t:")


# -- 7: constructor arguments -----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": math.nan},
        {"ttl": math.inf},
        {"ttl": -math.inf},
        {"ttl": "60"},
        {"timeout": -1},
        {"timeout": 0},
        {"timeout": "x"},
        {"timeout": math.inf},
        {"timeout": math.nan},
        {"connect_timeout": math.nan},
        {"connect_timeout": 10**400},
        {"prefix": "\ud800"},
    ],
    ids=lambda kwargs: ",".join(f"{k}={v!r:.12}" for k, v in kwargs.items()),
)
def test_bad_constructor_arguments_are_config_errors(
    redis_server: RedisServer, kwargs: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {"prefix": fresh_prefix(), **kwargs}
    with pytest.raises(StoreConfigError):
        RedisSessionStore(redis_server.url, **arguments)


# -- 8: a header of the wrong type -------------------------------------------------------


def test_a_header_of_the_wrong_type_is_a_corrupt_record(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    header = base_of(prefix, "s1") + b"hs1\x00"
    c = client(redis_server)
    c.zadd(header, {b"x": 0})
    manager = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix))
    with pytest.raises(CorruptRecordError):
        manager.get_session("s1")
    with pytest.raises(CorruptRecordError):
        manager.get_session("s1", messages=0)
    with pytest.raises(CorruptRecordError):
        manager.create_session("u", session_id="s1")
    assert ours(c, prefix) == [header] and c.zrange(header, 0, -1) == [b"x"]
    manager.close()


# -- 9: huge limits ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [10**17, 2**53 + 1, sys.maxsize, 2**64])
def test_a_huge_limit_means_every_message(redis_server: RedisServer, limit: int) -> None:
    manager = SessionManager(store=RedisSessionStore(redis_server.url, prefix=fresh_prefix()))
    session = manager.create_session("u")
    for n in range(3):
        session.add_message("user", str(n))
    manager.save(session)
    loaded = manager.get_session(session.session_id, messages=limit)
    assert loaded is not None and [m.content for m in loaded.messages] == ["0", "1", "2"]
    assert len(manager.get_messages(session.session_id, limit)) == 3
    manager.close()


# -- 10: the blocking update() backs off -------------------------------------------------


def test_blocking_update_pauses_after_a_lost_round(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = fresh_prefix()
    manager = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix))
    other = SessionManager(store=RedisSessionStore(redis_server.url, prefix=prefix))
    sid = manager.create_session("u").session_id
    pauses: list[tuple[int, float]] = []

    def no_pause(conflicts: int, cap: float) -> float:
        pauses.append((conflicts, cap))
        return 0.0

    monkeypatch.setattr(redis_backend, "backoff", no_pause)

    def change(session: Any) -> None:
        if not pauses:  # the first round loses: another manager saves in between
            rival = other.get_session(sid)
            assert rival is not None
            rival.set_state("rival", True)
            other.save(rival)
        session.set_state("n", session.get_state("n", 0) + 1)

    manager.update(sid, change)
    assert pauses == [(1, READ_PLAN_BACKOFF_CAP)]
    final = manager.get_session(sid)
    assert final is not None and final.state == {"rival": True, "n": 1}
    manager.close()
    other.close()
