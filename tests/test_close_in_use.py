"""Closing a store or an asyncio manager while other threads or tasks still use it.

Calls under way finish (or fail with ``StoreClosedError``); the engine's handles are
released only once the last of them returns, so no thread is ever left inside a closed
engine (which crashed the process: a closed LMDB environment or SQLite connection freed
under a running call).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from kvsessions import (
    AsyncSessionManager,
    SessionManager,
    StoreClosedError,
)

from .child_process import run_json
from .local_stores import LOCAL_KINDS, local_store


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_close_waits_for_the_call_under_way(kind: str, tmp_path: Path) -> None:
    """A call that is running when another thread closes the store completes on the
    still-open engine; the engine is released when it returns; later calls are refused."""
    store = local_store(kind, tmp_path)
    manager = SessionManager(store=store)
    session = manager.create_session(user_id="u")
    inside, closed = threading.Event(), threading.Event()

    def change(loaded: Any) -> None:  # runs inside the store call, between read and write
        inside.set()
        assert closed.wait(10)
        loaded.set_state("n", 1)

    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(manager.update(session.session_id, change))
    )
    worker.start()
    assert inside.wait(10)
    store.close()
    assert not store._backend._released  # (the update is still running on the engine)
    closed.set()
    worker.join(10)
    assert result and result[0].get_state("n") == 1  # the call under way went through
    assert store._backend._released
    with pytest.raises(StoreClosedError):
        manager.get_session(session.session_id)
    reopened = SessionManager(store=local_store(kind, tmp_path))
    if kind != "memory":  # the update was written before the engine was released
        stored = reopened.get_session(session.session_id)
        assert stored is not None and stored.get_state("n") == 1
    reopened.close()


_HAMMER = """
import json, sys, tempfile, threading, time
from pathlib import Path
from kvsessions import SessionManager, SQLiteSessionStore, LMDBSessionStore, MemorySessionStore
kind = sys.argv[1]
errors = {}
for trial in range(12):
    path = Path(tempfile.mkdtemp())
    store = {"memory": lambda: MemorySessionStore(),
             "lmdb": lambda: LMDBSessionStore(path / "s.lmdb", durability="fast"),
             "sqlite": lambda: SQLiteSessionStore(path=path / "s.db", durability="fast")}[kind]()
    manager = SessionManager(store=store)
    session = manager.create_session("u")
    for i in range(100):
        session.add_message("user", f"m{i}")
    manager.save(session)
    stop = False
    def work():
        while not stop:
            try:
                loaded = manager.get_session(session.session_id)
                loaded.add_message("user", "more")
                manager.save(loaded)
                manager.list_sessions("u")
                manager.get_session(session.session_id, messages=0)
            except Exception as exc:
                name = f"{type(exc).__module__}.{type(exc).__name__}"
                errors[name] = errors.get(name, 0) + 1
                return
    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.02)
    store.close()
    stop = True
    for thread in threads:
        thread.join()
print(json.dumps(errors))
"""


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_closing_under_load_only_raises_store_closed(kind: str, tmp_path: Path) -> None:
    """Threads saving and listing while the store closes get ``StoreClosedError`` and
    nothing else; the process survives (run in a child: a crash must not take pytest)."""
    script = tmp_path / "hammer.py"
    script.write_text(_HAMMER)
    errors = run_json([str(script), kind])
    assert set(errors) <= {"kvsessions.errors.StoreClosedError"}, errors


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_async_close_under_load_only_raises_store_closed(kind: str, tmp_path: Path) -> None:
    """Tasks still saving when ``AsyncSessionManager.close()`` runs get
    ``StoreClosedError``, not the worker pool's ``RuntimeError`` after its shutdown."""
    seen: dict[str, int] = {}

    async def main() -> None:
        manager = AsyncSessionManager(store=local_store(kind, tmp_path))
        ids = [(await manager.create_session("u")).session_id for _ in range(6)]

        async def work(session_id: str) -> None:
            try:
                while True:
                    session = await manager.get_session(session_id)
                    assert session is not None
                    session.add_message("user", "x")
                    await manager.save(session)
                    await manager.list_sessions("u")
            except Exception as exc:
                name = f"{type(exc).__module__}.{type(exc).__name__}"
                seen[name] = seen.get(name, 0) + 1

        tasks = [asyncio.create_task(work(session_id)) for session_id in ids]
        await asyncio.sleep(0.05)
        await manager.close()
        await asyncio.gather(*tasks)

    for _ in range(5):
        asyncio.run(main())
    assert seen == {"kvsessions.errors.StoreClosedError": 30}, seen


@pytest.mark.parametrize("kind", ["lmdb", "sqlite"])
@pytest.mark.parametrize("first", ["call", "close"])
def test_a_forked_child_is_not_held_by_the_parents_calls(
    kind: str, first: str, tmp_path: Path
) -> None:
    """A child forked while another thread of the parent is inside a store call inherits
    that call's place in the count, but not the thread: the child's close must not wait
    for it (whether the child uses the store first or closes it at once)."""
    store = local_store(kind, tmp_path)
    manager = SessionManager(store=store)
    session = manager.create_session(user_id="u")
    inside, release = threading.Event(), threading.Event()

    def change(loaded: Any) -> None:
        inside.set()
        assert release.wait(10)

    worker = threading.Thread(target=lambda: manager.update(session.session_id, change))
    worker.start()
    assert inside.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            if first == "call":
                manager.get_session(session.session_id)
            store.close()
            code = 0 if store._backend._released else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    worker.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
    store.close()
    assert store._backend._released
