"""Import and copy_store keep sessions whole: duplicates, bad input, offsets, partial files."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from kvsessions import (
    LMDBSessionStore,
    MemorySessionStore,
    Session,
    SessionManager,
    SessionStore,
    SQLiteSessionStore,
    transfer,
)

T0 = "2026-01-01T00:00:00+00:00"

STORES: dict[str, Callable[[Path], SessionStore]] = {
    "memory": lambda _: MemorySessionStore(),
    "lmdb": lambda path: LMDBSessionStore(path / "s.lmdb"),
    "sqlite": lambda path: SQLiteSessionStore(path / "s.db"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    opened = STORES[request.param](tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def manager(store: SessionStore) -> SessionManager:
    return SessionManager(store)


def line(sid: str, contents: tuple[str, ...] = (), at: str = T0, **fields: Any) -> str:
    """One export line: session ``sid`` of user ``u`` with a message per content."""
    messages = [
        {"seq": seq, "role": "user", "content": text, "timestamp": at, "extras": {}}
        for seq, text in enumerate(contents)
    ]
    record: dict[str, Any] = {
        "format": transfer.FORMAT, "session_id": sid, "user_id": "u", "status": "active",
        "created_at": at, "updated_at": at, "parent_id": None, "metadata": {}, "state": {},
        "messages": messages,
    }  # fmt: skip
    return orjson.dumps({**record, **fields}).decode() + "\n"


def loaded(manager: SessionManager, sid: str) -> Session:
    session = manager.get_session(sid)
    assert session is not None
    return session


def contents(manager: SessionManager, sid: str) -> list[tuple[int | None, Any]]:
    return [(m.seq, m.content) for m in loaded(manager, sid).messages]


# -- 1. one id twice in one file -------------------------------------------------------------


@pytest.mark.parametrize("page", [transfer.PAGE, 1], ids=["same-batch", "separate-batches"])
def test_import_duplicate_id_is_a_conflict_not_a_merge(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    monkeypatch.setattr(transfer, "PAGE", page)
    data = line("X", ("a0", "a1", "a2")) + line("X", ("b0",), "2026-02-01T00:00:00+00:00")
    report = manager.import_(io.StringIO(data))
    assert (report.created, report.unchanged, report.conflicts) == (1, 0, ("X",))
    assert contents(manager, "X") == [(0, "a0"), (1, "a1"), (2, "a2")]
    assert loaded(manager, "X").message_count == 3
    assert [s.session_id for s in manager.get_sessions_for_user("u")] == ["X"]
    session = loaded(manager, "X")
    session.add_message("user", "new")
    manager.save(session)
    assert contents(manager, "X")[-2:] == [(2, "a2"), (3, "new")]


@pytest.mark.parametrize("page", [transfer.PAGE, 1], ids=["same-batch", "separate-batches"])
def test_import_identical_duplicate_counts_unchanged(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    monkeypatch.setattr(transfer, "PAGE", page)
    data = line("X", ("a0",)) + line("Y") + line("X", ("a0",))
    report = manager.import_(io.StringIO(data))
    assert (report.created, report.unchanged, report.conflicts) == (2, 1, ())
    assert contents(manager, "X") == [(0, "a0")]
