"""One AsyncSessionManager used from several event loops (a thread each), as the
framework adapters use one manager per store: every loop's saves complete."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from kvsessions import AsyncSessionManager, LMDBSessionStore, MemorySessionStore, SQLiteSessionStore


def _store(kind: str, path: Path) -> Any:
    if kind == "memory":
        return MemorySessionStore()
    if kind == "lmdb":
        return LMDBSessionStore(path / "s.lmdb", durability="fast")
    return SQLiteSessionStore(path=path / "s.db", durability="fast")


@pytest.mark.parametrize("kind", ["memory", "lmdb", "sqlite"])
def test_one_manager_serves_several_event_loops(kind: str, tmp_path: Path) -> None:
    """Each thread runs its own loop with concurrent tasks saving; a group commit once
    resolved one loop's futures from another loop's thread, and those loops hung."""
    manager = AsyncSessionManager(store=_store(kind, tmp_path))
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
