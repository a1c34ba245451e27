"""A user's own store numbering and checking like the built-in ones; archive, purge and
sweep counts that are exactly what the call itself changed, when its commits lose races."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from kvsessions import (
    InvalidIdError,
    InvalidSessionError,
    InvalidValueError,
    MemorySessionStore,
    Message,
    RedisSessionStore,
    Session,
    SessionManager,
    SessionStatus,
    SessionStore,
    lifecycle,
)
from kvsessions.backends.base import Commit, Conflict, Plan
from kvsessions.codec import to_micros
from kvsessions.stores import KVSessionStore
from kvsessions.testing.conformance import ManualClock

from .custom_store import DictStore
from .redis_servers import RedisCluster

# -- a user store numbers new messages after the highest seq -------------------------------


def _seqs(manager: SessionManager, session_id: str) -> list[tuple[int | None, Any]]:
    return [(m.seq, m.content) for m in manager.get_session(session_id).messages]


def _saved(manager: SessionManager, count: int) -> str:
    session = manager.create_session("u")
    for i in range(count):
        session.add_message("user", f"m{i}")
    manager.save(session)
    return session.session_id


def _append(manager: SessionManager, session_id: str, content: str) -> None:
    session = manager.get_session(session_id)
    session.add_message("user", content)
    manager.save(session)


@pytest.mark.parametrize("open_store", [DictStore, MemorySessionStore])
def test_an_append_after_delete_message_takes_the_next_seq(
    open_store: Callable[[], SessionStore],
) -> None:
    manager = SessionManager(store=open_store())
    sid = _saved(manager, 3)
    manager.delete_message(sid, 1)
    _append(manager, sid, "new")
    assert _seqs(manager, sid) == [(0, "m0"), (2, "m2"), (3, "new")]


@pytest.mark.parametrize("open_store", [DictStore, MemorySessionStore])
def test_an_append_after_replace_messages_takes_the_next_seq(
    open_store: Callable[[], SessionStore],
) -> None:
    manager = SessionManager(store=open_store())
    sid = _saved(manager, 10)
    manager.replace_messages(sid, 2, 8, [Message("assistant", "summary")])
    _append(manager, sid, "new")
    assert _seqs(manager, sid) == [(0, "m0"), (1, "m1"), (2, "summary"), (9, "m9"), (10, "new")]


def test_a_user_store_renumbers_a_pending_message_that_had_a_seq() -> None:
    manager = SessionManager(store=DictStore())
    sid = _saved(manager, 2)
    manager.delete_message(sid, 0)
    session = manager.get_session(sid)
    session.messages.append(session.messages[0])  # added again: a new message, a new seq
    manager.save(session)
    assert _seqs(manager, sid) == [(1, "m1"), (2, "m1")]
    assert [m.seq for m in session.messages] == [1, 2]


# -- a user store checks edits like the built-in stores -------------------------------------

BAD_EDITS: dict[str, tuple[Callable[[SessionManager, str], Any], type[Exception]]] = {
    "content a set": (lambda m, sid: m.update_message(sid, 0, content={1, 2}), InvalidValueError),
    "extras a set": (lambda m, sid: m.update_message(sid, 0, tags={1}), InvalidValueError),
    "role an int": (lambda m, sid: m.update_message(sid, 1, role=5), InvalidSessionError),
    "role empty": (lambda m, sid: m.update_message(sid, 1, role=""), InvalidSessionError),
    "seq a str": (lambda m, sid: m.update_message(sid, "0", content="x"), InvalidSessionError),
    "delete seq < 0": (lambda m, sid: m.delete_message(sid, -1), InvalidSessionError),
    "fork at a str": (lambda m, sid: m.fork(sid, at_seq="x"), InvalidSessionError),
    "fork at a bool": (lambda m, sid: m.fork(sid, at_seq=True), InvalidSessionError),
}


@pytest.mark.parametrize("open_store", [DictStore, MemorySessionStore])
@pytest.mark.parametrize("edit", list(BAD_EDITS))
def test_bad_edits_raise_the_built_in_stores_errors_and_store_nothing(
    open_store: Callable[[], SessionStore], edit: str
) -> None:
    manager = SessionManager(store=open_store())
    sid = _saved(manager, 2)
    call, error = BAD_EDITS[edit]
    with pytest.raises(error):
        call(manager, sid)
    assert _seqs(manager, sid) == [(0, "m0"), (1, "m1")]
    assert [s.session_id for s in manager.get_sessions_for_user("u")] == [sid]


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.pop_message(123),
        lambda m: m.delete_message(123, 0),
        lambda m: m.update_message(123, 0, content="x"),
        lambda m: m.replace_messages(123, 0, 0, []),
        lambda m: m.fork(123),
    ],
    ids=["pop_message", "delete_message", "update_message", "replace_messages", "fork"],
)
def test_user_store_edits_check_the_session_id(edit: Callable[[SessionManager], Any]) -> None:
    store = DictStore()
    manager = SessionManager(store=store)
    _saved(manager, 1)
    with pytest.raises(InvalidIdError):
        edit(manager)
    assert len(store.sessions) == 1


@pytest.mark.parametrize("open_store", [DictStore, MemorySessionStore])
def test_update_message_with_role_none_keeps_the_role(
    open_store: Callable[[], SessionStore],
) -> None:
    manager = SessionManager(store=open_store())
    sid = _saved(manager, 1)
    updated = manager.update_message(sid, 0, role=None, content="redacted")
    assert (updated.role, updated.content) == ("user", "redacted")
    assert manager.get_session(sid).messages[0].role == "user"


# -- archive / purge / sweep counts under conflicts ------------------------------------------

Interfere = Callable[[Commit], None]


def _drive(execute: Callable[[Any], Any], plan: Plan[int], before_commit: Interfere) -> int:
    """Run ``plan`` one operation per ``execute`` (per transaction, as the asyncio manager
    does), calling ``before_commit`` before its first commit: another writer getting in."""
    answer: Any = None
    interfere: Interfere | None = before_commit
    try:
        while True:
            op = plan.send(answer)
            if isinstance(op, Commit) and interfere is not None:
                interfere(op)
                interfere = None
            answer = execute(op)
    except StopIteration as stop:
        return int(stop.value)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def old(clock: ManualClock) -> Iterator[tuple[SessionManager, list[str]]]:
    """A memory store with 6 sessions last saved 40 days ago."""
    manager = SessionManager(store=MemorySessionStore(), clock=clock)
    ids = [manager.create_session("u").session_id for _ in range(6)]
    clock.advance(days=40)
    yield manager, ids
    manager.close()


def _cutoff(clock: ManualClock) -> int:
    return to_micros(clock.now) - 30 * 86_400_000_000


def _statuses(manager: SessionManager) -> dict[str, SessionStatus]:
    return {s.session_id: s.status for s in manager.get_sessions_for_user("u")}


def test_archive_inactive_counts_none_when_all_were_saved_first(
    old: tuple[SessionManager, list[str]], clock: ManualClock
) -> None:
    manager, ids = old

    def save_all(commit: Commit) -> None:
        for sid in ids:
            session = manager.get_session(sid)
            session.add_message("user", "still here")
            manager.save(session)

    execute = manager.store._backend.execute
    assert _drive(execute, lifecycle.archive_inactive(_cutoff(clock)), save_all) == 0
    assert set(_statuses(manager).values()) == {SessionStatus.ACTIVE}


def test_archive_inactive_counts_only_what_it_archived_after_a_conflict(
    old: tuple[SessionManager, list[str]], clock: ManualClock
) -> None:
    manager, ids = old

    def archive_two_save_one(commit: Commit) -> None:
        manager.archive(ids[0])  # the same change as the sweep's, made by someone else
        manager.archive(ids[1])
        clock.advance(days=-40)  # a save as old as the rest: still inactive, archived
        session = manager.get_session(ids[2])  # by the sweep when it reads the chunk again
        session.set_state("k", 1)
        manager.save(session)
        clock.advance(days=40)

    plan = lifecycle.archive_inactive(_cutoff(clock))
    archived = _drive(manager.store._backend.execute, plan, archive_two_save_one)
    assert archived == 4  # ids[2:], not the two archived by the other caller
    assert set(_statuses(manager).values()) == {SessionStatus.ARCHIVED}


@pytest.mark.parametrize("which", ["purge", "sweep"])
def test_purge_and_sweep_count_only_what_they_deleted_after_a_conflict(
    old: tuple[SessionManager, list[str]], clock: ManualClock, which: str
) -> None:
    manager, ids = old
    for sid in ids:
        manager.archive(sid)

    def delete_two(commit: Commit) -> None:
        manager.delete(ids[0])
        manager.delete(ids[1])

    cutoff = _cutoff(clock)
    plan = (
        lifecycle.purge_before(SessionStatus.ARCHIVED, cutoff)
        if which == "purge"
        else lifecycle.sweep(cutoff)
    )
    assert _drive(manager.store._backend.execute, plan, delete_two) == 4
    assert _statuses(manager) == {}


def _per_session(commit: Commit) -> list[Commit]:
    """A chunk's commit split into one commit per session (its header's id ends each key)."""
    parts = []
    for hkey, header in commit.expect.items():
        tail = hkey[1:]
        parts.append(
            Commit(
                {hkey: header},
                {k: v for k, v in commit.put.items() if k.endswith(tail)},
                [k for k in commit.delete if k.endswith(tail)],
                [r for r in commit.delete_ranges if r[0].endswith(tail)],
            )
        )
    return parts


class PerSessionCommits:
    """Applies a multi-session commit one session at a time, as a store that commits per
    slot does (Redis Cluster): on a conflict the other parts stay applied, and the
    answer shows them as this commit left them."""

    def __init__(self, store: KVSessionStore) -> None:
        self.store = store

    def execute(self, op: Any) -> Any:
        if not isinstance(op, Commit) or len(op.expect) < 2:
            return self.store._backend.execute(op)
        current: dict[bytes, bytes | None] = {}
        refused = False
        for part in _per_session(op):
            [(hkey, _)] = part.expect.items()
            answer = self.store._backend.execute(part)
            if answer is None:
                current[hkey] = part.put.get(hkey)
            else:
                refused = True
                current[hkey] = answer.current[hkey]
        return Conflict(current) if refused else None


def test_archive_inactive_counts_the_parts_a_per_slot_store_applied(
    old: tuple[SessionManager, list[str]], clock: ManualClock
) -> None:
    manager, ids = old
    per_slot = PerSessionCommits(manager.store)

    def archive_one_save_one(commit: Commit) -> None:
        manager.archive(ids[0])
        session = manager.get_session(ids[1])
        session.add_message("user", "back")  # active again: not archived by the sweep
        manager.save(session)

    plan = lifecycle.archive_inactive(_cutoff(clock))
    assert _drive(per_slot.execute, plan, archive_one_save_one) == 4  # ids[2:], first commit
    statuses = _statuses(manager)
    assert statuses[ids[1]] is SessionStatus.ACTIVE
    assert [statuses[sid] for sid in (ids[0], *ids[2:])] == [SessionStatus.ARCHIVED] * 5


def _one(op: Any) -> Any:
    return (yield op)


def test_archive_inactive_counts_what_a_redis_cluster_applied_of_a_refused_commit(
    redis_cluster: RedisCluster, clock: ManualClock
) -> None:
    """The real per-slot store: one script per slot, the refused slots' sessions archived
    when the chunk is read again, the others counted from the refused commit's answer."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    store = RedisSessionStore(redis_cluster.url, prefix=prefix)
    manager = SessionManager(store=store, clock=clock)
    ids = [manager.create_session("u").session_id for _ in range(12)]
    clock.advance(days=40)

    def archive_one_save_one(commit: Commit) -> None:
        manager.archive(ids[0])
        session = manager.get_session(ids[1])
        session.add_message("user", "back")
        manager.save(session)

    def execute(op: Any) -> Any:
        return store._backend.run(_one(op), write=isinstance(op, Commit))

    try:
        plan = lifecycle.archive_inactive(_cutoff(clock))
        assert _drive(execute, plan, archive_one_save_one) == 10
        statuses = _statuses(manager)
        assert statuses[ids[1]] is SessionStatus.ACTIVE
        assert [statuses[sid] for sid in ids if sid != ids[1]] == [SessionStatus.ARCHIVED] * 11
    finally:
        manager.clear_all()
        manager.close()


# -- a user store may hold sessions from before 1970 ----------------------------------------


def test_a_user_store_lists_sessions_from_before_1970() -> None:
    """Its listing ranks sessions in memory; a time before the epoch once raised a bare
    ``struct.error`` there (and so did ``copy_store`` from such a store)."""
    store = DictStore()
    old = datetime(1960, 1, 1, tzinfo=UTC)
    store.sessions["old"] = Session(session_id="old", user_id="u", created_at=old, updated_at=old)
    manager = SessionManager(store=store)
    new = manager.create_session("u")
    for order in ("activity", "created"):
        page = manager.list_sessions("u", order=order)
        assert [s.session_id for s in page.sessions] == [new.session_id, "old"]
