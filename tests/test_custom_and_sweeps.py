"""A user's own store numbering and checking like the built-in ones; archive, purge and
sweep counts that are exactly what the call itself changed, when its commits lose races."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kvsessions import (
    InvalidIdError,
    InvalidSessionError,
    InvalidValueError,
    MemorySessionStore,
    Message,
    SessionManager,
    SessionStore,
)

from .custom_store import DictStore

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
