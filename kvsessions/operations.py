"""The manager operations for the built-in stores, as jobs: a plan and whether it writes.

Each method validates its arguments, reads the clock once, and returns the plan from
:mod:`~kvsessions.core`, :mod:`~kvsessions.listing`, :mod:`~kvsessions.lifecycle` or
:mod:`~kvsessions.transfer` that does the work.  The managers run the jobs; this class
holds only the clock and the store's TTL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from . import core, lifecycle, listing, transfer
from .backends.base import HEAVY_STEP_ROWS
from .codec import to_micros
from .core import Job, check_window, inactive_since, new_session
from .model import Message, Session, SessionPage, SessionStatus

__all__ = ["KVOperations"]


class KVOperations:
    """The manager operations as plans over the key-value protocol.

    ``ttl_us``: sessions not saved for this long are expired (``None``: never).  Only
    the local stores pass one; Redis expires keys itself.
    """

    def __init__(self, clock: Callable[[], datetime], ttl_us: int | None = None) -> None:
        self._clock = clock
        self._ttl_us = ttl_us

    def _now_us(self) -> int:
        return to_micros(self._clock())

    def _expiry(self, now_us: int | None = None) -> int | None:
        if self._ttl_us is None:
            return None
        return (self._now_us() if now_us is None else now_us) - self._ttl_us

    def create(
        self, user_id: str, metadata: dict[str, Any] | None, session_id: str | None
    ) -> Job[Session]:
        session = new_session(user_id, metadata, session_id, self._clock())
        plan = core.save(session, session.created_at, None, self._expiry())
        return Job(plan, write=True)

    def save(self, session: Session, expect_version: int | None) -> Job[Session]:
        now = self._clock()
        expiry_us = None if self._ttl_us is None else to_micros(now) - self._ttl_us
        plan = core.save(session, now, expect_version, expiry_us)
        # (a save of many messages encodes them all in its first step)
        unsaved = len(session.messages) - session._synced if isinstance(session, Session) else 0
        return Job(plan, True, unsaved > HEAVY_STEP_ROWS)

    def create_directly(
        self,
        user_id: str,
        metadata: dict[str, Any] | None,
        session_id: str | None,
        write_if: core.WriteIf,
    ) -> Session | None:
        """Create in one engine transaction (``core.create_directly``); None if it did not."""
        if self._ttl_us is not None:  # (an expired session of that id must be purged first)
            return None
        session = new_session(user_id, metadata, session_id, self._clock())
        return session if core.create_directly(session, write_if) else None

    def append_directly(self, session: Session, write_if: core.WriteIf) -> bool:
        """Save an append in one engine transaction (``core.append_directly``); whether it did."""
        if self._ttl_us is not None:  # (an expired session must not be appended to)
            return False
        return core.append_directly(session, self._clock(), write_if)

    def load_directly(
        self, session_id: str, messages: int | None, read: Callable[[Any], Any]
    ) -> Session | Literal[False] | None:
        """Load with one engine read (``core.load_directly``); False: run :meth:`get`."""
        return core.load_directly(session_id, check_window(messages), self._expiry(), read)

    def get(self, session_id: str, messages: int | None = None) -> Job[Session | None]:
        # a read that may remove an expired session on the way (a read plan may commit)
        return Job(core.load(session_id, check_window(messages), self._expiry()), write=False)

    def get_messages(
        self,
        session_id: str,
        limit: int | None,
        before: int | None,
        after: int | None,
        pair_safe: bool,
    ) -> Job[list[Message]]:
        plan = core.messages_window(
            session_id, check_window(limit), before, after, pair_safe, self._expiry()
        )
        return Job(plan, write=False)

    def for_user(self, user_id: str) -> Job[list[Session]]:
        return Job(core.sessions_for_user(user_id, self._expiry()), write=False)

    def list_sessions(
        self,
        user_id: str | None,
        status: str | None,
        order: str,
        limit: int,
        cursor: str | None,
    ) -> Job[SessionPage]:
        plan = listing.list_sessions(user_id, status, order, limit, cursor, self._expiry())
        return Job(plan, write=False)

    def delete(self, session_id: str) -> Job[bool]:
        return Job(core.delete(session_id, self._expiry()), write=True)

    def archive(self, session_id: str) -> Job[bool]:
        plan = core.set_status(session_id, SessionStatus.ARCHIVED, None, self._expiry())
        return Job(plan, write=True)

    def restore(self, session_id: str) -> Job[bool]:
        now_us = self._now_us()
        plan = core.set_status(session_id, SessionStatus.ACTIVE, now_us, self._expiry(now_us))
        return Job(plan, write=True)

    def archive_inactive(self, days: float, dry_run: bool = False) -> Job[int]:
        cutoff_us = to_micros(inactive_since(days, self._clock))
        return Job(lifecycle.archive_inactive(cutoff_us, dry_run), write=not dry_run)

    def purge_archived(self, older_than_days: float, dry_run: bool = False) -> Job[int]:
        cutoff_us = to_micros(inactive_since(older_than_days, self._clock))
        plan = lifecycle.purge_before(SessionStatus.ARCHIVED, cutoff_us, dry_run)
        return Job(plan, write=not dry_run)

    def sweep(self) -> Job[int]:
        return Job(lifecycle.sweep(self._expiry()), write=True)

    def update(
        self, session_id: str, change: Callable[[Session], object], retries: int
    ) -> Job[Session]:
        # not a write plan: ``change`` is user code and must not run under the write lock
        return Job(core.update(session_id, change, retries, self._clock, self._ttl_us), False)

    def fork(self, session_id: str, at_seq: int | None, new_session_id: str | None) -> Job[Session]:
        now = self._clock()
        plan = core.fork(session_id, at_seq, new_session_id, now, self._expiry(to_micros(now)))
        return Job(plan, write=True)

    def pop_message(self, session_id: str) -> Job[Message | None]:
        now_us = self._now_us()
        return Job(core.pop_message(session_id, now_us, self._expiry(now_us)), write=True)

    def delete_message(self, session_id: str, seq: int) -> Job[bool]:
        now_us = self._now_us()
        return Job(core.delete_message(session_id, seq, now_us, self._expiry(now_us)), True)

    def update_message(
        self, session_id: str, seq: int, changes: dict[str, Any]
    ) -> Job[Message | None]:
        now_us = self._now_us()
        plan = core.update_message(session_id, seq, changes, now_us, self._expiry(now_us))
        return Job(plan, write=True)

    def replace_messages(
        self, session_id: str, start: int, end: int, messages: list[Message]
    ) -> Job[list[Message]]:
        now_us = self._now_us()
        plan = core.replace_messages(
            session_id, start, end, list(messages), now_us, self._expiry(now_us)
        )
        return Job(plan, write=True)

    def export_page(self, user_id: str | None, cursor: str | None) -> Job[Any]:
        return Job(transfer.export_page(user_id, cursor, self._expiry()), write=False)

    def import_sessions(self, sessions: list[Session]) -> Job[transfer.ImportReport]:
        return Job(transfer.import_sessions(sessions), write=True)

    def clear_all(self) -> Job[None]:
        return Job(core.clear_all(), write=True)
