"""Import and copy_store keep sessions whole: duplicates, bad input, offsets, partial files."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from kvsessions import (
    InvalidSessionError,
    LMDBSessionStore,
    MemorySessionStore,
    Message,
    Session,
    SessionManager,
    SessionStore,
    SQLiteSessionStore,
    copy_store,
    transfer,
)

from .custom_store import DictStore

T0 = "2026-01-01T00:00:00+00:00"
MESSAGE = {"seq": 0, "role": "user", "content": "hi", "timestamp": T0, "extras": {}}

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


# -- 2. copy_store from a user's own store ---------------------------------------------------


def _user_session(sid: str, messages: list[Message], created: datetime | None = None) -> Session:
    at = created or datetime(2026, 1, 1, tzinfo=UTC)
    return Session(sid, "u", messages=messages, created_at=at, updated_at=at)


def _message(seq: Any, at: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> Message:
    return Message("user", f"m{seq}", at, {}, seq)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([_message(0), _message(2), _message(2)], id="repeated-seq"),
        pytest.param([_message(1), _message(0)], id="descending-seqs"),
        pytest.param([_message(None)], id="no-seq"),
        pytest.param([_message(True)], id="bool-seq"),
        pytest.param([_message(2**63)], id="seq-too-large"),
        pytest.param([Message("", "x", datetime(2026, 1, 1, tzinfo=UTC), {}, 0)], id="no-role"),
        pytest.param([Message("user", {1}, datetime(2026, 1, 1, tzinfo=UTC), {}, 0)], id="set"),
        pytest.param([Message("user", "x", datetime(2026, 1, 1), {}, 0)], id="naive-time"),
    ],
)
def test_copy_store_refuses_what_import_refuses(store: SessionStore, bad: list[Message]) -> None:
    source = DictStore()
    newer = datetime(2027, 1, 1, tzinfo=UTC)  # (copied first: listings are newest first)
    source.sessions["good"] = _user_session("good", [_message(0)], newer)
    source.sessions["bad"] = _user_session("bad", bad)
    with pytest.raises(InvalidSessionError, match="'bad'"):
        copy_store(source, store)
    target = SessionManager(store)
    assert target.get_session("bad") is None  # nothing half-written
    assert contents(target, "good") == [(0, "m0")]  # the sessions before it are copied


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"created_at": "1960-01-01T00:00:00+00:00"}, id="created-1960"),
        pytest.param({"messages": [{**MESSAGE, "seq": 2**64 - 1}]}, id="seq-2**64-1"),
        pytest.param({"messages": [{**MESSAGE, "seq": 2**63}]}, id="seq-2**63"),
        pytest.param({"messages": [{**MESSAGE, "seq": -1}]}, id="seq-negative"),
        pytest.param({"updated_at": "1969-12-31T23:59:59+00:00"}, id="updated-1969"),
        pytest.param({"created_at": "0001-01-01T00:00:00+01:00"}, id="created-year-0"),
    ],
)
def test_import_refuses_values_out_of_range(manager: SessionManager, fields: Any) -> None:
    with pytest.raises(InvalidSessionError, match="line 1"):
        manager.import_(io.StringIO(line("A", **fields)))
    assert manager.get_session("A") is None


# -- 3. a bad line: the lines before it are imported -----------------------------------------


@pytest.mark.parametrize("page", [transfer.PAGE, 2], ids=["one-batch", "batches-of-2"])
def test_import_keeps_the_lines_before_a_bad_line(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    monkeypatch.setattr(transfer, "PAGE", page)
    data = line("A", ("a",)) + line("B") + line("C") + "{not json\n" + line("D")
    with pytest.raises(InvalidSessionError, match="line 4"):
        manager.import_(io.StringIO(data))
    assert [manager.get_session(sid) is not None for sid in "ABCD"] == [True] * 3 + [False]
    report = manager.import_(io.StringIO(data.replace("{not json\n", "")))  # re-running is safe
    assert (report.created, report.unchanged, report.conflicts) == (1, 3, ())


# -- 4. times with another UTC offset ----------------------------------------------------------


def test_import_twice_with_a_non_utc_offset_is_unchanged(manager: SessionManager) -> None:
    data = line("X", ("hi",), "2026-01-01T10:00:00.123456+02:00")
    first, second = manager.import_(io.StringIO(data)), manager.import_(io.StringIO(data))
    assert (first.created, second.created, second.unchanged, second.conflicts) == (1, 0, 1, ())
    moment = datetime(2026, 1, 1, 8, 0, 0, 123456, tzinfo=UTC)
    session = loaded(manager, "X")
    assert (session.created_at, session.messages[0].timestamp) == (moment, moment)
    same = line("X", ("hi",), "2026-01-01T03:00:00.123456-05:00")  # the same moment again
    assert manager.import_(io.StringIO(same)).unchanged == 1


def test_copy_store_twice_with_a_non_utc_offset_is_unchanged(store: SessionStore) -> None:
    source = DictStore()
    at = datetime(2026, 1, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    source.sessions["X"] = _user_session("X", [_message(0, at)], at)
    assert copy_store(source, store).created == 1
    again = copy_store(source, store)
    assert (again.created, again.unchanged, again.conflicts) == (0, 1, ())
