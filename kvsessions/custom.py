"""Managers over a user's own :class:`~kvsessions.SessionStore` (whole-session storage).

The operations are plans too, yielding :class:`Call` (``method name, args``) instead of
key-value operations, so the blocking and asyncio managers drive them with the same code
they use for the built-in stores.  A user's methods may be plain functions or coroutines:
:class:`CallBackend` calls them from either facade, awaiting where it must.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from . import keys, listing, transfer
from .codec import to_micros
from .core import (
    Job,
    _check_messages,
    _seq,
    check_replacement,
    check_session,
    inactive_since,
    new_session,
)
from .errors import (
    SessionArchivedError,
    SessionExistsError,
    SessionNotFoundError,
    UnsupportedOperationError,
)
from .model import Message, Session, SessionPage, SessionStatus

if TYPE_CHECKING:
    from .stores import SessionStore

__all__ = ["Call", "CallBackend", "StoreCallOperations"]

T = TypeVar("T")


@attrs.define(slots=True)
class Call:
    """Ask the driver to call ``store.<method>(*args)`` and send back the result."""

    method: str
    args: tuple[Any, ...]


class StoreCallOperations:
    """The manager operations in terms of a user store's four methods (plus optional ones)."""

    def __init__(self, store: SessionStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def create(
        self, user_id: str, metadata: dict[str, Any] | None, session_id: str | None
    ) -> Job[Session]:
        session = new_session(user_id, metadata, session_id, self._clock())
        keys.check_id(session.session_id, "session_id")
        keys.check_id(user_id, "user_id")
        return Job(self._create(session), write=True)

    def _create(self, session: Session) -> Any:
        if (yield Call("get", (session.session_id,))) is not None:
            raise SessionExistsError(f"a session with id {session.session_id!r} already exists")
        yield Call("save", (session,))
        return session

    def save(self, session: Session, expect_version: int | None) -> Job[Session]:
        if expect_version is not None:
            raise UnsupportedOperationError(
                "save(expect_version=...) needs a store that keeps versions; use a built-in "
                "store, or check versions inside your store's save()"
            )
        return Job(self._save(session), write=True)

    def _save(self, session: Session) -> Any:
        check_session(session)  # the same validation as the built-in stores
        if session.status == SessionStatus.ARCHIVED and session.pending_messages:
            raise SessionArchivedError(
                f"session {session.session_id!r} is archived; restore "
                "it (manager.restore) before adding to it"
            )
        messages = session.messages
        seq = _next_seq(messages[: session._synced])
        for position in range(session._synced, len(messages)):
            if messages[position].seq != seq:  # (one that had a seq, added again: a new one)
                messages[position] = attrs.evolve(messages[position], seq=seq)
            seq += 1
        session.updated_at = self._clock()
        yield Call("save", (session,))
        session._synced = len(messages)
        return session

    def get(self, session_id: str, messages: int | None = None) -> Job[Session | None]:
        if messages is not None:
            raise UnsupportedOperationError(
                "get_session(messages=N) needs a built-in store (it reads only the last N)"
            )
        return Job(self._get(session_id), write=False)

    def get_messages(
        self,
        session_id: str,
        limit: int | None,
        before: int | None,
        after: int | None,
        pair_safe: bool,
    ) -> Job[list[Any]]:
        raise UnsupportedOperationError(
            "get_messages() needs a built-in store (it reads a window, not the session)"
        )

    def _get(self, session_id: str) -> Any:
        keys.check_id(session_id, "session_id")  # (as the built-in stores: typed, up front)
        session = yield Call("get", (session_id,))
        if session is not None:
            _loaded(session)
        return session

    def for_user(self, user_id: str) -> Job[list[Session]]:
        return Job(self._for_user(user_id), write=False)

    def _for_user(self, user_id: str) -> Any:
        keys.check_id(user_id, "user_id")
        sessions = list((yield Call("list_for_user", (user_id,))) or ())
        for session in sessions:
            _loaded(session)
        return sessions

    def delete(self, session_id: str) -> Job[bool]:
        return Job(self._delete(session_id), write=True)

    def _delete(self, session_id: str) -> Any:
        keys.check_id(session_id, "session_id")
        result = yield Call("delete", (session_id,))
        return True if result is None else bool(result)

    def archive(self, session_id: str) -> Job[bool]:
        return Job(self._set_status(session_id, SessionStatus.ARCHIVED), write=True)

    def restore(self, session_id: str) -> Job[bool]:
        return Job(self._set_status(session_id, SessionStatus.ACTIVE), write=True)

    def _set_status(self, session_id: str, status: SessionStatus) -> Any:
        session = yield from self._get(session_id)
        if session is None:
            raise SessionNotFoundError(f"no session {session_id!r} in this store")
        if session.status == status:
            return False
        session.status = status
        yield Call("save", (session,))
        return True

    def archive_inactive(self, days: float, dry_run: bool = False) -> Job[int]:
        self._require(
            "list_inactive",
            "list_inactive(self, before: datetime) -> list[Session]",
            "archive_inactive",
        )
        cutoff = inactive_since(days, self._clock)
        return Job(self._archive_inactive(cutoff, dry_run), write=True)

    def _archive_inactive(self, cutoff: datetime, dry_run: bool) -> Any:
        archived = 0
        for session in list((yield Call("list_inactive", (cutoff,))) or ()):
            if session.status == SessionStatus.ACTIVE and session.updated_at < cutoff:
                if not dry_run:
                    session.status = SessionStatus.ARCHIVED
                    yield Call("save", (session,))
                archived += 1
        return archived

    def purge_archived(self, older_than_days: float, dry_run: bool = False) -> Job[int]:
        self._require(
            "list_inactive",
            "list_inactive(self, before: datetime) -> list[Session]",
            "purge_archived",
        )
        cutoff = inactive_since(older_than_days, self._clock)
        return Job(self._purge_archived(cutoff, dry_run), write=True)

    def _purge_archived(self, cutoff: datetime, dry_run: bool) -> Any:
        purged = 0
        for session in list((yield Call("list_inactive", (cutoff,))) or ()):
            if session.status == SessionStatus.ARCHIVED and session.updated_at < cutoff:
                if not dry_run:
                    yield Call("delete", (session.session_id,))
                purged += 1
        return purged

    def sweep(self) -> Job[int]:
        return Job(_nothing(0), write=False)  # a user's store has no store-kept ttl

    def list_sessions(
        self,
        user_id: str | None,
        status: str | None,
        order: str,
        limit: int,
        cursor: str | None,
    ) -> Job[SessionPage]:
        statuses = listing.check_listing(user_id, status, order, limit)
        if user_id is None:
            self._require("list_all", "list_all(self) -> list[Session]", "list_sessions()")
        query = repr(("custom", user_id, sorted(statuses), order)).encode("utf-8", "surrogatepass")
        position = listing.decode_cursor(query, cursor)
        call = Call("list_all", ()) if user_id is None else Call("list_for_user", (user_id,))
        return Job(self._list(call, statuses, order, limit, query, position), write=False)

    def _list(
        self,
        call: Call,
        statuses: tuple[SessionStatus, ...],
        order: str,
        limit: int,
        query: bytes,
        position: bytes | None,
    ) -> Any:
        ranked = []
        for session in list((yield call) or ()):
            if session.status in statuses:
                _loaded(session)
                moment = session.updated_at if order == "activity" else session.created_at
                ranked.append((listing.rank(to_micros(moment), session.session_id), session))
        return SessionPage(*listing.page_of(ranked, limit, query, position))

    def fork(self, session_id: str, at_seq: int | None, new_session_id: str | None) -> Job[Any]:
        keys.check_id(session_id, "session_id")  # (the built-in stores' checks, in their order)
        if at_seq is not None:
            _seq(at_seq)
        if new_session_id is not None:
            keys.check_id(new_session_id, "new_session_id")
        return Job(self._fork(session_id, at_seq, new_session_id), write=True)

    def _fork(self, session_id: str, at_seq: int | None, new_id: str | None) -> Any:
        source = yield from self._get(session_id)
        if source is None:
            raise SessionNotFoundError(f"no session {session_id!r} in this store")
        copy = new_session(source.user_id, dict(source.metadata), new_id, self._clock())
        copy.state.update(source.state)
        copy.parent_id = session_id
        kept = [m for m in source.messages if at_seq is None or (m.seq or 0) <= at_seq]
        copy.messages.extend(
            Message(m.role, m.content, m.timestamp, m.extras, seq) for seq, m in enumerate(kept)
        )
        return (yield from self._create(copy))

    def export_page(self, user_id: str | None, cursor: str | None) -> Job[Any]:
        listed = self.list_sessions(user_id, None, "created", transfer.PAGE, cursor)
        return Job(self._export_page(listed.plan), write=False)

    def _export_page(self, listed: Any) -> Any:
        page = yield from listed
        return page.sessions, page.cursor

    def import_sessions(self, sessions: list[Session]) -> Job[Any]:
        return Job(self._import(sessions), write=True)

    def _import(self, sessions: list[Session]) -> Any:
        report = transfer.ImportReport()
        for session in sessions:
            stored = yield from self._get(session.session_id)
            if stored is None:
                yield Call("save", (session,))
                report += transfer.ImportReport(created=1)
            elif transfer.session_line(stored) == transfer.session_line(session):
                report += transfer.ImportReport(unchanged=1)
            else:
                report += transfer.ImportReport(conflicts=(session.session_id,))
        return report

    def update(
        self, session_id: str, change: Callable[[Session], object], retries: int
    ) -> Job[Session]:
        raise UnsupportedOperationError(
            "update() needs a store that keeps versions (it retries on conflicts); use a "
            "built-in store, or get_session + save with your own locking"
        )

    def pop_message(self, session_id: str) -> Job[Any]:
        def change(messages: list[Message]) -> Any:
            return messages.pop() if messages else None

        return Job(self._edit(session_id, change), write=True)

    def delete_message(self, session_id: str, seq: int) -> Job[bool]:
        _seq(seq)

        def change(messages: list[Message]) -> bool:
            kept = [m for m in messages if m.seq != seq]
            found = len(kept) != len(messages)
            messages[:] = kept
            return found

        return Job(self._edit(session_id, change), write=True)

    def update_message(self, session_id: str, seq: int, changes: dict[str, Any]) -> Job[Any]:
        _seq(seq)
        role = changes.get("role")  # (None keeps the role, as in the built-in stores)
        extras = {k: v for k, v in changes.items() if k not in ("role", "content")}

        def change(messages: list[Message]) -> Any:
            for index, old in enumerate(messages):
                if old.seq == seq:
                    new = attrs.evolve(
                        old,
                        role=old.role if role is None else role,
                        content=changes.get("content", old.content),
                        extras={**old.extras, **extras},
                    )
                    _check_messages([new])  # the built-in stores' checks, before it is saved
                    messages[index] = new
                    return new
            return None

        return Job(self._edit(session_id, change), write=True)

    def replace_messages(
        self, session_id: str, start: int, end: int, messages: list[Message]
    ) -> Job[list[Message]]:
        check_replacement(start, end, messages)
        new = [attrs.evolve(m, seq=start + i) for i, m in enumerate(messages)]

        def change(stored: list[Message]) -> list[Message]:
            before = [m for m in stored if m.seq is not None and m.seq < start]
            after = [m for m in stored if m.seq is not None and m.seq > end]
            stored[:] = before + new + after
            return new

        return Job(self._edit(session_id, change), write=True)

    def _edit(self, session_id: str, change: Callable[[list[Message]], Any]) -> Any:
        """Whole-session stores edit by get + save: not atomic against other writers."""
        keys.check_id(session_id, "session_id")
        session = yield from self._get(session_id)
        if session is None:
            raise SessionNotFoundError(f"no session {session_id!r} in this store")
        result = change(session.messages)
        session._synced = len(session.messages)
        session.updated_at = self._clock()
        yield Call("save", (session,))
        return result

    def clear_all(self) -> Job[None]:
        self._require("clear", "clear(self) -> None", "clear_all")
        return Job(self._one_call("clear"), write=True)

    def _one_call(self, method: str) -> Any:
        yield Call(method, ())

    def _require(self, method: str, signature: str, operation: str) -> None:
        if not callable(getattr(self._store, method, None)):
            raise UnsupportedOperationError(
                f"{operation}() needs {type(self._store).__name__} to define {signature} "
                "(sync or async); add it, or use a built-in store"
            )


def _nothing(value: T) -> Any:
    return value
    yield  # a plan that asks for nothing


def _next_seq(stored: list[Message]) -> int:
    """The seq after the highest stored one: seqs stay unique and ordered after deletes and
    replacements.  (The built-in stores keep the highest ever used; a whole-session store
    keeps only the messages, so a seq freed at the end, by a pop, is used again.)"""
    return max((m.seq for m in stored if m.seq is not None), default=-1) + 1


def _loaded(session: Session) -> None:
    """A session as the user's store returned it: all its messages count as stored."""
    session._synced = len(session.messages)


class CallBackend:
    """Drives :class:`Call` plans against a user store, from blocking or asyncio code."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()

    def run(self, plan: Any, *, write: bool) -> Any:
        """Blocking: coroutine methods run on a private event loop in its own thread."""
        answer: Any = None
        try:
            while True:
                call = plan.send(answer)
                answer = getattr(self._store, call.method)(*call.args)
                if inspect.isawaitable(answer):
                    answer = self._wait(answer)
        except StopIteration as stop:
            return stop.value

    async def run_async(
        self, plan: Any, *, write: bool, executor: Executor, heavy: bool = False
    ) -> Any:
        """Asyncio: coroutine methods are awaited, plain ones run in ``executor``.

        (``heavy`` is not used: the plans here encode nothing, the user's store does.)
        """
        loop = asyncio.get_running_loop()
        answer: Any = None
        try:
            while True:
                call = plan.send(answer)
                method = getattr(self._store, call.method)
                if inspect.iscoroutinefunction(method):
                    answer = await method(*call.args)
                else:
                    answer = await loop.run_in_executor(executor, partial(method, *call.args))
                    if inspect.isawaitable(answer):
                        answer = await answer
        except StopIteration as stop:
            return stop.value

    def _wait(self, awaitable: Any) -> Any:
        with self._loop_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="kvsessions-store-loop", daemon=True
                ).start()
        return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self._loop).result()

    def close(self) -> None:
        with self._loop_lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None  # the daemon thread ends with run_forever


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable
