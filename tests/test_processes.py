"""Many writers on one store: processes, threads, a SIGKILL mid-save, and ``fork``.

Every test runs on ``LMDBSessionStore`` and ``SQLiteSessionStore`` at durability "full",
and on ``RedisSessionStore`` against the test run's own throw-away ``redis-server``.
Writers use the plain ``get_session -> change -> save`` loop (no ``expect_version``): the
store must merge concurrent saves (appends commute, state merges per key) and lose nothing.
Child processes are started with the ``spawn`` method so they inherit no open handles.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from kvsessions import SessionManager

try:  # tests/ may or may not be a package
    from . import _proc_workers as workers
except ImportError:  # pragma: no cover - depends on how pytest imports this module
    import _proc_workers as workers  # type: ignore[no-redef]

pytestmark = pytest.mark.slow

KINDS = ["lmdb", "sqlite", "redis"]
SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 60.0

#: What the crash test verified, per backend (printed with ``pytest -s``).
CRASH_SUMMARY: dict[str, dict[str, int]] = {}


_REDIS_URL: list[str] = []  # the session's throw-away redis-server, once started


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis" and not _REDIS_URL:
        _REDIS_URL.append(request.getfixturevalue("redis_server").url)
    return request.param  # type: ignore[no-any-return]


def store_path(tmp_path: Path, kind: str) -> str:
    if kind == "redis":  # a prefix of its own per test, on the test run's own server
        return f"{_REDIS_URL[0]}|p{abs(hash(str(tmp_path)))}:"
    return str(tmp_path / ("sessions.lmdb" if kind == "lmdb" else "sessions.db"))


def new_session(kind: str, path: str, user: str) -> str:
    """Create a session in a short-lived store object; return its id."""
    with SessionManager(store=workers.open_store(kind, path)) as manager:
        return manager.create_session(user_id=user).session_id


def load(kind: str, path: str, sid: str) -> Any:
    with SessionManager(store=workers.open_store(kind, path)) as manager:
        session = manager.get_session(sid)
    assert session is not None, f"session {sid} vanished"
    return session


def run_processes(target: Any, args_per_child: list[tuple[Any, ...]]) -> None:
    """Start one spawned child per args tuple, wait for all, require exit code 0."""
    children = [SPAWN.Process(target=target, args=args) for args in args_per_child]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join(JOIN_TIMEOUT)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    codes = [child.exitcode for child in children]
    assert codes == [0] * len(children), f"child exit codes {codes} (timeout or exception)"


def check_appends(session: Any, writers: list[str], n: int) -> bool:
    """All P*N appends present once, each writer in its own order, seqs 0..P*N-1.

    Returns whether the writers interleaved (else the round proved little: run another).
    """
    total = len(writers) * n
    contents = [m.content for m in session.messages]
    assert session.message_count == total, (session.message_count, total)
    assert len(session.messages) == total, (len(session.messages), total)
    assert [m.seq for m in session.messages] == list(range(total))
    assert sorted(contents) == sorted(f"{w}:{i}" for w in writers for i in range(n)), (
        "some appends are missing or duplicated"
    )
    for writer in writers:
        mine = [int(c.split(":")[1]) for c in contents if c.split(":")[0] == writer]
        assert mine == list(range(n)), f"writer {writer}'s messages are out of order"
    # The writers really ran at the same time: their messages are not P contiguous blocks.
    owners = [c.split(":")[0] for c in contents]
    runs = 1 + sum(1 for a, b in itertools.pairwise(owners) if a != b)
    return runs > len(writers)


# -- 1. processes appending ---------------------------------------------------------------


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_append_to_one_session(kind: str, tmp_path: Path, processes: int) -> None:
    n = 200
    path = store_path(tmp_path, kind)
    sid = new_session(kind, path, "user-mp")
    writers = [f"w{p}" for p in range(processes)]
    barrier = SPAWN.Barrier(processes)
    started = time.monotonic()
    run_processes(workers.append_loop, [(kind, path, sid, w, n, barrier) for w in writers])
    elapsed = time.monotonic() - started
    session = load(kind, path, sid)
    # The lock-step first rounds make every round's saves race, so the writers interleave
    # however fast one of them runs (a free-running SQLite writer can starve the other).
    assert check_appends(session, writers, n), "the writers did not interleave"
    assert session.version == 1 + processes * n  # create + one committed save per append
    assert elapsed < 60, f"{processes}x{n} appends took {elapsed:.1f}s"


# -- 2. threads appending -----------------------------------------------------------------


def test_threads_append_to_one_session(kind: str, tmp_path: Path) -> None:
    threads, n = 4, 200
    path = store_path(tmp_path, kind)
    sid = new_session(kind, path, "user-th")
    writers = [f"t{t}" for t in range(threads)]
    barrier = threading.Barrier(threads)
    errors: list[str] = []

    def run(writer: str) -> None:
        try:
            workers.append_loop(kind, path, sid, writer, n, barrier)
        except BaseException:
            errors.append(traceback.format_exc())
            barrier.abort()

    pool = [threading.Thread(target=run, args=(w,), daemon=True) for w in writers]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in pool), "a writer thread hung"
    assert not errors, errors[0]
    session = load(kind, path, sid)
    assert check_appends(session, writers, n), "the threads did not interleave"
    assert session.version == 1 + threads * n


# -- 3. state merging across processes ----------------------------------------------------


def test_processes_merge_state_keys(kind: str, tmp_path: Path) -> None:
    n = 150
    path = store_path(tmp_path, kind)
    sid = new_session(kind, path, "user-state")
    writers = ["a", "b"]
    barrier = SPAWN.Barrier(len(writers))
    run_processes(workers.state_loop, [(kind, path, sid, w, n, barrier) for w in writers])
    session = load(kind, path, sid)
    expected = {f"{w}-{i}": i for w in writers for i in range(n)}
    missing = sorted(set(expected) - set(session.state))
    assert not missing, f"{len(missing)} state keys lost, e.g. {missing[:5]}"
    assert session.state == expected
    assert session.version == 1 + len(writers) * n
    assert session.message_count == 0 and session.messages == []


# -- 4. SIGKILL mid-save ------------------------------------------------------------------


def check_after_crash(
    kind: str, path: str, sid: str, user: str, acked: dict[int, int], last: int | None
) -> tuple[dict[int, int], int | None]:
    """Verify the store after round ``max(acked)``'s writer was killed.

    ``acked[k]`` is how many saves round k acknowledged (its i = 0..acked[k]-1).  Returns
    how many saves each round actually committed, and the expected state["last"].
    """
    with SessionManager(store=workers.open_store(kind, path)) as manager:
        session = manager.get_session(sid)
        listed = manager.get_sessions_for_user(user)
    assert session is not None
    contents = [m.content for m in session.messages]
    assert session.message_count == len(session.messages) == len(contents)
    assert [m.seq for m in session.messages] == list(range(len(contents)))
    assert [s.session_id for s in listed] == [sid], "the user index drifted"
    assert listed[0].message_count == session.message_count

    committed: dict[int, int] = {}
    expected: list[str] = []
    for k in sorted(acked):
        pairs = [c for c in contents if c.split(":")[0] == str(k)]
        assert len(pairs) % 2 == 0, f"round {k}: a save is half-present: {pairs[-3:]}"
        m = committed[k] = len(pairs) // 2
        # Every acknowledged save is there; at most the one in flight at the kill is too.
        assert acked[k] <= m <= acked[k] + 1, f"round {k}: acked {acked[k]}, stored {m}"
        for i in range(m):
            expected += [f"{k}:{i}:a", f"{k}:{i}:b"]
        if k != max(acked):
            expected.append(f"new:{k}")
        if m:
            last = m - 1
    # Each save's two messages are adjacent and in order; rounds follow one another.
    assert contents == expected
    roles = [m.role for m in session.messages if m.content.endswith((":a", ":b"))]
    assert roles == ["user", "assistant"] * (len(roles) // 2)
    assert session.get_state("last") == last
    return committed, last


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_mid_save_loses_no_acknowledged_save(kind: str, tmp_path: Path) -> None:
    rounds = 10
    budget_s = 30.0
    rng = random.Random(f"kvsessions-crash-{kind}")
    path = store_path(tmp_path, kind)
    user = "user-crash"
    sid = new_session(kind, path, user)
    acked: dict[int, int] = {}
    last: int | None = None
    in_flight_committed = 0  # rounds where the killed save had committed but not been acked
    slowest_new_save = 0.0
    started = time.monotonic()
    for k in range(rounds):
        ack_path = tmp_path / f"acks-{k}.txt"
        ready = SPAWN.Event()
        child = SPAWN.Process(
            target=workers.crash_writer, args=(kind, path, sid, k, str(ack_path), ready, 20.0)
        )
        child.start()
        try:
            assert ready.wait(30), "crash writer did not start"
            time.sleep(rng.uniform(0.02, 0.3))
        finally:
            child.kill()  # SIGKILL
            child.join(10)
        assert child.exitcode == -signal.SIGKILL, f"writer died on its own: {child.exitcode}"
        lines = ack_path.read_text().splitlines() if ack_path.exists() else []
        assert [int(x) for x in lines] == list(range(len(lines)))
        acked[k] = len(lines)

        committed, last = check_after_crash(kind, path, sid, user, acked, last)
        in_flight_committed += committed[k] - acked[k]

        # A new writer in a fresh process saves at once: the killed one left no stale lock.
        took = SPAWN.Value("d", -1.0)
        writer = SPAWN.Process(target=workers.new_writer, args=(kind, path, sid, f"new:{k}", took))
        writer.start()
        writer.join(15)
        if writer.is_alive():
            writer.kill()
            writer.join()
            pytest.fail(f"round {k}: a new writer could not save within 15 s (stale lock?)")
        assert writer.exitcode == 0, f"round {k}: the new writer failed ({writer.exitcode})"
        assert 0 <= took.value < 5, f"round {k}: the new writer's save took {took.value:.2f}s"
        slowest_new_save = max(slowest_new_save, took.value)
        assert load(kind, path, sid).messages[-1].content == f"new:{k}"

        assert time.monotonic() - started < budget_s * 2, "crash test is far over its budget"

    # Final check in the parent with the last round's new-writer message included.
    acked_total = sum(acked.values())
    session = load(kind, path, sid)
    assert session.message_count == 2 * sum(committed.values()) + rounds
    CRASH_SUMMARY[kind] = {
        "rounds": rounds,
        "acknowledged_saves_verified": acked_total,
        "rounds_killed_after_commit_before_ack": in_flight_committed,
        "messages": session.message_count,
    }
    print(
        f"\n[crash {kind}] {rounds} rounds, {acked_total} acknowledged saves verified, "
        f"{in_flight_committed} kills landed between commit and ack, "
        f"slowest post-crash save {slowest_new_save * 1000:.0f} ms, "
        f"{time.monotonic() - started:.1f}s"
    )
    assert acked_total > 0, "no save was acknowledged: the crash test verified nothing"
    assert sum(1 for v in acked.values() if v) >= rounds // 3


# -- 5. fork --------------------------------------------------------------------------


def wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child did not finish within {timeout}s")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_fork_child_uses_parents_store_object(kind: str, tmp_path: Path) -> None:
    path = store_path(tmp_path, kind)
    manager = SessionManager(store=workers.open_store(kind, path))
    # A second store object on the same path (for LMDB: the same shared environment).
    other = SessionManager(store=workers.open_store(kind, path))
    try:
        session = manager.create_session(user_id="user-fork")
        sid = session.session_id
        session.add_message("user", "parent:0")
        manager.save(session)
        assert other.get_session(sid).message_count == 1  # the parent's handles are live

        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                mine = manager.get_session(sid)
                if mine is None or [m.content for m in mine.messages] != ["parent:0"]:
                    code = 2
                else:
                    mine.add_message("user", "child:0")
                    manager.save(mine)
                    theirs = other.get_session(sid)
                    theirs.add_message("user", "child:1")
                    other.save(theirs)
                    again = manager.get_session(sid)
                    ok = [m.content for m in again.messages] == ["parent:0", "child:0", "child:1"]
                    code = 0 if ok else 3
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)

        assert wait_child(pid, 30) == 0, "the forked child could not use the store"
        seen = manager.get_session(sid)
        assert [m.content for m in seen.messages] == ["parent:0", "child:0", "child:1"]
        # The parent's own (stale) session object still saves, merging the child's appends.
        session.add_message("assistant", "parent:1")
        manager.save(session)
        contents = ["parent:0", "child:0", "child:1", "parent:1"]
        assert [m.content for m in session.messages] == contents
        assert [m.seq for m in session.messages] == [0, 1, 2, 3]
        assert session.message_count == 4
        assert [m.content for m in other.get_session(sid).messages] == contents
    finally:
        manager.close()
        other.close()
    # ... and a fresh store object agrees.
    again = load(kind, path, sid)
    assert [m.content for m in again.messages] == contents
    assert [s.session_id for s in _listed(kind, path, "user-fork")] == [sid]


def _listed(kind: str, path: str, user: str) -> list[Any]:
    with SessionManager(store=workers.open_store(kind, path)) as manager:
        return manager.get_sessions_for_user(user)
