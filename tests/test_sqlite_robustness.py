"""The SQLite backend against what it meets outside the happy path: a close while other
threads are inside an operation, values another tool stored as TEXT or INTEGER, a damaged
file, a foreign table of the same name, names SQLite treats specially, a NUL in the path."""

from __future__ import annotations

import inspect
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kvsessions import (
    CorruptRecordError,
    Session,
    SessionManager,
    SQLiteSessionStore,
    StoreClosedError,
    StoreConfigError,
    StoreError,
    codec,
    keys,
    open_store,
)
from kvsessions.backends.base import Get, Plan
from kvsessions.cli import cli


def run_cli(*args: str) -> Result:
    """The ``kvsessions`` command in-process (stdout and stderr kept apart)."""
    split: dict[str, Any] = {}
    if "mix_stderr" in inspect.signature(CliRunner).parameters:  # (click < 8.2)
        split["mix_stderr"] = False
    return CliRunner(**split).invoke(cli, list(args))


def one_line_error(result: Result, command: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kvsessions {command}: "), result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


def saved(path: Path, messages: int = 1, table: str = "sessions") -> Session:
    """One session of ``messages`` messages in a new store at ``path`` (closed after)."""
    with SessionManager(store=SQLiteSessionStore(path, table, durability="fast")) as manager:
        session = manager.create_session("u")
        for i in range(messages):
            session.add_message("user", f"{i}:" + "x" * 200)
        return manager.save(session)


def set_raw(path: Path, key: bytes, value: Any) -> None:
    """Store ``value`` under ``key`` as another tool would, with SQLite's own type."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("UPDATE sessions SET v = ? WHERE k = ?", (value, key))
        conn.commit()
    finally:
        conn.close()


# -- 1. close while other threads are inside an operation ---------------------------------

# (closing under load from several threads: tests/test_close_in_use.py, on every store)


CLOSE_INSIDE_WRITE = """
import sys, threading
from kvsessions import SessionManager, SQLiteSessionStore, StoreClosedError
store = SQLiteSessionStore(sys.argv[1], durability="fast")
manager = SessionManager(store=store)
session = manager.create_session("u")
inside, closed, outcome = threading.Event(), threading.Event(), []
def pause(sql):
    if sql.startswith("UPDATE"):  # an append's compare-and-set, inside the engine's write_if
        inside.set()
        closed.wait(10)
def work():
    store._backend._connection().set_trace_callback(pause)
    session.add_message("user", "saved during close")
    try:
        manager.save(session)
        outcome.append("saved")
    except Exception as exc:
        outcome.append(repr(exc))
    try:
        manager.get_session(session.session_id)
        outcome.append("read after close")
    except Exception as exc:
        outcome.append(type(exc).__name__)
thread = threading.Thread(target=work)
thread.start()
inside.wait(10)
store.close()
closed.set()
thread.join()
print(outcome)
"""


def test_close_during_a_save_lets_it_finish(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLOSE_INSIDE_WRITE, str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "['saved', 'StoreClosedError']", done.stdout
    assert not (tmp_path / "s.db-wal").exists()  # the connections were closed after it


def test_close_leaves_a_transaction_under_way_usable(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "s.db", durability="fast")
    backend = store._backend
    inside, closed = threading.Event(), threading.Event()
    outcome: list[object] = []

    def plan() -> Plan[list[bytes | None]]:
        first = yield Get(keys.FORMAT_KEY)  # the read transaction is open from here
        inside.set()
        closed.wait(10)
        second = yield Get(keys.FORMAT_KEY)  # ... in the same transaction
        return [first, second]

    def work() -> None:
        try:
            outcome.append(backend.run(plan(), write=False))
        except Exception as exc:
            outcome.append(exc)
        try:
            backend.run(plan(), write=False)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    assert inside.wait(10)
    store.close()
    closed.set()
    thread.join(10)
    first, then = outcome
    assert first == [b"%d" % keys.STORE_FORMAT] * 2 or isinstance(first, StoreClosedError), first
    assert isinstance(then, StoreClosedError), then


def test_close_closes_idle_connections_and_refuses_their_threads(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "s.db", durability="fast")
    manager = SessionManager(store=store)
    session = manager.create_session("u")
    used, closed, errors = threading.Event(), threading.Event(), []

    def other_thread() -> None:
        manager.get_session(session.session_id)  # opens this thread's connection
        used.set()
        closed.wait(10)
        try:
            manager.get_session(session.session_id)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert used.wait(10)
    store.close()
    closed.set()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], StoreClosedError), errors
    with pytest.raises(StoreClosedError):
        manager.get_session(session.session_id)
    assert not (tmp_path / "s.db-wal").exists()  # every connection closed: WAL checkpointed


# -- 2. a value stored as TEXT or INTEGER instead of BLOB ---------------------------------


@pytest.mark.parametrize("value", ["garbage", 7, 1.5, b"\x00K".decode()])
def test_decoders_call_a_value_that_is_not_bytes_damage(value: object) -> None:
    with pytest.raises(CorruptRecordError, match="run `kvsessions check`"):
        codec.decode_header(value)  # type: ignore[arg-type]
    with pytest.raises(CorruptRecordError, match="run `kvsessions check`"):
        codec.decode_message(value)  # type: ignore[arg-type]
    with pytest.raises(CorruptRecordError):
        codec.decode_messages([(b"m", value)])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("record", "value"),
    [("header", "garbage"), ("header", 7), ("message", "garbage"), ("message", 7)],
)
def test_text_or_integer_record_is_corrupt_record_error(
    record: str, value: object, tmp_path: Path
) -> None:
    path = tmp_path / "s.db"
    session = saved(path)
    sid = session.session_id
    key = keys.header_key(sid) if record == "header" else keys.message_key(sid, 0)
    set_raw(path, key, value)
    manager = SessionManager(store=SQLiteSessionStore(path))
    with pytest.raises(CorruptRecordError):
        manager.get_session(sid)
    with pytest.raises(CorruptRecordError):
        manager.get_sessions_for_user("u")
    with pytest.raises(CorruptRecordError):
        manager.export(tmp_path / "out.jsonl")
    if record == "header":
        with pytest.raises(CorruptRecordError):
            manager.list_sessions("u")
    manager.close()
    report = run_cli("check", str(path))
    assert report.exit_code == 1, report.output
    assert repr(key) in report.stdout and "1 damaged record(s)" in report.stdout


# -- 3. engine errors on reads --------------------------------------------------------------


def scribble(path: Path, first_page: int) -> None:
    """Overwrite the start of every page from ``first_page`` (1-based) on."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    data = bytearray(path.read_bytes())
    for offset in range((first_page - 1) * page_size, len(data), page_size):
        data[offset : offset + 32] = b"\xde\xad\xbe\xef" * 8
    path.write_bytes(bytes(data))


def test_damaged_file_is_a_store_error_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    saved(path, messages=300)
    scribble(path, first_page=2)  # every page but the schema
    with pytest.raises(StoreError, match="damaged") as caught:
        SQLiteSessionStore(path)
    assert not isinstance(caught.value, sqlite3.Error)
    assert "Traceback" not in one_line_error(run_cli("stats", "-s", f"sqlite:{path}"), "stats")


def test_damaged_file_is_a_store_error_when_read(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    session = saved(path, messages=300)
    manager = SessionManager(store=SQLiteSessionStore(path))  # reads the format marker
    scribble(path, first_page=3)  # the pages of the records, under the open store
    for read in (
        lambda: manager.get_session(session.session_id),
        lambda: manager.list_sessions(status=None),
    ):
        with pytest.raises(StoreError, match="damaged") as caught:
            read()
        assert not isinstance(caught.value, sqlite3.Error)
    manager.close()


# -- 4. a table of the same name with another layout -------------------------------------


def foreign_table(path: Path, name: str = "sessions") -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {name} (id TEXT PRIMARY KEY, cookie TEXT)")
    conn.commit()
    conn.close()


def test_foreign_table_of_the_same_name_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    foreign_table(path)
    with pytest.raises(StoreConfigError, match=r"'sessions'.*table_name"):
        SQLiteSessionStore(path)
    with pytest.raises(StoreConfigError, match="'sessions'"):
        open_store(f"sqlite:{path}")
    line = one_line_error(run_cli("stats", "-s", f"sqlite:{path}"), "stats")
    assert "'sessions'" in line
    SessionManager(store=SQLiteSessionStore(path, "chat")).close()  # the advice works


def test_index_of_the_same_name_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a)")
    conn.execute("CREATE INDEX chat ON t (a)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreConfigError, match=r"'Chat'.*index named.*table_name"):
        SQLiteSessionStore(path, "Chat")


def test_table_names_are_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    session = saved(path, table="Chat")
    with SessionManager(store=SQLiteSessionStore(path, "CHAT")) as manager:  # one table
        assert manager.get_session(session.session_id) is not None


# -- 5. names SQLite treats specially ------------------------------------------------------


@pytest.mark.parametrize("name", ["order", "select", "table", "Group", "where"])
def test_keyword_table_names_work(name: str, tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    session = saved(path, messages=2, table=name)
    with SessionManager(store=SQLiteSessionStore(path, name)) as manager:
        loaded = manager.get_session(session.session_id)
        assert loaded is not None and loaded.message_count == 2
        assert [s.session_id for s in manager.list_sessions("u").sessions] == [session.session_id]
        manager.clear_all()
        assert manager.get_session(session.session_id) is None


@pytest.mark.parametrize("name", ["sqlite_master", "sqlite_x", "SQLite_sequence", "SQLITE_"])
def test_reserved_table_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="sqlite_"):
        SQLiteSessionStore(tmp_path / "s.db", name)
    assert not (tmp_path / "s.db").exists()


# -- 6. a NUL in the path ------------------------------------------------------------------


@pytest.mark.parametrize(
    "open_it",
    [
        lambda tmp: SQLiteSessionStore(tmp / "x\0y.db"),
        lambda tmp: SQLiteSessionStore(f"{tmp}/x\0y.db"),
        lambda tmp: open_store(f"sqlite:{tmp}/x%00y.db"),
    ],
)
def test_nul_in_the_path_is_a_config_error(open_it: Any, tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="NUL"):
        open_it(tmp_path)
