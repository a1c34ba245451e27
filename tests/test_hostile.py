"""~50 hostile ids on every store: each round-trips exactly or is refused with a typed error."""

from __future__ import annotations

import os
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvsessions import (
    InvalidIdError,
    LMDBSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SessionManager,
    SessionStore,
    SQLiteSessionStore,
)

STORABLE = [
    "a", "A", "0", " ", "  leading", "trailing  ", "tab\there", "new\nline", "cr\rlf",
    "a/b", "../../etc/passwd", "..", ".", "/abs", "C:\\windows", "a:b", "a::b", "100%",
    "%s%d", "%00", "_", "a_b%c", "*", "a*b", "?", "[abc]", "{tag}", "{", "}", "{}x",
    "'; DROP TABLE sessions; --", '"quoted"', "a\x01b", "\x7f", "\x1b[31mred",
    unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"),
    "ﬁ", "fi", "ユーザー", "emoji🙂", "\u200b", "\ufeffbom", "רשת", "x" * 200,
    "é" * 100, "h", "m", "i", "key\xff", "0" * 199 + "1",
]  # fmt: skip
REFUSED: list[Any] = ["", "a\x00b", "\x00", "\ud800", "x" * 201, "é" * 101, 7, 7.0, None,
                      b"bytes", ["list"], ("t",)]  # fmt: skip


@pytest.fixture(params=["memory", "lmdb", "sqlite", "redis"])
def store_dir(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SessionStore, Path]]:
    where = tmp_path / "store"
    where.mkdir()
    makers: dict[str, Callable[[], SessionStore]] = {
        "memory": MemorySessionStore,
        "lmdb": lambda: LMDBSessionStore(where / "s.lmdb"),
        "sqlite": lambda: SQLiteSessionStore(where / "s.db"),
        "redis": lambda: RedisSessionStore(
            request.getfixturevalue("redis_server").url, prefix=f"h{uuid.uuid4().hex}:"
        ),
    }
    store = makers[str(request.param)]()
    yield store, where
    store.close()


def test_hostile_ids(store_dir: tuple[SessionStore, Path], tmp_path: Path) -> None:
    store, where = store_dir
    manager = SessionManager(store=store)
    assert len(set(STORABLE)) == len(STORABLE) and len(STORABLE) + len(REFUSED) >= 50
    for odd in STORABLE:  # each id as both a session id and a user id
        session = manager.create_session(odd, session_id=odd)
        session.add_message("user", odd)
        manager.save(session)
    for odd in STORABLE:
        loaded = manager.get_session(odd)
        assert loaded.session_id == odd and loaded.user_id == odd
        assert [m.content for m in loaded.messages] == [odd]
        assert [s.session_id for s in manager.get_sessions_for_user(odd)] == [odd]
    for bad in REFUSED:
        if bad is not None:  # session_id=None asks for a generated id
            with pytest.raises(InvalidIdError):
                manager.create_session("u", session_id=bad)
        with pytest.raises(InvalidIdError):
            manager.create_session(bad)
        if isinstance(bad, str):
            with pytest.raises(InvalidIdError):
                manager.get_session(bad)
    assert manager.get_sessions_for_user("u") == []
    assert sorted(os.listdir(tmp_path)) == ["store"]  # nothing written outside the store
    assert all(not name.startswith("..") for name in os.listdir(where))
