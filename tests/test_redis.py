"""RedisSessionStore against real, throw-away servers: one redis-server and a 3-master cluster.

The conformance suite runs on both (each test on a prefix of its own), then focused tests:
round trips per operation, one slot per session, index consistency under concurrency, TTL,
prefix isolation, and the failure modes (server down, wrong password, TLS to a plain
server, a cluster node lost).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from kvsessions import (
    AsyncSessionManager,
    RedisSessionStore,
    SessionManager,
    SessionStatus,
    SessionStore,
    StoreUnavailableError,
    keys,
)
from kvsessions.testing import StoreConformance

from .conftest import require_redis
from .redis_servers import RedisCluster, RedisServer


def fresh_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


class TestRedis(StoreConformance):
    @pytest.fixture
    def open_store(self, redis_server: RedisServer) -> Callable[[], SessionStore]:
        prefix = fresh_prefix()
        return lambda: RedisSessionStore(redis_server.url, prefix=prefix)


class TestRedisCluster(StoreConformance):
    @pytest.fixture
    def open_store(self, redis_cluster: RedisCluster) -> Callable[[], SessionStore]:
        prefix = fresh_prefix()
        return lambda: RedisSessionStore(redis_cluster.url, prefix=prefix)


# -- helpers ---------------------------------------------------------------------------


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=server.password)


def keys_of(nodes: list[RedisServer], prefix: str) -> list[bytes]:
    found: list[bytes] = []
    for node in nodes:
        found += client(node).scan_iter(match=prefix + "*", count=1000)
    return found


class EvalCounter:
    """Top-level EVALSHA calls the server received (INFO commandstats; script-inner
    commands are counted under their own names, so this is our round trips)."""

    def __init__(self, server: RedisServer) -> None:
        self._client = client(server)
        self._last = self._calls()

    def _calls(self) -> int:
        stats = self._client.info("commandstats")
        return sum(
            int(stats.get(name, {}).get("calls", 0))
            for name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_multi", "cmdstat_script")
        )

    def delta(self) -> int:
        now = self._calls()
        delta, self._last = now - self._last, now
        return delta


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("facade", ["sync", "async"])
def test_one_round_trip_per_operation(redis_server: RedisServer, facade: str) -> None:
    store = RedisSessionStore(redis_server.url, prefix=fresh_prefix())
    counter = EvalCounter(redis_server)
    if facade == "sync":
        manager: Any = SessionManager(store=store)
        call: Callable[[Any], Any] = lambda result: result  # noqa: E731
    else:
        manager = AsyncSessionManager(store=store)
        runner = asyncio.Runner()
        call = runner.run
    try:
        session = call(manager.create_session("rt-user", {"k": 1}))
        assert counter.delta() == 1  # create
        session.add_message("user", "hello")
        session.set_state("step", 2)
        call(manager.save(session))
        assert counter.delta() == 1  # append + save
        loaded = call(manager.get_session(session.session_id))
        assert counter.delta() == 1  # load
        assert [m.content for m in loaded.messages] == ["hello"]
        listed = call(manager.get_sessions_for_user("rt-user"))
        assert counter.delta() <= 2  # listing
        assert [s.session_id for s in listed] == [session.session_id]
    finally:
        call(manager.close())
        if facade == "async":
            runner.close()


# -- cluster: slots and consistency ------------------------------------------------------


def test_a_sessions_keys_share_one_slot(redis_cluster: RedisCluster) -> None:
    prefix = fresh_prefix()
    manager = SessionManager(store=RedisSessionStore(redis_cluster.url, prefix=prefix))
    sessions = []
    for i in range(8):
        session = manager.create_session(f"user{i % 2}")
        session.add_message("user", "x")
        manager.save(session)
        sessions.append(session.session_id)
    manager.archive(sessions[0])
    probe = client(redis_cluster.nodes[0])
    nodes_used = set()
    for sid in sessions:
        mine = []
        for node in redis_cluster.nodes:
            c = client(node)
            for key in c.scan_iter(match=prefix + "*", count=1000):
                name_has = sid.encode() in key
                member_has = c.type(key) == b"zset" and any(
                    m.endswith(sid.encode() + b"\x00") for m in c.zrange(key, 0, -1)
                )
                if name_has or member_has:
                    mine.append(key)
                    nodes_used.add(node.port)
        kinds = {key[key.index(b"}") + 1 : key.index(b"}") + 2] for key in mine}
        assert kinds == {b"h", b"m", keys.USER_SPACE, b"a", keys.CREATED_SPACE}, mine
        slots = {probe.execute_command("CLUSTER", "KEYSLOT", key) for key in mine}
        assert len(slots) == 1, (sid, mine, slots)
    assert len(nodes_used) > 1  # sessions do spread over the masters
    manager.close()


def test_cluster_indexes_stay_consistent_under_concurrency(redis_cluster: RedisCluster) -> None:
    prefix = fresh_prefix()
    expected: dict[str, set[str]] = {"alice": set(), "bob": set()}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            manager = SessionManager(store=RedisSessionStore(redis_cluster.url, prefix=prefix))
            for i in range(15):
                user = ("alice", "bob")[(n + i) % 2]
                session = manager.create_session(user)
                session.add_message("user", f"{n}-{i}")
                manager.save(session)
                if i % 5 == 0:
                    manager.delete(session.session_id)
                    continue
                if i % 3 == 0:
                    manager.archive(session.session_id)
                with lock:
                    expected[user].add(session.session_id)
            manager.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    manager = SessionManager(store=RedisSessionStore(redis_cluster.url, prefix=prefix))
    for user, sids in expected.items():
        listed = manager.get_sessions_for_user(user)
        assert {s.session_id for s in listed} == sids
        assert all(s.message_count == 1 for s in listed)
    active = sum(
        s.status == SessionStatus.ACTIVE
        for user in expected
        for s in manager.get_sessions_for_user(user)
    )
    time.sleep(0.01)
    assert manager.archive_inactive(days=0) == active
    assert manager.archive_inactive(days=0) == 0
    manager.close()


# -- ttl -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["server", "cluster"])
def test_ttl_expires_everything_and_writes_refresh_it(
    where: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    url, nodes = (
        (redis_server.url, [redis_server])
        if where == "server"
        else (redis_cluster.url, redis_cluster.nodes)
    )
    prefix = fresh_prefix()
    manager = SessionManager(store=RedisSessionStore(url, prefix=prefix, ttl=1.0))
    old = manager.create_session("ttl-user")
    old.add_message("user", "x")
    manager.save(old)
    kept = manager.create_session("ttl-user")
    for node in nodes:
        c = client(node)
        for key in c.scan_iter(match=prefix + "{*"):
            assert 0 < c.pttl(key) <= 1000, key  # every key of ours expires
    time.sleep(0.6)
    kept.add_message("user", "still here")
    manager.save(kept)
    time.sleep(0.6)  # old: 1.2 s since its last write; kept: 0.6 s
    assert manager.get_session(old.session_id) is None
    assert [s.session_id for s in manager.get_sessions_for_user("ttl-user")] == [kept.session_id]
    assert manager.archive_inactive(days=0) == 1  # kept's activity entry outlived old's
    time.sleep(1.1)
    assert manager.get_session(kept.session_id) is None
    assert manager.get_sessions_for_user("ttl-user") == []
    assert keys_of(nodes, prefix + "{") == []  # headers, messages and index shards all gone
    manager.close()


# -- prefix isolation ------------------------------------------------------------------


def test_clear_all_touches_only_its_prefix(redis_server: RedisServer) -> None:
    base = fresh_prefix()
    mine = SessionManager(store=RedisSessionStore(redis_server.url, prefix=base))
    other = SessionManager(store=RedisSessionStore(redis_server.url, prefix=base + "b:"))
    foreign = {
        b"foreign": b"1",
        base.encode() + b"x": b"2",
        base.encode() + b"!formatx": b"3",
        base[:-1].encode() + b"{1}": b"4",
    }
    c = client(redis_server)
    for key, value in foreign.items():
        c.set(key, value)
    kept = other.create_session("u")
    for _ in range(30):
        mine.create_session("u")
    written = keys_of([redis_server], base + "{")
    assert written and all(k.startswith(base.encode() + b"{") for k in written)
    mine.clear_all()
    assert mine.get_sessions_for_user("u") == []
    assert [s.session_id for s in other.get_sessions_for_user("u")] == [kept.session_id]
    for key, value in foreign.items():
        assert c.get(key) == value
    mine.close()
    other.close()


# -- failures --------------------------------------------------------------------------


def test_server_down_then_back(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path).start()
    try:
        manager = SessionManager(store=RedisSessionStore(server.url, prefix=fresh_prefix()))
        amanager = AsyncSessionManager(store=RedisSessionStore(server.url, prefix=fresh_prefix()))
        runner = asyncio.Runner()
        session = manager.create_session("u")
        runner.run(amanager.create_session("u"))
        server.stop()
        for attempt in (
            lambda: manager.get_session(session.session_id),
            lambda: manager.create_session("u"),
            lambda: runner.run(amanager.get_sessions_for_user("u")),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{server.port}"):
                attempt()
            assert time.monotonic() - started < 3
        server.start()  # empty again (no persistence): the store must simply work
        assert manager.get_session(session.session_id) is None
        again = manager.create_session("u")
        assert manager.get_session(again.session_id) is not None
        assert runner.run(amanager.create_session("u")).user_id == "u"
        manager.close()
        runner.run(amanager.close())
        runner.close()
    finally:
        server.stop()


def test_wrong_password_and_tls_to_plain_server(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path, password="s3cret-pw").start()
    try:
        for url in (
            f"redis://:wrong-pw-123@{server.address}/0",
            f"redis://{server.address}/0",
            f"rediss://:s3cret-pw@{server.address}/0",
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as info:
                RedisSessionStore(url, prefix=fresh_prefix(), timeout=1, connect_timeout=1)
            assert time.monotonic() - started < 5
            assert server.address in str(info.value)
            assert "wrong-pw-123" not in str(info.value) and "s3cret" not in str(info.value)
        store = RedisSessionStore(server.url, prefix=fresh_prefix())
        assert SessionManager(store=store).create_session("u").user_id == "u"
        store.close()
    finally:
        server.stop()


def test_cluster_node_lost_then_back(tmp_path: Path) -> None:
    require_redis()
    cluster = RedisCluster(tmp_path).start()
    try:
        manager = SessionManager(store=RedisSessionStore(cluster.url, prefix=fresh_prefix()))
        sessions = [manager.create_session("u") for _ in range(12)]
        victim = cluster.nodes[1]
        victim.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=victim.address):
            for session in sessions:  # some of them live on the lost node
                manager.get_session(session.session_id)
        assert time.monotonic() - started < 3
        victim.start()
        cluster.wait_ok()
        deadline = time.monotonic() + 10
        while True:
            try:
                loaded = [manager.get_session(s.session_id) for s in sessions]
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        on_victim = [s for s, got in zip(sessions, loaded, strict=True) if got is None]
        assert on_victim  # that node's data is gone (no persistence), the rest is intact
        assert len(on_victim) < len(sessions)
        assert manager.create_session("u").user_id == "u"
        manager.close()
    finally:
        cluster.stop()


def test_async_large_session_round_trips(redis_cluster: RedisCluster) -> None:
    """A load big enough to be decoded off the event loop (in the manager's pool)."""

    async def scenario() -> None:
        store = RedisSessionStore(redis_cluster.url, prefix=fresh_prefix())
        async with AsyncSessionManager(store=store) as manager:
            session = await manager.create_session("big")
            for i in range(600):
                session.add_message("user", f"m{i}", n=i)
            await manager.save(session)
            loaded = await manager.get_session(session.session_id)
            assert [m.extras["n"] for m in loaded.messages] == list(range(600))
            listed = await manager.get_sessions_for_user("big")
            assert listed[0].message_count == 600

    asyncio.run(scenario())


# -- asyncio clients across event loops ---------------------------------------------------


class ServerSide:
    """Connections as the server(s) see them: open now (CLIENT LIST, our probe excluded)
    and accepted so far (INFO stats)."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self._probes = [client(node) for node in nodes]
        self._ids = [probe.client_id() for probe in self._probes]

    def open(self) -> int:
        return sum(
            sum(1 for c in probe.client_list() if int(c["id"]) != own)
            for probe, own in zip(self._probes, self._ids, strict=True)
        )

    def accepted(self) -> int:
        return sum(int(p.info("stats")["total_connections_received"]) for p in self._probes)

    def close(self) -> None:
        for probe in self._probes:
            probe.close()


@contextmanager
def no_unclosed_warnings() -> Iterator[None]:
    """Fail on any ResourceWarning, including those raised when the GC frees objects:
    collection is off inside, and forced at the end, while warnings are recorded."""
    gc.collect()
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            gc.enable()
            gc.collect()
    finally:
        gc.enable()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def where(
    kind: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> tuple[str, list[RedisServer]]:
    if kind == "server":
        return redis_server.url, [redis_server]
    return redis_cluster.url, redis_cluster.nodes


@pytest.mark.parametrize("kind", ["server", "cluster"])
def test_asyncio_run_again_and_again_on_one_store_leaks_nothing(
    kind: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    """Each asyncio.run's clients are closed on its loop as it shuts down: no unclosed
    connection is left for the GC, and the server's connection count stays flat."""
    url, nodes = where(kind, redis_server, redis_cluster)
    side = ServerSide(nodes)
    store = RedisSessionStore(url, prefix=fresh_prefix())
    manager = AsyncSessionManager(store=store)
    sid = asyncio.run(manager.create_session("loops")).session_id

    async def turn(i: int) -> int:
        session = await manager.get_session(sid)
        session.add_message("user", f"run {i}")
        await manager.save(session)
        return len(await manager.get_sessions_for_user("loops"))  # every node of a cluster

    with no_unclosed_warnings():
        before, accepted = side.open(), side.accepted()
        peak = 0
        for i in range(30):
            assert asyncio.run(turn(i)) == 1
            peak = max(peak, side.open())
        assert peak <= before + len(nodes)  # at most the one loop's clients at a time
        assert side.open() <= before
        assert side.accepted() - accepted <= 30 * len(nodes)  # one per node per loop

        async def finish() -> list[str]:
            loaded = await manager.get_session(sid)
            await manager.close()
            return [m.content for m in loaded.messages]

        assert asyncio.run(finish()) == [f"run {i}" for i in range(30)]
    side.close()


@pytest.mark.parametrize("kind", ["server", "cluster"])
def test_two_threads_with_their_own_loops_share_one_store(
    kind: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    """Each thread's loop keeps its own clients: neither throws the other's away, so a
    few connections serve hundreds of operations, and both are closed at the end."""
    url, nodes = where(kind, redis_server, redis_cluster)
    side = ServerSide(nodes)
    manager = AsyncSessionManager(store=RedisSessionStore(url, prefix=fresh_prefix()))
    sid = asyncio.run(manager.create_session("threads")).session_id
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def appends() -> None:
            start.wait()
            for i in range(100):
                session = await manager.get_session(sid)
                session.add_message("user", f"{n}-{i}")
                await manager.save(session)

        try:
            asyncio.run(appends())
        except BaseException as exc:
            errors.append(exc)

    with no_unclosed_warnings():
        before, accepted = side.open(), side.accepted()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert side.accepted() - accepted <= 2 * len(nodes)  # one per node per loop
        assert side.open() <= before
        contents = [m.content for m in asyncio.run(manager.get_session(sid)).messages]
        assert sorted(contents) == sorted(f"{n}-{i}" for n in range(2) for i in range(100))
        for n in range(2):
            mine = [c for c in contents if c.startswith(f"{n}-")]
            assert mine == [f"{n}-{i}" for i in range(100)]
        runner = asyncio.Runner()
        runner.run(manager.close())
        runner.close()
    side.close()


def test_closing_the_store_from_sync_code_closes_an_idle_loops_clients(
    redis_server: RedisServer,
) -> None:
    side = ServerSide([redis_server])
    store = RedisSessionStore(redis_server.url, prefix=fresh_prefix())
    manager = AsyncSessionManager(store=store)
    with no_unclosed_warnings():
        before = side.open()
        runner = asyncio.Runner()
        runner.run(manager.create_session("idle"))
        assert side.open() == before + 1  # the loop's client, idle between runs
        store.close()  # no running loop here: runs the idle loop to close its client
        assert side.open() <= before
        runner.close()
    side.close()


def test_a_loop_closed_without_shutdown_gives_its_connections_back(
    redis_server: RedisServer,
) -> None:
    """``loop.close()`` without ``shutdown_asyncgens``: nothing can run on that loop any
    more; the next loop to use the store shuts those sockets, so the server frees them."""
    side = ServerSide([redis_server])
    manager = AsyncSessionManager(store=RedisSessionStore(redis_server.url, prefix=fresh_prefix()))
    with warnings.catch_warnings():  # asyncio warns when the GC frees those transports
        warnings.simplefilter("ignore", ResourceWarning)
        before = side.open()
        for _ in range(5):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(manager.create_session("manual"))
            loop.close()
        assert side.open() == before + 1  # only the last closed loop's, not yet released
        sessions = asyncio.run(manager.get_sessions_for_user("manual"))
        assert len(sessions) == 5
        assert side.open() <= before
        asyncio.run(manager.close())
        gc.collect()
    side.close()
