"""The asyncio facade: same API as the blocking one, loop never held, cancellation safe."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvsessions import (
    AsyncSessionManager,
    LMDBSessionStore,
    MemorySessionStore,
    Session,
    SessionExistsError,
    SessionManager,
    SessionStore,
    SQLiteSessionStore,
    StoreClosedError,
)

from .custom_store import DictStore

STORES: dict[str, Callable[[Path], SessionStore]] = {
    "memory": lambda tmp: MemorySessionStore(),
    "lmdb": lambda tmp: LMDBSessionStore(tmp / "s.lmdb", durability="fast"),
    "sqlite": lambda tmp: SQLiteSessionStore(tmp / "s.db", durability="fast"),
    "custom": lambda tmp: DictStore(),
}


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_method_sets_are_identical() -> None:
    blocking, asynchronous = _public(SessionManager), _public(AsyncSessionManager)
    assert blocking.keys() == asynchronous.keys()
    for name, method in blocking.items():
        twin = asynchronous[name]
        assert inspect.iscoroutinefunction(twin), name
        assert not inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == inspect.signature(twin), name
        assert method.__doc__ == twin.__doc__ or name == "close", name


@pytest.mark.parametrize("kind", ["lmdb", "sqlite", "memory"])
def test_thousand_concurrent_sessions_keep_engine_work_off_the_loop(
    kind: str, tmp_path: Path
) -> None:
    """1,000 conversations served at once, all stored right; no engine transaction of a
    blocking store runs on the loop's thread.  The loop's stalls are measured and printed
    (a heartbeat), not asserted: how long they are depends on the machine; the
    figures are in ``benchmarks/concurrency.py`` and the closing notes."""

    async def conversation(manager: AsyncSessionManager, number: int, rnd: random.Random) -> None:
        await asyncio.sleep(rnd.uniform(0, 1.5))  # clients arrive over 1.5 s
        session = await manager.create_session(f"user{number % 100}")
        for turn in range(3):
            await asyncio.sleep(rnd.uniform(0.02, 0.3))  # the model thinking
            session.add_message("user", f"question {turn} " * 4)
            session.add_message("assistant", f"answer {turn} " * 8)
            await manager.save(session)
        loaded = await manager.get_session(session.session_id)
        assert loaded is not None and loaded.message_count == 6
        assert [m.content for m in loaded.messages] == [m.content for m in session.messages]

    engine_threads: set[int] = set()

    async def main() -> tuple[list[float], int]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await asyncio.sleep(0.001)
                gaps.append(time.perf_counter() - start - 0.001)

        async with AsyncSessionManager(store=STORES[kind](tmp_path)) as manager:
            backend = manager._backend
            if backend.blocking:  # record the thread of every engine transaction
                begin = backend._begin

                def recorded(write: bool) -> Any:
                    engine_threads.add(threading.get_ident())
                    return begin(write)

                backend._begin = recorded
            beat = asyncio.create_task(heartbeat())
            rnd = random.Random(7)
            tasks = []
            for number in range(1000):
                tasks.append(asyncio.create_task(conversation(manager, number, rnd)))
                if number % 25 == 24:
                    await asyncio.sleep(0)  # the clients arrive, not all in one instant
            await asyncio.gather(*tasks)
            done.set()
            await beat
            users = await asyncio.gather(
                *(manager.get_sessions_for_user(f"user{u}") for u in range(100))
            )
            assert sum(len(sessions) for sessions in users) == 1000
        return sorted(gaps), threading.get_ident()

    gaps, loop_thread = asyncio.run(main())
    worst, p99 = gaps[-1] * 1000, gaps[int(len(gaps) * 0.99)] * 1000
    print(
        f"\n{kind}: heartbeat worst stall {worst:.1f} ms, p99 {p99:.2f} ms, "
        f"median {gaps[len(gaps) // 2] * 1000:.2f} ms over {len(gaps)} beats"
    )
    if kind != "memory":  # (the memory store answers on the loop: it never waits on I/O)
        assert engine_threads and loop_thread not in engine_threads


@pytest.mark.parametrize("kind", ["lmdb", "sqlite"])
def test_cancelled_save_is_whole_or_absent(kind: str, tmp_path: Path) -> None:
    async def main() -> list[int]:
        outcomes = []
        async with AsyncSessionManager(store=STORES[kind](tmp_path)) as manager:
            session = await manager.create_session("u")
            for round_number in range(12):
                before = (await manager.get_session(session.session_id)).message_count
                fresh = await manager.get_session(session.session_id)
                for i in range(500):
                    fresh.add_message("user", f"r{round_number}-{i}")
                fresh.set_state(f"round{round_number}", True)
                task = asyncio.create_task(manager.save(fresh))
                await asyncio.sleep(0.0005 * round_number)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await asyncio.sleep(0.05)  # let a commit still running in a worker end
                stored = await manager.get_session(session.session_id)
                added = stored.message_count - before
                assert added in (0, 500), added  # whole or nothing
                assert stored.get_state(f"round{round_number}") is (True if added else None)
                if added:
                    assert [m.content for m in stored.messages[before:]] == [
                        f"r{round_number}-{i}" for i in range(500)
                    ]
                await manager.save(fresh)  # retrying the cancelled save: stored exactly once
                again = await manager.get_session(session.session_id)
                assert again.message_count == before + 500
                assert [m.content for m in fresh.messages] == [m.content for m in again.messages]
                outcomes.append(added)
            usable = await manager.get_session(session.session_id)  # still usable
            usable.add_message("user", "after")
            await manager.save(usable)
            assert (await manager.get_session(session.session_id)).messages[-1].content == "after"
        return outcomes

    outcomes = asyncio.run(main())
    print(
        f"\n{kind}: saves applied whole / cancelled before commit: "
        f"{outcomes.count(500)} / {outcomes.count(0)}"
    )
    assert len(outcomes) == 12 and 0 in outcomes  # round 0 is cancelled before it starts


class StubAgent:
    """The seed's agent, minus the model: it echoes, after 'thinking'."""

    async def run(self, text: str, history: list[dict[str, Any]]) -> str:
        await asyncio.sleep(random.uniform(0, 0.01))
        return f"echo #{len(history)}: {text}"


