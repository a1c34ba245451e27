"""The data model users touch: :class:`Session`, :class:`Message`, :class:`SessionStatus`.

A ``Session`` also remembers what it looked like when it was last loaded or saved (its
*base*), so that ``save()`` can write only what changed: messages added since, state and
metadata keys that differ.  That bookkeeping lives in private, non-compared attributes.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from .errors import InvalidSessionError
from .values import check_json_value

__all__ = ["Message", "Session", "SessionPage", "SessionStatus", "new_session_id", "utcnow"]


_now = datetime.now


#: The wall clock as a timezone-aware UTC datetime (microsecond precision): the default
#: clock of the managers, a partial of ``datetime.now`` (no Python frame per reading).
utcnow: Callable[[], datetime] = functools.partial(datetime.now, UTC)


def new_session_id() -> str:
    """A fresh random session id: a random (version 4) UUID as 32 hex digits."""
    # as uuid.uuid4().hex, without the UUID object (a fifth of the cost)
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


class SessionStatus(enum.StrEnum):
    """Lifecycle of a session: active sessions take writes; archived ones are read-only."""

    ACTIVE = "active"
    ARCHIVED = "archived"


@attrs.frozen(slots=True)
class Message:
    """One message of a conversation.

    ``seq`` is the store-assigned position in the session (0, 1, 2, ...); it is ``None``
    until the message has been saved.  ``extras`` holds any further JSON-shaped fields
    (``tool_call_id``, ``name``, ...).
    """

    role: str
    content: Any
    timestamp: datetime = attrs.field(factory=utcnow)
    extras: dict[str, Any] = attrs.field(factory=dict)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The message as a plain dict (``role``, ``content``, extras, ``timestamp``, ``seq``)."""
        return {
            **self.extras,
            "role": self.role,
            "content": self.content,
            "timestamp": self.timestamp,
            "seq": self.seq,
        }


_new_object = object.__new__
#: The slots' own setters: a frozen class refuses ``setattr``, and calling the slot
#: descriptor is a third cheaper than ``object.__setattr__`` (no attribute lookup).
MESSAGE_SETTERS = tuple(
    Message.__dict__[name].__set__ for name in ("role", "content", "timestamp", "extras", "seq")
)  # (internal: the batch decoder builds messages with them too)
_set_role, _set_content, _set_timestamp, _set_extras, _set_seq = MESSAGE_SETTERS


def stored_message(
    role: str, content: Any, timestamp: datetime, extras: dict[str, Any], seq: int | None
) -> Message:
    """A :class:`Message` from already-checked fields (internal; skips ``__init__``).

    Loads, saves and ``add_message`` build one per message; bypassing the frozen
    class's generated ``__init__`` makes that about half as costly.
    """
    message = _new_object(Message)
    _set_role(message, role)
    _set_content(message, content)
    _set_timestamp(message, timestamp)
    _set_extras(message, extras)
    _set_seq(message, seq)
    return message


@attrs.define(slots=True)
class SyncBase:
    """What a session looked like in the store when last loaded or saved (internal).

    ``header`` is the stored header record byte for byte: the compare-and-set token of
    the next save.  ``record`` is its decoded form (``codec.HeaderRecord``).  The two JSON
    snapshots are what ``state`` and ``metadata`` were, for finding what changed: bytes,
    so later mutations of the user's objects cannot reach them.
    """

    header: bytes
    record: Any
    state_json: bytes
    metadata_json: bytes
    keys: Any  # keys.SessionKeys of the session id it was synced under


