"""Misuse and extremes: big values, long histories, a full LMDB map, closed stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kvsessions import (
    LMDBSessionStore,
    MemorySessionStore,
    SessionManager,
    SessionStore,
    SQLiteSessionStore,
    StoreClosedError,
    StoreConfigError,
    StoreError,
)

DISK: dict[str, Callable[[Path], SessionStore]] = {
    "lmdb": lambda tmp: LMDBSessionStore(tmp / "s.lmdb", durability="fast"),
    "sqlite": lambda tmp: SQLiteSessionStore(tmp / "s.db", durability="fast"),
    "memory": lambda tmp: MemorySessionStore(),
}


@pytest.mark.parametrize("kind", sorted(DISK))
def test_hundred_thousand_messages(kind: str, tmp_path: Path) -> None:
    manager = SessionManager(store=DISK[kind](tmp_path))
    session = manager.create_session("u")
    for batch in range(10):
        for i in range(10_000):
            session.add_message("user", f"{batch}:{i}")
        manager.save(session)
    loaded = manager.get_session(session.session_id)
    assert loaded.message_count == 100_000
    assert loaded.messages[-1].seq == 99_999 and loaded.messages[-1].content == "9:9999"
    loaded.add_message("assistant", "one more")
    manager.save(loaded)
    again = manager.get_session(session.session_id)
    assert again.message_count == 100_001 and again.messages[-1].content == "one more"


@pytest.mark.parametrize("kind", sorted(DISK))
def test_ten_megabyte_message(kind: str, tmp_path: Path) -> None:
    manager = SessionManager(store=DISK[kind](tmp_path))
    session = manager.create_session("u")
    big = "x" * (10 * 1024 * 1024)
    session.add_message("tool", big, name="dump")
    manager.save(session)
    loaded = manager.get_session(session.session_id)
    assert loaded.messages[0].content == big and loaded.messages[0].extras == {"name": "dump"}


def test_full_lmdb_map_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    store = LMDBSessionStore(tmp_path / "small.lmdb", map_size=256 * 1024)
    manager = SessionManager(store=store)
    session = manager.create_session("u")
    session.add_message("user", "kept")
    manager.save(session)
    session.add_message("user", "y" * 1_000_000)
    with pytest.raises(StoreError, match="map_size"):
        manager.save(session)
    assert [m.content for m in manager.get_session(session.session_id).messages] == ["kept"]
    store.close()
    bigger = SessionManager(store=LMDBSessionStore(tmp_path / "small.lmdb", map_size=2**26))
    session = bigger.get_session(session.session_id)
    session.add_message("user", "y" * 1_000_000)  # the advice in the message works
    bigger.save(session)
    assert bigger.get_session(session.session_id).message_count == 2


@pytest.mark.parametrize("kind", sorted(DISK))
def test_closed_store_raises(kind: str, tmp_path: Path) -> None:
    store = DISK[kind](tmp_path)
    manager = SessionManager(store=store)
    session = manager.create_session("u")
    store.close()
    with pytest.raises(StoreClosedError):
        manager.get_session(session.session_id)
    session.add_message("user", "after close")  # an append: one engine transaction
    with pytest.raises(StoreClosedError):
        manager.save(session)


def test_same_lmdb_path_twice_in_one_process(tmp_path: Path) -> None:
    one = SessionManager(store=LMDBSessionStore(tmp_path / "twice.lmdb"))
    two = SessionManager(store=LMDBSessionStore(tmp_path / "twice.lmdb"))
    session = one.create_session("u")
    loaded = two.get_session(session.session_id)
    loaded.add_message("user", "from two")
    two.save(loaded)
    one.close()  # closing one handle leaves the other working
    assert two.get_session(session.session_id).message_count == 1
    with pytest.raises(StoreConfigError, match="durability"):
        LMDBSessionStore(tmp_path / "twice.lmdb", durability="fast")


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: LMDBSessionStore(tmp / "x.lmdb", durability="sometimes"),
        lambda tmp: SQLiteSessionStore(tmp / "x.db", durability="maybe"),
        lambda tmp: SQLiteSessionStore(tmp / "x.db", table_name="sessions; DROP TABLE x"),
        lambda tmp: SQLiteSessionStore(tmp / "x.db", table_name=""),
    ],
)
def test_bad_store_arguments(make: Callable[[Path], SessionStore], tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError):
        make(tmp_path)


def test_unwritable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        LMDBSessionStore(blocker / "s.lmdb")
    with pytest.raises(StoreError):
        SQLiteSessionStore(blocker / "s.db")


def test_sqlite_tables_share_a_file_without_mixing(tmp_path: Path) -> None:
    a = SessionManager(store=SQLiteSessionStore(tmp_path / "db", table_name="a"))
    b = SessionManager(store=SQLiteSessionStore(tmp_path / "db", table_name="b"))
    a.create_session("u", session_id="same")
    b.create_session("u", session_id="same")
    a.clear_all()
    assert a.get_session("same") is None and b.get_session("same") is not None
