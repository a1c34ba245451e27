"""``SessionManager``: the blocking face of the session core.

Each method asks the store's operations for a plan and drives it with the store's
backend in the calling thread; on a local store the commonest calls (a create, a save
that only appended, a load) are one engine transaction without a plan
(``core.create_directly`` / ``append_directly`` / ``load_directly``).  The logic lives in
``core`` (or ``custom`` for a user's own store); this module only runs it, and
:mod:`kvsessions.async_api` is its twin.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import IO, Any, TypeVar

from . import transfer
from .core import Job
from .errors import StoreClosedError
from .model import Message, Session, SessionPage, utcnow
from .stores import LMDBSessionStore, SessionStore
from .transfer import ImportReport
from .turns import Turns

__all__ = ["SessionManager"]

T = TypeVar("T")


class SessionManager:
    """Create, save, load, list, archive and delete sessions (blocking calls).

    ``store`` defaults to an :class:`LMDBSessionStore` at ``./sessions.lmdb``.  ``clock``
    (a callable returning an aware datetime) is for tests that need to move time.
    """

    def __init__(
        self, store: SessionStore | None = None, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store if store is not None else LMDBSessionStore()
        self._ops = self.store._operations(clock)
        self._backend = self.store._backend
        self._turns = Turns(threading.RLock)  # (re-entrant: a change may call update)
        self._closed = False
        # a create or an append is one engine transaction where the store allows it
        self._write_if = getattr(self._backend, "write_if", None)
        direct = self._write_if is not None
        self._create_directly = getattr(self._ops, "create_directly", None) if direct else None
        self._append_directly = getattr(self._ops, "append_directly", None) if direct else None
        # and a load one read transaction, without driving a plan
        self._read = getattr(self._backend, "read", None)
        self._load_directly = getattr(self._ops, "load_directly", None) if direct else None

    def _run(self, job: Job[T]) -> T:
        if self._closed:
            job.plan.close()
            raise StoreClosedError("this SessionManager was closed; create a new one")
        return self._backend.run(job.plan, write=job.write)

    def _steps(self, steps: transfer.Steps) -> Any:
        """Drive a multi-step operation: run each job it yields and send back the result."""
        send: Any = steps.send
        value: Any = None
        while True:
            try:
                job = send(value)
            except StopIteration as done:
                return done.value
            try:
                value, send = self._run(job), steps.send
            except BaseException as exc:  # let the steps clean up (close files), then raise
                value, send = exc, steps.throw

    def create_session(
        self, user_id: str, metadata: dict[str, Any] | None = None, session_id: str | None = None
    ) -> Session:
        """Create and save a new session; ``SessionExistsError`` if the id is taken."""
        if self._create_directly is not None and not self._closed:
            session = self._create_directly(user_id, metadata, session_id, self._write_if)
            if session is not None:
                return session
        return self._run(self._ops.create(user_id, metadata, session_id))

    def save(self, session: Session, *, expect_version: int | None = None) -> Session:
        """Write what changed in one atomic commit; the session then mirrors the store.

        Concurrent appends all survive and state merges per key.  With ``expect_version``
        the save fails with ``ConflictError`` unless the stored version is that one.
        """
        # the common save (a loaded session that only gained messages) is one engine
        # transaction, re-based there if others appended first; anything else it leaves
        # (having written nothing) to the plan below
        if (
            expect_version is None
            and self._append_directly is not None
            and not self._closed
            and self._append_directly(session, self._write_if)
        ):
            return session
        return self._run(self._ops.save(session, expect_version))

    def get_session(self, session_id: str, *, messages: int | None = None) -> Session | None:
        """The stored session, or ``None``; ``messages=N`` loads only the newest N messages.

        ``message_count`` is always the true total, and saving a partly loaded session
        appends after the last stored message as usual.
        """
        if self._load_directly is not None and not self._closed:
            loaded = self._load_directly(session_id, messages, self._read)
            if loaded is not False:
                return loaded
        return self._run(self._ops.get(session_id, messages))

    def get_messages(
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
        return self._run(self._ops.get_messages(session_id, limit, before, after, pair_safe))

    def get_sessions_for_user(self, user_id: str) -> list[Session]:
        """All of a user's sessions (active and archived), oldest first, from the index."""
        return self._run(self._ops.for_user(user_id))

    def delete(self, session_id: str) -> bool:
        """Delete a session and its messages; return whether it existed."""
        return self._run(self._ops.delete(session_id))

    def archive(self, session_id: str) -> bool:
        """Mark a session archived (read-only, still loadable); False if it already was."""
        return self._run(self._ops.archive(session_id))

    def restore(self, session_id: str) -> bool:
        """Make an archived session active again; False if it already was active."""
        return self._run(self._ops.restore(session_id))

    def archive_inactive(self, days: float = 30, *, dry_run: bool = False) -> int:
        """Archive every active session not saved for ``days``; return how many.

        ``dry_run=True`` only counts them.  Reads the activity index, not every session.
        """
        return self._run(self._ops.archive_inactive(days, dry_run))

    def purge_archived(self, older_than_days: float, *, dry_run: bool = False) -> int:
        """Delete for good archived sessions last active over ``older_than_days`` ago."""
        return self._run(self._ops.purge_archived(older_than_days, dry_run))

    def sweep(self) -> int:
        """Remove expired sessions (store ``ttl``) with their index entries; how many.

        Expired sessions are invisible at once; this reclaims their space (reading one
        also removes it).  Redis expires keys itself: there it returns 0.
        """
        return self._run(self._ops.sweep())

    def list_sessions(
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
        return self._run(self._ops.list_sessions(user_id, status, order, limit, cursor))

    def fork(
        self, session_id: str, *, at_seq: int | None = None, new_session_id: str | None = None
    ) -> Session:
        """Save an independent copy of a session, optionally only up to message ``at_seq``.

        The copy (same user, metadata and state; messages renumbered from 0) records
        ``parent_id``; later changes to either do not reach the other.
        """
        return self._run(self._ops.fork(session_id, at_seq, new_session_id))

    def export(self, target: str | os.PathLike[str] | IO[Any], user_id: str | None = None) -> int:
        """Write every session (or one user's) as JSON Lines to a path or file; how many.

        The format is documented in :mod:`kvsessions.transfer`.
        """
        return self._steps(transfer.export_steps(self._ops, target, user_id))

    def import_(self, source: str | os.PathLike[str] | IO[Any]) -> ImportReport:
        """Read sessions exported by :meth:`export` and create them exactly.

        Idempotent: sessions already here and identical count as ``unchanged``; ones that
        differ are left alone and reported in ``conflicts``.
        """
        return self._steps(transfer.import_steps(self._ops, source))

    def update(
        self, session_id: str, change: Callable[[Session], object], *, retries: int = 10
    ) -> Session:
        """Read-modify-write: load, call ``change(session)``, save if nothing moved meanwhile.

        On a conflict the whole cycle runs again (at most ``retries`` more times), so
        ``change`` must be safe to repeat (e.g. increment a counter in state).  Returns
        the saved session; ``ConflictError`` once the retries are used up.  Callers
        updating one session through this manager take turns rather than race.
        """
        lock = self._turns.enter(session_id)
        try:
            with lock:
                return self._run(self._ops.update(session_id, change, retries))
        finally:
            self._turns.leave(session_id)

    def pop_message(self, session_id: str) -> Message | None:
        """Remove and return the newest stored message (``None`` if there is none).

        Atomic: two concurrent pops never return the same message.
        """
        return self._run(self._ops.pop_message(session_id))

    def delete_message(self, session_id: str, seq: int) -> bool:
        """Delete one stored message by seq; return whether it existed."""
        return self._run(self._ops.delete_message(session_id, seq))

    def update_message(self, session_id: str, seq: int, **changes: Any) -> Message | None:
        """Change a stored message's ``content``, ``role`` or extras (e.g. to redact it)."""
        return self._run(self._ops.update_message(session_id, seq, changes))

    def replace_messages(
        self, session_id: str, start_seq: int, end_seq: int, messages: list[Message]
    ) -> list[Message]:
        """Atomically swap the messages ``start_seq..end_seq`` (inclusive) for ``messages``.

        The primitive for compaction: summarise a stretch yourself, then swap it in.  At
        most ``end_seq - start_seq + 1`` messages; they take the seqs from ``start_seq``.
        """
        return self._run(self._ops.replace_messages(session_id, start_seq, end_seq, messages))

    def clear_all(self) -> None:
        """Delete every session in this store (and nothing outside it)."""
        return self._run(self._ops.clear_all())

    def close(self) -> None:
        """Close the manager and its store; later calls raise ``StoreClosedError``."""
        if not self._closed:
            self._closed = True
            self.store.close()

    def __enter__(self) -> SessionManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
