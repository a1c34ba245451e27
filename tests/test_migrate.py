"""Key-layout migration 1 -> 2 (the creation index), on LMDB, SQLite and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvsessions import (
    KVSessionStore,
    LMDBSessionStore,
    RedisSessionStore,
    SchemaVersionError,
    SessionManager,
    SQLiteSessionStore,
    keys,
    migrate,
)
from kvsessions.backends.base import Commit, Scan
from kvsessions.lifecycle import migrate as migrate_plan

from .redis_servers import RedisServer


@pytest.fixture(params=["lmdb", "sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], KVSessionStore]:
    if request.param == "lmdb":
        return lambda: LMDBSessionStore(tmp_path / "s.lmdb", durability="fast")
    if request.param == "sqlite":
        return lambda: SQLiteSessionStore(tmp_path / "s.db", durability="fast")
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    return lambda: RedisSessionStore(server.url, prefix=prefix)


def make_layout_1(open_store: Callable[[], KVSessionStore], sessions: int) -> list[str]:
    """A store as kvsessions with layout 1 wrote it: no creation index, format b"1"."""
    store = open_store()
    manager = SessionManager(store)
    sids = []
    for i in range(sessions):
        session = manager.create_session(f"user{i % 3}")
        session.add_message("user", f"m{i}")
        manager.save(session)
        sids.append(session.session_id)
    manager.archive(sids[0])
    backend: Any = store._backend
    created = backend.run(_scan(*keys.created_range()), write=False)
    assert len(created) == sessions
    backend.run(
        _commit(Commit(put={keys.FORMAT_KEY: b"1"}, delete=[k for k, _ in created])), write=True
    )
    manager.close()
    return sids


def _scan(start: bytes, stop: bytes) -> Any:
    return (yield Scan(start, stop))


def _commit(commit: Commit) -> Any:
    return (yield commit)


def test_an_old_layout_is_refused_until_migrated(
    open_store: Callable[[], KVSessionStore],
) -> None:
    sids = make_layout_1(open_store, 7)
    store = open_store()
    assert store.layout == 1
    with pytest.raises(SchemaVersionError, match="kvsessions migrate"):
        SessionManager(store)
    dry = migrate(store, dry_run=True)
    assert (dry.from_version, dry.to_version, dry.sessions, dry.dry_run) == (1, 2, 7, True)
    assert store.layout == 1  # a dry run writes nothing
    assert open_store().layout == 1
    done = migrate(store)
    assert (done.from_version, done.sessions) == (1, 7)
    manager = SessionManager(store)
    listed = []
    cursor = None
    while True:
        page = manager.list_sessions(status=None, order="created", limit=3, cursor=cursor)
        listed += [s.session_id for s in page.sessions]
        if (cursor := page.cursor) is None:
            break
    assert listed == sids[::-1]
    assert migrate(store).sessions == 0  # already current: nothing to do
    assert SessionManager(open_store()).get_session(sids[3]) is not None
    manager.close()


def test_an_interrupted_migration_resumes(open_store: Callable[[], KVSessionStore]) -> None:
    make_layout_1(open_store, 9)
    store = open_store()
    backend: Any = store._backend
    plan = migrate_plan(chunk=2)
    answer = None
    commits = 0
    while commits < 2:  # run it until two chunks are committed, then stop (a crash)
        op = plan.send(answer)
        answer = backend.run(_one(op), write=isinstance(op, Commit))
        commits += isinstance(op, Commit)
    plan.close()
    assert backend.run(_scan(*keys.created_range()), write=False).__len__() == 4
    assert open_store().layout == 1  # not finished: still refused
    report = migrate(open_store())
    assert report.sessions == 5  # only what was left
    assert len(backend.run(_scan(*keys.created_range()), write=False)) == 9
    assert open_store().layout == 2


def _one(op: Any) -> Any:
    return (yield op)
