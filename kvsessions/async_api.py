"""``AsyncSessionManager``: the asyncio face of the session core.

The same plans as :class:`~kvsessions.SessionManager`, driven without blocking the event
loop.  With a local engine, the plan's own logic runs on the loop and each engine
operation runs in a bounded worker pool, in a transaction of its own (none is held across
an ``await``; saves are optimistic and re-base on conflict).  Plan steps that decode many
records at once also move to the pool.  Worker threads thus spend their time inside the
engine, where it releases the GIL, rather than competing with the loop for it.  A backend
with a native asyncio driver, or a user's store with ``async def`` methods, is awaited
directly.

Commits from concurrent tasks are grouped: one engine transaction (one fsync) applies a
whole queue of them, each with its own expectations (:class:`_GroupCommit`).

If the task awaiting a save is cancelled while its commit is queued, the commit is
withdrawn; once its group is running, it completes, whole and never half, and the
manager stays usable.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import IO, Any, ParamSpec, TypeVar

from . import transfer
from .backends.base import (
    HEAVY_STEP_ROWS,
    READ_PLAN_BACKOFF_CAP,
    Commit,
    Conflict,
    LocalBackend,
    Plan,
    answer_rows,
    backoff,
    step,
)
from .core import Job
from .errors import StoreClosedError
from .model import Message, Session, SessionPage, utcnow
from .stores import LMDBSessionStore, SessionStore
from .transfer import ImportReport
from .turns import Turns

__all__ = ["AsyncSessionManager"]

T = TypeVar("T")
P = ParamSpec("P")
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


class AsyncSessionManager:
    """Create, save, load, list, archive and delete sessions from asyncio code.

    ``max_workers`` bounds the threads that run blocking engine work (default
    ``min(4, cpus)``).  Other arguments as for :class:`~kvsessions.SessionManager`.
    """

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_workers: int | None = None,
    ) -> None:
        self.store = store if store is not None else LMDBSessionStore()
        self._ops = self.store._operations(clock)
        self._backend = self.store._backend
        self._pool = _Pool(max_workers or DEFAULT_WORKERS, thread_name_prefix="kvsessions")
        # one group committer per event loop: a group's waiters are futures of its loop
        # (the adapters' managers serve every loop that uses a store, e.g. a thread each)
        self._committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupCommit] = (
            weakref.WeakKeyDictionary()
        )
        self._committers_lock = threading.Lock()
        self._turns = Turns(asyncio.Lock)
        self._closed = False

    async def _run(self, job: Job[T]) -> T:
        if self._closed:
            job.plan.close()
            raise StoreClosedError("this AsyncSessionManager was closed; create a new one")
        run_async = getattr(self._backend, "run_async", None)
        if run_async is not None:
            return await run_async(job.plan, write=job.write, executor=self._pool, heavy=job.heavy)
        loop = asyncio.get_running_loop()
        committer = self._committers.get(loop)
        if committer is None:
            with self._committers_lock:
                committer = self._committers.setdefault(
                    loop, _GroupCommit(self._backend, self._pool)
                )
        return await _drive_local(
            self._backend, job.plan, self._pool, committer, write=job.write, heavy=job.heavy
        )

    async def _steps(self, steps: transfer.Steps) -> Any:
        """Drive a multi-step operation: run each job it yields and send back the result."""
        send: Any = steps.send
        value: Any = None
        while True:
            try:
                job = send(value)
            except StopIteration as done:
                return done.value
            try:
                value, send = await self._run(job), steps.send
            except BaseException as exc:  # let the steps clean up (close files), then raise
                value, send = exc, steps.throw

    async def create_session(
        self, user_id: str, metadata: dict[str, Any] | None = None, session_id: str | None = None
    ) -> Session:
        """Create and save a new session; ``SessionExistsError`` if the id is taken."""
        return await self._run(self._ops.create(user_id, metadata, session_id))

    async def save(self, session: Session, *, expect_version: int | None = None) -> Session:
        """Write what changed in one atomic commit; the session then mirrors the store.

        Concurrent appends all survive and state merges per key.  With ``expect_version``
        the save fails with ``ConflictError`` unless the stored version is that one.
        """
        return await self._run(self._ops.save(session, expect_version))

    async def get_session(self, session_id: str, *, messages: int | None = None) -> Session | None:
        """The stored session, or ``None``; ``messages=N`` loads only the newest N messages.

        ``message_count`` is always the true total, and saving a partly loaded session
        appends after the last stored message as usual.
        """
        return await self._run(self._ops.get(session_id, messages))

    async def get_messages(
        self,
        session_id: str,
        limit: int | None = None,
        *,
        before: int | None = None,
        after: int | None = None,
        pair_safe: bool = False,
    ) -> list[Message]:
        """A window of the history, oldest first, without loading the rest.

        The messages with ``after < seq < before``, the newest ``limit`` of them.
        ``pair_safe=True`` never starts the window on a tool result (a message with a
        ``tool_call_id`` extra, or role ``"tool"``) cut off from the call it answers.
        """
        return await self._run(self._ops.get_messages(session_id, limit, before, after, pair_safe))

    async def get_sessions_for_user(self, user_id: str) -> list[Session]:
        """All of a user's sessions (active and archived), oldest first, from the index."""
        return await self._run(self._ops.for_user(user_id))

    async def delete(self, session_id: str) -> bool:
        """Delete a session and its messages; return whether it existed."""
        return await self._run(self._ops.delete(session_id))

    async def archive(self, session_id: str) -> bool:
        """Mark a session archived (read-only, still loadable); False if it already was."""
        return await self._run(self._ops.archive(session_id))

    async def restore(self, session_id: str) -> bool:
        """Make an archived session active again; False if it already was active."""
        return await self._run(self._ops.restore(session_id))

    async def archive_inactive(self, days: float = 30, *, dry_run: bool = False) -> int:
        """Archive every active session not saved for ``days``; return how many.

        ``dry_run=True`` only counts them.  Reads the activity index, not every session.
        """
        return await self._run(self._ops.archive_inactive(days, dry_run))

    async def purge_archived(self, older_than_days: float, *, dry_run: bool = False) -> int:
        """Delete for good archived sessions last active over ``older_than_days`` ago."""
        return await self._run(self._ops.purge_archived(older_than_days, dry_run))

    async def sweep(self) -> int:
        """Remove expired sessions (store ``ttl``) with their index entries; how many.

        Expired sessions are invisible at once; this reclaims their space (reading one
        also removes it).  Redis expires keys itself: there it returns 0.
        """
        return await self._run(self._ops.sweep())

    async def list_sessions(
        self,
        user_id: str | None = None,
        *,
        status: str | None = "active",
        order: str = "activity",
        limit: int = 50,
        cursor: str | None = None,
    ) -> SessionPage:
        """One page of sessions, newest first, without their messages.

        ``status``: ``"active"``, ``"archived"`` or ``None`` (both); ``order``:
        ``"activity"`` (last saved, to the minute) or ``"created"``.  Pass the page's
        ``cursor`` back for the next page (``None``: no more).  Served from the indexes:
        a page costs the same among ten or a million sessions.
        """
        return await self._run(self._ops.list_sessions(user_id, status, order, limit, cursor))

    async def fork(
        self, session_id: str, *, at_seq: int | None = None, new_session_id: str | None = None
    ) -> Session:
        """Save an independent copy of a session, optionally only up to message ``at_seq``.

        The copy (same user, metadata and state; messages renumbered from 0) records
        ``parent_id``; later changes to either do not reach the other.
        """
        return await self._run(self._ops.fork(session_id, at_seq, new_session_id))

    async def export(
        self, target: str | os.PathLike[str] | IO[Any], user_id: str | None = None
    ) -> int:
        """Write every session (or one user's) as JSON Lines to a path or file; how many.

        The format is documented in :mod:`kvsessions.transfer`.
        """
        return await self._steps(transfer.export_steps(self._ops, target, user_id))

    async def import_(self, source: str | os.PathLike[str] | IO[Any]) -> ImportReport:
        """Read sessions exported by :meth:`export` and create them exactly.

        Idempotent: sessions already here and identical count as ``unchanged``; ones that
        differ are left alone and reported in ``conflicts``.
        """
        return await self._steps(transfer.import_steps(self._ops, source))

    async def update(
        self, session_id: str, change: Callable[[Session], object], *, retries: int = 10
    ) -> Session:
        """Read-modify-write: load, call ``change(session)``, save if nothing moved meanwhile.

        On a conflict the whole cycle runs again (at most ``retries`` more times), so
        ``change`` must be safe to repeat (e.g. increment a counter in state).  Returns
        the saved session; ``ConflictError`` once the retries are used up.  Callers
        updating one session through this manager take turns rather than race.
        """
        key = (asyncio.get_running_loop(), session_id)  # (an asyncio.Lock is per loop)
        lock = self._turns.enter(key)
        try:
            async with lock:
                return await self._run(self._ops.update(session_id, change, retries))
        finally:
            self._turns.leave(key)

    async def pop_message(self, session_id: str) -> Message | None:
        """Remove and return the newest stored message (``None`` if there is none).

        Atomic: two concurrent pops never return the same message.
        """
        return await self._run(self._ops.pop_message(session_id))

    async def delete_message(self, session_id: str, seq: int) -> bool:
        """Delete one stored message by seq; return whether it existed."""
        return await self._run(self._ops.delete_message(session_id, seq))

    async def update_message(self, session_id: str, seq: int, **changes: Any) -> Message | None:
        """Change a stored message's ``content``, ``role`` or extras (e.g. to redact it)."""
        return await self._run(self._ops.update_message(session_id, seq, changes))

    async def replace_messages(
        self, session_id: str, start_seq: int, end_seq: int, messages: list[Message]
    ) -> list[Message]:
        """Atomically swap the messages ``start_seq..end_seq`` (inclusive) for ``messages``.

        The primitive for compaction: summarise a stretch yourself, then swap it in.  At
        most ``end_seq - start_seq + 1`` messages; they take the seqs from ``start_seq``.
        """
        return await self._run(self._ops.replace_messages(session_id, start_seq, end_seq, messages))

    async def clear_all(self) -> None:
        """Delete every session in this store (and nothing outside it)."""
        return await self._run(self._ops.clear_all())

    async def close(self) -> None:
        """Finish in-flight work, then close the pool and the store."""
        if not self._closed:
            self._closed = True
            self._pool.closing = True  # (tasks under way get StoreClosedError from here on)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._pool.shutdown, True)
            if isinstance(self._backend, LocalBackend) and self._backend.blocking:
                # (an engine's close may checkpoint and fsync its log: off the loop too)
                await loop.run_in_executor(None, self.store.close)
                return
            result = self.store.close()
            if asyncio.iscoroutine(result):
                await result

    async def __aenter__(self) -> AsyncSessionManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Pool(ThreadPoolExecutor):
    """The manager's worker threads: once it is closing, new work is refused with
    :class:`StoreClosedError` (a plain pool would raise a bare ``RuntimeError`` at the
    tasks still running), while the work already submitted finishes."""

    closing = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if self.closing:
            raise StoreClosedError("this AsyncSessionManager was closed; create a new one")
        return super().submit(fn, *args, **kwargs)


