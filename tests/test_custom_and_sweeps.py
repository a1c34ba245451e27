"""A user's own store numbering and checking like the built-in ones; archive, purge and
sweep counts that are exactly what the call itself changed, when its commits lose races."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kvsessions import MemorySessionStore, Message, SessionManager, SessionStore

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
