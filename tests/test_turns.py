"""Updates of one session through one manager take turns (``kvsessions.turns``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kvsessions import LMDBSessionStore, MemorySessionStore, Session, SessionManager
from kvsessions.turns import Turns

THREADS = 8
EACH = 10


def test_a_key_keeps_its_lock_only_while_someone_holds_or_waits() -> None:
    turns = Turns(threading.Lock)
    first = turns.enter("a")
    assert turns.enter("a") is first  # a second user of "a" gets the same lock
    assert turns.enter("b") is not first
    turns.leave("a")
    assert len(turns) == 2
    turns.leave("a")
    turns.leave("b")
    assert len(turns) == 0
    assert turns.enter("a") is not first  # a fresh lock once everyone left


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_threads_updating_one_session_through_one_manager_never_lose_a_round(
    kind: str, tmp_path: Path
) -> None:
    store = MemorySessionStore() if kind == "memory" else LMDBSessionStore(tmp_path / "s")
    with SessionManager(store=store) as manager:
        session = manager.create_session("u")
        session.set_state("n", 0)
        manager.save(session)
        calls = []
        start = threading.Barrier(THREADS)

        def bump(loaded: Session) -> None:
            calls.append(1)
            loaded.set_state("n", loaded.get_state("n") + 1)

        def worker() -> None:
            start.wait()
            for _ in range(EACH):
                manager.update(session.session_id, bump, retries=0)  # no round may be lost

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stored = manager.get_session(session.session_id)
        assert stored is not None
        assert stored.get_state("n") == len(calls) == THREADS * EACH
        assert stored.version == session.version + THREADS * EACH
        assert len(manager._turns) == 0


def test_a_change_may_update_the_same_session_again_without_deadlock() -> None:
    with SessionManager(store=MemorySessionStore()) as manager:
        session = manager.create_session("u")
        inner = []

        def outer(loaded: Session) -> None:
            if not inner:  # the nested update commits first; the outer one then re-runs
                inner.append(manager.update(session.session_id, lambda s: s.set_state("k", 1)))
            loaded.set_state("outer", True)

        result = manager.update(session.session_id, outer)
        assert result.get_state("k") == 1 and result.get_state("outer") is True
        assert len(manager._turns) == 0
