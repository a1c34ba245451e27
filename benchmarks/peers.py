"""What users would pick instead of kvsessions, driven the way their users drive them.

Installed only for the benchmarks (``pip install '.[bench]'``); kvsessions never imports them.

``peer-agents``
    The OpenAI Agents SDK's ``SQLiteSession`` on a file: one row per item, WAL, SQLite's
    default ``synchronous=FULL``; its API is async (``add_items`` / ``get_items``, each run in
    a worker thread by the SDK), driven here from one event loop.
``peer-diskcache``
    A whole-session blob store on ``diskcache.Cache``: the session (id, user, messages) as
    one orjson value under its id; diskcache's defaults (SQLite WAL, ``synchronous=NORMAL``,
    large values in files of their own).
``peer-blob``
    The naive table store: one SQLite row per session holding the session as JSON, the
    row rewritten on every save (WAL, ``synchronous=FULL``).

An append is what a caller holding the session does: add one message and save (the blob
stores serialize and rewrite the whole session; ``SQLiteSession`` inserts one row).  A blob
store's cost grows with the history, so its held session is kept at ``history`` messages:
each timed append writes ``history + 1`` messages and then drops the new one from the held
copy (not timed apart: a list pop), so the figure is the cost of an append at ``history``
rather than at a history that grew during the run.  The lost-write workflow
(:func:`appender`) also loads the session first.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from workloads import BATCH, CONTENT, WINDOW, Workload

__all__ = ["PEERS", "DURABILITY", "appender", "build", "count"]

#: The peers and the durability class of their default settings (as kvsessions names them).
DURABILITY = {"peer-agents": "full", "peer-blob": "full", "peer-diskcache": "fast"}
PEERS = list(DURABILITY)
LABELS = {
    "peer-agents": "OpenAI Agents SQLiteSession",
    "peer-blob": "JSON blob in SQLite",
    "peer-diskcache": "diskcache blob",
}
SESSION_ID = "bench-session"


def _message(number: int, text: str = CONTENT) -> dict[str, Any]:
    return {"role": "user" if number % 2 == 0 else "assistant", "content": text}


class _Agents:
    """``agents.SQLiteSession`` behind a blocking face (one private event loop)."""

    def __init__(self, path: Path) -> None:
        from agents import SQLiteSession

        self.loop = asyncio.new_event_loop()
        self.session = SQLiteSession(SESSION_ID, path / "agents.db")

    def add(self, items: list[dict[str, Any]]) -> None:
        self.loop.run_until_complete(self.session.add_items(items))  # type: ignore[arg-type]

    def items(self, limit: int | None = None) -> list[Any]:
        return self.loop.run_until_complete(self.session.get_items(limit))

    def close(self) -> None:
        self.session.close()
        self.loop.close()


class _DiskCache:
    """A session blob per key in ``diskcache.Cache`` (the value: orjson bytes)."""

    def __init__(self, path: Path) -> None:
        import diskcache

        self.cache = diskcache.Cache(str(path / "cache"))

    def write(self, session: dict[str, Any]) -> None:
        self.cache.set(SESSION_ID, orjson.dumps(session))

    def read(self) -> dict[str, Any]:
        return orjson.loads(self.cache.get(SESSION_ID))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.cache.close()


class _Blob:
    """One row per session, the session as JSON text, rewritten on every save."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path / "blob.db", isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, user_id TEXT, data TEXT)"
        )

    def write(self, session: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
            (SESSION_ID, session["user_id"], orjson.dumps(session).decode()),
        )

    def read(self) -> dict[str, Any]:
        row = self.conn.execute("SELECT data FROM sessions WHERE id = ?", (SESSION_ID,)).fetchone()
        return orjson.loads(row[0])  # type: ignore[no-any-return]

    def close(self) -> None:
        self.conn.close()


def _open(peer: str, path: Path) -> Any:
    return {"peer-agents": _Agents, "peer-diskcache": _DiskCache, "peer-blob": _Blob}[peer](path)


def build(op: str, peer: str, path: Path, history: int) -> Workload:
    """``op`` ("append" | "load" | "load_last") on ``peer`` with a ``history``-message session."""
    store = _open(peer, path)
    seed(store, history)
    if isinstance(store, _Agents):
        if op == "append":
            item = [_message(0)]
            return Workload(lambda: store.add(item), store.close)
        limit = WINDOW if op == "load_last" else None
        work = Workload(lambda: store.items(limit), store.close)
    else:
        if op == "append":
            session = store.read()
            messages = session["messages"]

            def append() -> None:
                messages.append(_message(history))
                store.write(session)
                messages.pop()  # so every append is made at ``history`` (see the docstring)

            return Workload(append, store.close)
        if op == "load_last":  # a blob store has to read all of it for the last 20
            work = Workload(lambda: store.read()["messages"][-WINDOW:], store.close)
        else:
            work = Workload(store.read, store.close)
    work.records = len(work.op())
    return work


def seed(store: Any, history: int) -> None:
    """An empty session, then ``history`` messages (blob stores: written once)."""
    if isinstance(store, _Agents):
        for start in range(0, history, BATCH):
            store.add([_message(n) for n in range(start, min(start + BATCH, history))])
        return
    store.write(
        {
            "session_id": SESSION_ID,
            "user_id": "user-1",
            "metadata": {},
            "state": {},
            "messages": [_message(n) for n in range(history)],
        }
    )


def appender(
    peer: str, path: Path, worker: int
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """One process's ``load -> add one message -> save`` cycle on the shared session."""
    store = _open(peer, path)
    if isinstance(store, _Agents):

        def cycle_agents(number: int) -> None:
            store.items()
            store.add([_message(number, f"{worker}-{number}")])

        return cycle_agents, store.close

    def cycle_blob(number: int) -> None:
        session = store.read()
        session["messages"].append(_message(number, f"{worker}-{number}"))
        store.write(session)

    return cycle_blob, store.close


def count(peer: str, path: Path) -> tuple[int, int]:
    """(messages stored, distinct contents among them) in the shared session."""
    store = _open(peer, path)
    try:
        items = store.items() if isinstance(store, _Agents) else store.read()["messages"]
        return len(items), len({item["content"] for item in items})
    finally:
        store.close()