@pytest.mark.parametrize("kind", sorted(STORES))
def test_agents_example_fifty_users_lose_nothing(kind: str, tmp_path: Path) -> None:
    agent = StubAgent()

    async def chat(manager: AsyncSessionManager, user_id: str, text: str) -> str:
        # the seed's "Using with Agents" flow: get-or-create, history, run, append, save
        session = await manager.get_session(f"chat-{user_id}")
        if session is None:
            try:
                session = await manager.create_session(
                    user_id=user_id, session_id=f"chat-{user_id}"
                )
            except SessionExistsError:  # another request of this user created it first
                session = await manager.get_session(f"chat-{user_id}")
        assert session is not None
        history = [{"role": m.role, "content": m.content} for m in session.messages]
        response = await agent.run(text, history)
        session.add_message("user", text)
        session.add_message("assistant", response)
        await manager.save(session)
        return response

    concurrent_turns = kind != "custom"  # a whole-session store cannot merge

    async def user(manager: AsyncSessionManager, name: str) -> None:
        turns = [f"{name} says {i}" for i in range(4)]
        if concurrent_turns:
            await asyncio.gather(*(chat(manager, name, text) for text in turns))
        else:
            for text in turns:
                await chat(manager, name, text)

    async def main() -> None:
        async with AsyncSessionManager(store=STORES[kind](tmp_path)) as manager:
            names = [f"u{n}" for n in range(50)]
            await asyncio.gather(*(user(manager, name) for name in names))
            for name in names:
                session = await manager.get_session(f"chat-{name}")
                contents = [m.content for m in session.messages]
                assert session.message_count == 8
                assert sorted(c for c in contents if " says " in c and "echo" not in c) == [
                    f"{name} says {i}" for i in range(4)
                ]
                for i, message in enumerate(session.messages):  # pairs stay together
                    if message.role == "assistant":
                        assert session.messages[i - 1].role == "user"
                        assert message.content.endswith(session.messages[i - 1].content)

    asyncio.run(main())


def test_context_managers_close_everything(tmp_path: Path) -> None:
    store = LMDBSessionStore(tmp_path / "c.lmdb")
    with SessionManager(store=store) as manager:
        session = manager.create_session("u")
    with pytest.raises(StoreClosedError):
        store.get(session.session_id)

    async def main() -> None:
        store = SQLiteSessionStore(tmp_path / "c.db")
        async with AsyncSessionManager(store=store) as manager:
            created = await manager.create_session("u")
        with pytest.raises(StoreClosedError):
            await manager.get_session(created.session_id)
        with pytest.raises(StoreClosedError):
            store.get(created.session_id)
        assert manager._pool._shutdown

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["lmdb", "sqlite"])
def test_closing_an_engine_store_runs_off_the_event_loop(tmp_path: Path, kind: str) -> None:
    """Closing LMDB / SQLite may checkpoint and fsync (SQLite's WAL at "full"): the
    manager's close runs it in a worker thread, not on the loop."""
    store = (
        LMDBSessionStore(tmp_path / "c.lmdb")
        if kind == "lmdb"
        else SQLiteSessionStore(tmp_path / "c.db")
    )
    closed_in: list[threading.Thread] = []
    real_close = store.close

    def close() -> None:
        closed_in.append(threading.current_thread())
        real_close()

    store.close = close  # type: ignore[method-assign]

    async def main() -> None:
        async with AsyncSessionManager(store=store) as manager:
            await manager.create_session("u")
        assert closed_in and closed_in[0] is not threading.current_thread()
        with pytest.raises(StoreClosedError):
            await manager.get_session("x")

    asyncio.run(main())
    assert len(closed_in) == 1


class PlainDictStore(SessionStore):
    """A user store with plain (blocking) methods, used from asyncio."""

    def __init__(self) -> None:
        self.data: dict[str, Session] = {}
        self.threads: set[str] = set()

    def save(self, session: Session) -> None:
        self.threads.add(threading.current_thread().name)
        self.data[session.session_id] = session

    def get(self, session_id: str) -> Session | None:
        return self.data.get(session_id)

    def delete(self, session_id: str) -> bool:
        return self.data.pop(session_id, None) is not None

    def list_for_user(self, user_id: str) -> list[Session]:
        return [s for s in self.data.values() if s.user_id == user_id]


def test_plain_user_store_runs_off_the_loop() -> None:
    store = PlainDictStore()

    async def main() -> None:
        async with AsyncSessionManager(store=store) as manager:
            session = await manager.create_session("u")
            session.add_message("user", "hi")
            await manager.save(session)
            assert (await manager.get_session(session.session_id)).message_count == 1

    asyncio.run(main())
    assert store.threads and all(name.startswith("kvsessions") for name in store.threads)
