"""The asyncio manager and event loops: one manager used from several loops (a thread
each), as the framework adapters use one per store; heavy work kept off the loop."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvsessions import (
    AsyncSessionManager,
    RedisSessionStore,
    core,
)
from kvsessions.backends.base import HEAVY_STEP_ROWS

from .local_stores import LOCAL_KINDS, local_store


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_one_manager_serves_several_event_loops(kind: str, tmp_path: Path) -> None:
    """Each thread runs its own loop with concurrent tasks saving; a group commit once
    resolved one loop's futures from another loop's thread, and those loops hung."""
    manager = AsyncSessionManager(store=local_store(kind, tmp_path))
    threads, tasks, saves = 4, 5, 20
    session_ids: list[str] = []

    def worker() -> None:
        async def append(session_id: str) -> None:
            for i in range(saves):
                session = await manager.get_session(session_id, messages=0)
                assert session is not None
                session.add_message("user", f"m{i}")
                await manager.save(session)

        async def main() -> None:
            ids = [(await manager.create_session("u")).session_id for _ in range(tasks)]
            session_ids.extend(ids)
            await asyncio.gather(*(append(session_id) for session_id in ids))

        asyncio.run(main())

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    assert not any(thread.is_alive() for thread in workers), "an event loop hung"

    async def counts() -> list[int]:
        loaded = [await manager.get_session(session_id) for session_id in session_ids]
        await manager.close()
        return [session.message_count for session in loaded if session is not None]

    assert asyncio.run(counts()) == [saves] * (threads * tasks)


@pytest.mark.parametrize("kind", [*LOCAL_KINDS, "redis"])
def test_a_large_save_encodes_off_the_loop(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Encoding thousands of messages took the loop for tens of milliseconds; a save of
    more than HEAVY_STEP_ROWS messages takes its first step (the encoding) in the pool,
    while a small one stays on the loop, where a thread hop would cost more."""
    threads: list[int] = []
    real = core.encode_message

    def recording(message: Any, seq: int) -> bytes:
        threads.append(threading.get_ident())
        return real(message, seq)

    monkeypatch.setattr(core, "encode_message", recording)

    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        store = RedisSessionStore(server.url, prefix=f"t{uuid.uuid4().hex[:10]}:")
    else:
        store = local_store(kind, tmp_path)

    async def main() -> tuple[int, set[int], set[int]]:
        manager = AsyncSessionManager(store=store)
        session = await manager.create_session("u")
        for i in range(HEAVY_STEP_ROWS * 4):
            session.add_message("user", f"m{i}")
        await manager.save(session)
        large = set(threads)
        threads.clear()
        for i in range(3):
            session.add_message("user", f"n{i}")
        await manager.save(session)
        small = set(threads)
        loaded = await manager.get_session(session.session_id)
        await manager.clear_all()
        await manager.close()
        assert loaded is not None
        return loaded.message_count, large, small

    count, large, small = asyncio.run(main())
    loop_thread = threading.get_ident()  # (asyncio.run runs the loop in this thread)
    assert count == HEAVY_STEP_ROWS * 4 + 3
    assert large and loop_thread not in large
    assert small == {loop_thread}
