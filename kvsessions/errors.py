"""One exception hierarchy: every error kvsessions raises derives from :class:`KVSessionsError`.

Each class also subclasses the builtin that plain Python code would catch for the same
problem (``KeyError`` for a missing session, ``ValueError`` for bad input, ``ConnectionError``
for an unreachable store), so ``except LookupError`` keeps working for callers who do not
know this library.  Every message says what happened and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "CorruptRecordError",
    "InvalidIdError",
    "InvalidSessionError",
    "InvalidValueError",
    "KVSessionsError",
    "SchemaVersionError",
    "SessionArchivedError",
    "SessionExistsError",
    "SessionNotFoundError",
    "StoreClosedError",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
    "UnsupportedOperationError",
]


class KVSessionsError(Exception):
    """Base class of every error raised by kvsessions."""


class InvalidSessionError(KVSessionsError, ValueError):
    """A session, message, id or value cannot be stored as given; nothing was written."""


class InvalidIdError(InvalidSessionError):
    """A session or user id is not acceptable (wrong type, empty, too long, NUL, bad unicode)."""


class InvalidValueError(InvalidSessionError, TypeError):
    """A value in state, metadata, content or extras would not round-trip exactly as JSON."""


class SessionNotFoundError(KVSessionsError, KeyError):
    """The session does not exist in the store (never saved, deleted, or expired)."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0]) if self.args else "session not found"


class ConflictError(KVSessionsError):
    """The stored session changed in a way this save may not silently merge."""


class SessionExistsError(ConflictError):
    """A new session was saved under an id that is already taken."""


class SessionArchivedError(ConflictError):
    """Changes were saved to an archived session; restore it first."""


class CorruptRecordError(KVSessionsError):
    """A stored record is damaged or not a kvsessions record; other sessions are unaffected."""


class SchemaVersionError(KVSessionsError):
    """A record or store was written by a newer kvsessions format than this one reads."""


class StoreError(KVSessionsError, OSError):
    """The storage engine failed (disk full, permissions, engine error); nothing was written."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The store cannot be reached (server down, wrong credentials, timeout)."""


class StoreClosedError(KVSessionsError):
    """The store or manager was closed and then used."""


class StoreConfigError(KVSessionsError, ValueError):
    """A store was configured with arguments it cannot work with."""


class UnsupportedOperationError(KVSessionsError, NotImplementedError):
    """A user-defined store lacks the optional method an operation needs."""