@attrs.define(slots=True)
class Session:
    """A conversation: identity, metadata, messages and small per-session state.

    Build one directly (``Session(session_id=..., user_id=...)``) or with
    ``manager.create_session(...)``.  Mutate it with :meth:`add_message`,
    :meth:`set_state`, ``metadata[...] = ...``; then ``manager.save(session)`` writes only
    what changed, in one atomic commit.
    """

    session_id: str = attrs.field(factory=new_session_id)
    user_id: str = ""
    metadata: dict[str, Any] = attrs.field(factory=dict)
    messages: list[Message] = attrs.field(factory=list)
    state: dict[str, Any] = attrs.field(factory=dict)
    status: SessionStatus = SessionStatus.ACTIVE
    created_at: datetime = attrs.field(factory=utcnow)
    updated_at: datetime = attrs.field(factory=utcnow)
    #: The session this one was forked from (``manager.fork``), else ``None``.
    parent_id: str | None = None
    _base: SyncBase | None = attrs.field(default=None, init=False, repr=False, eq=False)
    # messages[:_synced] are stored; the rest are pending (added since the last sync).
    _synced: int = attrs.field(default=0, init=False, repr=False, eq=False)
    # stored messages that were not loaded into ``messages`` (windowed loads)
    _unloaded: int = attrs.field(default=0, init=False, repr=False, eq=False)
    # the token of a save that has not been seen to succeed; reused when it is retried
    _save_token: str | None = attrs.field(default=None, init=False, repr=False, eq=False)

    def add_message(self, role: str, content: Any, **extras: Any) -> Message:
        """Append a message (stored at the next ``save``) and return it."""
        if (type(role) is not str and not isinstance(role, str)) or not role:
            raise InvalidSessionError(
                f"message role must be a non-empty str (e.g. 'user'), got {role!r}"
            )
        if type(content) is not str or not content.isascii():  # (ASCII text: nothing to check)
            check_json_value(content, "message content")
        if extras:
            check_json_value(extras, "message extras")
        message = stored_message(role, content, _now(UTC), extras, None)
        self.messages.append(message)
        return message

    def set_state(self, key: str, value: Any) -> None:
        """Set one state entry; concurrent saves that set other keys merge with it."""
        if not isinstance(key, str):
            raise InvalidSessionError(f"state keys must be str, got {type(key).__name__}")
        check_json_value(value, f"state[{key!r}]")
        self.state[key] = value

    def get_state(self, key: str, default: Any = None) -> Any:
        """Return one state entry, or ``default`` when it is not set."""
        return self.state.get(key, default)

    def delete_state(self, key: str) -> None:
        """Remove one state entry (no error if it is absent)."""
        self.state.pop(key, None)

    @property
    def message_count(self) -> int:
        """Messages in the session: stored (even ones not loaded) plus pending ones."""
        return len(self.messages) + self._unloaded

    @property
    def version(self) -> int:
        """Stored version: bumped by every committed save (0 while never saved)."""
        return self._base.record.version if self._base is not None else 0

    @property
    def pending_messages(self) -> list[Message]:
        """Messages added since the session was last loaded or saved."""
        return self.messages[self._synced :]

    @property
    def is_saved(self) -> bool:
        """True once the session has been loaded from or saved to a store."""
        return self._base is not None


def stored_session(
    session_id: str,
    user_id: str,
    metadata: dict[str, Any],
    messages: list[Message],
    state: dict[str, Any],
    status: SessionStatus,
    created_at: datetime,
    updated_at: datetime,
    parent_id: str | None,
) -> Session:
    """A :class:`Session` from already-checked stored fields (internal; skips ``__init__``).

    Every load builds one; the caller then records what was loaded (``_base``).
    """
    session = _new_object(Session)
    session.session_id = session_id
    session.user_id = user_id
    session.metadata = metadata
    session.messages = messages
    session.state = state
    session.status = status
    session.created_at = created_at
    session.updated_at = updated_at
    session.parent_id = parent_id
    session._base = None
    session._synced = 0
    session._unloaded = 0
    session._save_token = None
    return session


@attrs.frozen(slots=True)
class SessionPage:
    """One page of ``list_sessions``: sessions without their messages, and a cursor.

    Pass ``cursor`` back to ``list_sessions`` for the next page; it is ``None`` once the
    listing is exhausted.  The sessions' ``message_count`` is the true total and they
    can be saved (new messages are appended after the stored ones).
    """

    sessions: list[Session]
    cursor: str | None

    def __iter__(self) -> Any:
        return iter(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)