async def _drive_local(
    backend: LocalBackend,
    plan: Plan[T],
    pool: Executor,
    committer: _GroupCommit,
    *,
    write: bool,
    heavy: bool = False,
) -> T:
    """Step the plan on the loop; run engine operations (and heavy steps) in ``pool``.

    A step is heavy when it decodes many records, or it is the first one and ``heavy``
    (a save that encodes many messages).

    A write plan whose commit lost a race (another save to the same session won in the
    same group) is finished in ``pool`` under the engine's write lock, as the blocking
    manager runs it: its re-based retry then cannot lose again, so a session that many
    tasks append to at once never starves one of them.
    """
    loop = asyncio.get_running_loop()
    answer: Any = None
    conflicts = 0
    while True:
        if heavy or answer_rows(answer) > HEAVY_STEP_ROWS:
            heavy = False
            finished, op = await loop.run_in_executor(pool, step, plan, answer)
        else:
            finished, op = step(plan, answer)
        if finished:
            return op
        if not backend.blocking:
            answer = backend.execute(op)
        elif type(op) is Commit:
            answer = await committer.commit(op)
            if type(answer) is Conflict:
                if write:
                    finish = functools.partial(backend.run, plan, write=True, answer=answer)
                    return await loop.run_in_executor(pool, finish)
                conflicts += 1  # (e.g. update(): its change must not run under the lock)
                await asyncio.sleep(backoff(conflicts, READ_PLAN_BACKOFF_CAP))
        else:
            answer = await loop.run_in_executor(pool, backend.execute, op)


class _GroupCommit:
    """Commits from concurrent tasks of one event loop share one engine transaction,
    hence one fsync.

    While a group is being committed in the pool, newly arriving commits queue up; the
    next group takes all of them.  Each commit keeps its own expectations and is applied
    whole or not at all (``LocalBackend.commit_many``).  A task cancelled while its commit
    waits in the queue withdraws it; once its group has started, the commit goes through.
    """

    def __init__(self, backend: Any, pool: Executor) -> None:
        self._backend = backend
        self._pool = pool
        self._queue: list[tuple[Commit, asyncio.Future[Any]]] = []
        self._draining = False

    async def commit(self, op: Commit) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                group = [(op, future) for op, future in self._queue if not future.cancelled()]
                self._queue = []  # (a commit whose task was cancelled before now is dropped)
                ops = [op for op, _ in group]
                if not ops:
                    continue
                try:
                    answers = await loop.run_in_executor(self._pool, self._backend.commit_many, ops)
                except BaseException as exc:  # the whole group failed: tell every waiter
                    answers = [exc] * len(group)
                for (_, future), answer in zip(group, answers, strict=True):
                    if future.done():
                        continue  # its task was cancelled; the commit still happened
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            self._draining = False
