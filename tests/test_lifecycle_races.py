"""Lifecycle walks racing other writers, driven step by step (no timing involved)."""

from __future__ import annotations

from typing import Any

from kvsessions import MemorySessionStore, SessionManager, SessionStatus, lifecycle
from kvsessions.backends.base import Commit
from kvsessions.codec import to_micros
from kvsessions.testing.conformance import ManualClock


def test_a_stale_looking_entry_is_kept_if_the_session_changed_back() -> None:
    """The walk reads an entry, another writer archives the session (the entry now looks
    stale), then restores it in the same minute (the entry is its own again): the walk's
    commit must not delete it, or the active session vanishes from listings."""
    clock = ManualClock()
    store = MemorySessionStore()
    other = SessionManager(store=store, clock=clock)
    session = other.create_session("u", session_id="S")
    backend: Any = store._backend
    plan = lifecycle.archive_inactive(to_micros(clock()))
    index = backend.execute(plan.send(None))  # the walk scans the activity index
    headers_read = plan.send(index)
    other.archive("S")
    commit = plan.send(backend.execute(headers_read))  # it sees S archived: stale entry
    assert type(commit) is Commit and commit.delete
    other.restore("S")  # same minute: the entry is S's own again
    answer = backend.execute(commit)
    try:
        while True:
            answer = backend.execute(plan.send(answer))
    except StopIteration as done:
        archived = done.value
    assert other.get_session(session.session_id).status is SessionStatus.ACTIVE
    listed = [s.session_id for s in other.list_sessions(status="active").sessions]
    assert listed == ["S"]
    assert archived == 0  # (the restore saved S at the cutoff itself: not inactive)
