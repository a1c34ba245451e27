"""The key layout: how ids and sequence numbers become ordered, collision-free byte keys.

Every key starts with one byte naming its space; strings are UTF-8 followed by a NUL
terminator (ids may not contain NUL, so the encoding is prefix-free and two different tuples
never share a key); integers are 8-byte big-endian, so byte order is numeric order.

    h <sid>                          session header
    m <sid> <seq>                    one message
    u <user> <created_us> <sid>      index: a user's sessions, in creation order
    a <status> <updated_us> <sid>    index: sessions by last activity, per status
    ! format                         store-wide format version

LMDB limits keys to 511 bytes; ids are capped at :data:`MAX_ID_BYTES` so the longest key
(a user index entry) stays well under it.
"""

from __future__ import annotations

import struct

from .errors import InvalidIdError
from .model import SessionStatus

__all__ = [
    "FORMAT_KEY",
    "SessionKeys",
    "MAX_ID_BYTES",
    "activity_key",
    "activity_range",
    "check_id",
    "header_key",
    "message_key",
    "message_range",
    "parse_index_sid",
    "seq_of_message_key",
    "user_key",
    "user_range",
]

MAX_ID_BYTES = 200
FORMAT_KEY = b"!format"
_U64 = struct.Struct(">Q")
_STATUS_BYTE = {SessionStatus.ACTIVE: b"A", SessionStatus.ARCHIVED: b"R"}


def check_id(value: object, what: str) -> bytes:
    """Validate a session or user id and return its encoded key part."""
    if type(value) is not str:
        raise InvalidIdError(f"{what} must be a str, got {type(value).__name__} {value!r:.60}")
    if not value:
        raise InvalidIdError(f"{what} must not be empty")
    if "\x00" in value:
        raise InvalidIdError(f"{what} must not contain NUL characters: {value!r:.60}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidIdError(
            f"{what} is not valid unicode text (lone surrogate at {exc.start}): {value!r:.60}"
        ) from None
    if len(raw) > MAX_ID_BYTES:
        raise InvalidIdError(
            f"{what} is {len(raw)} bytes in UTF-8; the limit is {MAX_ID_BYTES}: use a shorter "
            "id, e.g. a hash of this one"
        )
    return raw + b"\x00"


def _part(value: str) -> bytes:
    return value.encode("utf-8") + b"\x00"


def header_key(sid: str) -> bytes:
    return b"h" + _part(sid)


def message_key(sid: str, seq: int) -> bytes:
    return b"m" + _part(sid) + _U64.pack(seq)


def message_range(sid: str, start: int = 0, stop: int | None = None) -> tuple[bytes, bytes]:
    """Keys of messages with ``start <= seq < stop`` (all from ``start`` if stop is None)."""
    prefix = b"m" + _part(sid)
    end = prefix[:-1] + b"\x01" if stop is None else prefix + _U64.pack(stop)
    return prefix + _U64.pack(start), end


def seq_of_message_key(key: bytes) -> int:
    return _U64.unpack_from(key, len(key) - 8)[0]


def user_key(user_id: str, created_us: int, sid: str) -> bytes:
    return b"u" + _part(user_id) + _U64.pack(created_us) + _part(sid)


def user_range(user_id: str) -> tuple[bytes, bytes]:
    prefix = b"u" + _part(user_id)
    return prefix, prefix[:-1] + b"\x01"


def activity_key(status: SessionStatus, updated_us: int, sid: str) -> bytes:
    return b"a" + _STATUS_BYTE[status] + _U64.pack(updated_us) + _part(sid)


def activity_range(status: SessionStatus, before_us: int | None = None) -> tuple[bytes, bytes]:
    """Activity index keys of ``status`` sessions last active before ``before_us``."""
    prefix = b"a" + _STATUS_BYTE[status]
    if before_us is None:
        return prefix, prefix[:-1] + bytes([prefix[-1] + 1])
    return prefix, prefix + _U64.pack(max(before_us, 0))


def parse_index_sid(key: bytes, fixed: int) -> str:
    """The session id at the end of an index key whose first ``fixed`` bytes precede it.

    For user keys pass the length of the user prefix + 8; for activity keys, 10.
    """
    return key[fixed:-1].decode("utf-8")


class SessionKeys:
    """The keys of one session, with its encoded id computed once (for the save path)."""

    __slots__ = ("_message_prefix", "_tail", "header", "sid")

    def __init__(self, sid: str) -> None:
        part = check_id(sid, "session_id")
        self.sid = sid
        self.header = b"h" + part
        self._message_prefix = b"m" + part
        self._tail = part

    def message(self, seq: int) -> bytes:
        return self._message_prefix + _U64.pack(seq)

    def activity(self, status: SessionStatus, updated_us: int) -> bytes:
        return b"a" + _STATUS_BYTE[status] + _U64.pack(updated_us) + self._tail

    def user(self, user_id: str, created_us: int) -> bytes:
        return b"u" + _part(user_id) + _U64.pack(created_us) + self._tail
