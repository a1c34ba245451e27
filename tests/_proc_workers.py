"""Child-process (and thread) entry points for ``tests/test_processes.py``.

Kept in a module of their own, importing nothing but kvsessions, so that children started
with the ``spawn`` method import little and start fast.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kvsessions import LMDBSessionStore, RedisSessionStore, SessionManager, SQLiteSessionStore


def open_store(kind: str, path: str) -> Any:
    """A fresh store object of ``kind`` at ``path``, durability full.

    For "redis", ``path`` is ``"<url>|<prefix>"`` (the test's own throw-away server).
    """
    if kind == "lmdb":
        return LMDBSessionStore(path)
    if kind == "sqlite":
        return SQLiteSessionStore(path)
    if kind == "redis":
        url, prefix = path.split("|")
        return RedisSessionStore(url, prefix=prefix)
    raise ValueError(f"unknown store kind {kind!r}")


#: Rounds of ``append_loop`` run in lock-step: every writer loads, then all save at once.
RACED_ROUNDS = 5


def append_loop(kind: str, path: str, sid: str, writer: str, n: int, barrier: Any) -> None:
    """Own manager + store; ``n`` times: get_session -> add_message -> save.

    The first ``RACED_ROUNDS`` rounds wait on ``barrier`` between the load and the save, so
    every writer saves onto a version another writer is replacing (the store must merge), and
    the writers' messages interleave however the scheduler runs them. The rest run free.
    """
    manager = SessionManager(store=open_store(kind, path))
    try:
        for i in range(n):
            session = manager.get_session(sid)
            session.add_message("user", f"{writer}:{i}")
            if i < RACED_ROUNDS:
                barrier.wait(timeout=60)
            manager.save(session)
    finally:
        manager.close()


def state_loop(kind: str, path: str, sid: str, writer: str, n: int, barrier: Any) -> None:
    """Own manager + store; ``n`` times: get_session -> set_state(writer-i, i) -> save."""
    manager = SessionManager(store=open_store(kind, path))
    try:
        barrier.wait(timeout=60)
        for i in range(n):
            session = manager.get_session(sid)
            session.set_state(f"{writer}-{i}", i)
            manager.save(session)
    finally:
        manager.close()


def crash_writer(
    kind: str, path: str, sid: str, round_no: int, ack_path: str, ready: Any, limit_s: float
) -> None:
    """Save two messages + state per iteration until killed; acknowledge each save.

    An iteration's number is appended to ``ack_path`` (one ``write`` syscall, then fsync)
    only after ``manager.save`` returned, so every number in the file is an acknowledged
    save.  ``limit_s`` bounds the loop in case nobody kills us.
    """
    manager = SessionManager(store=open_store(kind, path))
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    deadline = time.monotonic() + limit_s
    ready.set()
    i = 0
    while time.monotonic() < deadline:
        session = manager.get_session(sid)
        session.add_message("user", f"{round_no}:{i}:a")
        session.add_message("assistant", f"{round_no}:{i}:b")
        session.set_state("last", i)
        manager.save(session)
        os.write(fd, f"{i}\n".encode())
        os.fsync(fd)
        i += 1


def new_writer(kind: str, path: str, sid: str, content: str, result: Any) -> None:
    """A fresh process that opens the store and saves one message; reports the save time."""
    started = time.monotonic()
    manager = SessionManager(store=open_store(kind, path))
    try:
        session = manager.get_session(sid)
        session.add_message("user", content)
        manager.save(session)
    finally:
        manager.close()
    result.value = time.monotonic() - started
