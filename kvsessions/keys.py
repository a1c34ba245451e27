"""The key layout: how ids and sequence numbers become ordered, collision-free byte keys.

Every key starts with one byte naming its space; strings are UTF-8 followed by a NUL
terminator (ids may not contain NUL, so the encoding is prefix-free and two different tuples
never share a key); integers are 8-byte big-endian, so byte order is numeric order.

    h <sid>                          session header
    m <sid> <seq>                    one message
    c <created_us> <sid>             index: all sessions, in creation order
    i <user> <created_us> <sid>      index: a user's sessions, in creation order
    a <status> <bucket_us> <sid>     index: sessions by last activity, per status
    ! format                         store-wide layout version (:data:`STORE_FORMAT`)
    ! migrate                        a migration's progress (only while one runs)

The activity index records the *minute* of the last save (``updated_us`` rounded down
to :data:`ACTIVITY_BUCKET_US`), so a conversation's saves within one minute do not
touch the index at all: most appends write the message and the header, nothing else.
The header keeps the exact time; ``archive_inactive`` checks it.

LMDB limits keys to 511 bytes; ids are capped at :data:`MAX_ID_BYTES` so the longest key
(a user index entry) stays well under it.
"""

from __future__ import annotations

import struct

from .errors import CorruptRecordError, InvalidIdError
from .model import SessionStatus

__all__ = [
    "CREATED_SPACE",
    "FORMAT_KEY",
    "MIGRATE_KEY",
    "STORE_FORMAT",
    "SessionKeys",
    "MAX_ID_BYTES",
    "ACTIVITY_BUCKET_US",
    "activity_bucket",
    "activity_key",
    "activity_prefix",
    "activity_range",
    "is_activity_entry",
    "check_id",
    "created_key",
    "created_range",
    "family_of",
    "family_range",
    "header_key",
    "message_key",
    "message_range",
    "parse_index_sid",
    "seq_of_message_key",
    "session_of",
    "user_key",
    "user_range",
]

MAX_ID_BYTES = 200
# Every index space sorts before the message space ("m"), so a session's newest messages
# sit at the end of the key order: appends then fill pages in order instead of splitting
# pages in the middle (LMDB writes ~1.4 pages per append instead of ~4.9).
USER_SPACE = b"i"
CREATED_SPACE = b"c"
ACTIVITY_BUCKET_US = 60_000_000  # the activity index's resolution: one minute
FORMAT_KEY = b"!format"
MIGRATE_KEY = b"!migrate"
#: The key layout's version, stored under FORMAT_KEY.  1: no creation index; 2: adds it.
STORE_FORMAT = 2
_U64 = struct.Struct(">Q")
_ZERO_SEQ = _U64.pack(0)
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
    return USER_SPACE + _part(user_id) + _U64.pack(created_us) + _part(sid)


def user_range(user_id: str) -> tuple[bytes, bytes]:
    prefix = USER_SPACE + _part(user_id)
    return prefix, prefix[:-1] + b"\x01"


def created_key(created_us: int, sid: str) -> bytes:
    return CREATED_SPACE + _U64.pack(created_us) + _part(sid)


def created_range() -> tuple[bytes, bytes]:
    return CREATED_SPACE, bytes([CREATED_SPACE[0] + 1])


def activity_bucket(updated_us: int) -> int:
    """The activity index's time for a save at ``updated_us``: its minute."""
    return updated_us - updated_us % ACTIVITY_BUCKET_US


def activity_prefix(status: SessionStatus) -> bytes:
    """The first bytes of every activity entry of ``status`` sessions."""
    return b"a" + _STATUS_BYTE[status]


def activity_key(status: SessionStatus, updated_us: int, sid: str) -> bytes:
    return activity_prefix(status) + _U64.pack(activity_bucket(updated_us)) + _part(sid)


def is_activity_entry(key: bytes, status: SessionStatus, updated_us: int) -> bool:
    """Whether ``key`` (an activity entry) is the one a header with these fields has."""
    return key[1:2] == _STATUS_BYTE[status] and key[2:10] == _U64.pack(activity_bucket(updated_us))


def activity_range(status: SessionStatus, before_us: int | None = None) -> tuple[bytes, bytes]:
    """Activity index keys of ``status`` sessions that may be last active before ``before_us``.

    The range ends after ``before_us``'s own minute: entries of that minute may be on
    either side of it (their headers tell).
    """
    prefix = activity_prefix(status)
    if before_us is None:
        return prefix, prefix[:-1] + bytes([prefix[-1] + 1])
    return prefix, prefix + _U64.pack(activity_bucket(max(before_us, 0)) + ACTIVITY_BUCKET_US)


def parse_index_sid(key: bytes, fixed: int) -> str:
    """The session id at the end of an index key whose first ``fixed`` bytes precede it.

    For user keys pass the length of the user prefix + 8; for activity keys, 10; for
    creation keys, 9.
    """
    try:
        return key[fixed:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptRecordError(
            f"index entry {key!r:.80} does not end in a session id (damaged or foreign "
            "data); run `kvsessions check` on the store"
        ) from None


class SessionKeys:
    """The keys of one session, with its encoded id computed once (for the save path)."""

    __slots__ = ("_message_prefix", "_tail", "header", "sid")

    def __init__(self, sid: str) -> None:
        part = check_id(sid, "session_id")
        self.sid = sid
        self.header = b"h" + part
        self._message_prefix = b"m" + part
        self._tail = part

    @classmethod
    def of_header(cls, header: bytes) -> SessionKeys:
        """The keys of the session whose header key is ``header`` (a key this layout made)."""
        keys = cls.__new__(cls)
        part = header[1:]
        keys.sid, keys.header = part[:-1].decode("utf-8"), header
        keys._message_prefix, keys._tail = b"m" + part, part
        return keys

    def message(self, seq: int) -> bytes:
        return self._message_prefix + _U64.pack(seq)

    def message_span(self, start: int, stop: int) -> tuple[bytes, bytes]:
        """The range of this session's message keys with ``start <= seq < stop``."""
        prefix = self._message_prefix
        return prefix + _U64.pack(start), prefix + _U64.pack(stop)

    def messages(self) -> tuple[bytes, bytes]:
        """The range of all this session's message keys (as :func:`message_range`)."""
        prefix = self._message_prefix
        return prefix + _ZERO_SEQ, prefix[:-1] + b"\x01"

    def activity(self, status: SessionStatus, updated_us: int) -> bytes:
        return b"a" + _STATUS_BYTE[status] + _U64.pack(activity_bucket(updated_us)) + self._tail

    def user(self, user_id: str, created_us: int) -> bytes:
        return USER_SPACE + _part(user_id) + _U64.pack(created_us) + self._tail

    def created(self, created_us: int) -> bytes:
        return CREATED_SPACE + _U64.pack(created_us) + self._tail

    def index_entries(
        self, user_id: str, created_us: int, status: SessionStatus, updated_us: int
    ) -> tuple[bytes, bytes, bytes]:
        """Every index entry that names this session: by user, by activity, by creation."""
        return (
            self.user(user_id, created_us),
            self.activity(status, updated_us),
            self.created(created_us),
        )


# -- families: the ordered groups of keys the core scans (used by remote backends) -------

_FAMILY_SPACES = b"m" + USER_SPACE + b"a" + CREATED_SPACE


def family_of(key: bytes) -> tuple[bytes, bytes] | None:
    """Split a key of a scanned family into ``(family prefix, rest)``, else ``None``.

    Families: one session's messages (``m <sid>``), one user's index (``i <user>``), the
    activity index of one status (``a <status>``) and the creation index (``c``).  Keys of
    one family sort by ``rest``.
    """
    if not key or key[0] not in _FAMILY_SPACES:
        return None
    if key[0] == CREATED_SPACE[0]:
        return key[:1], key[1:]
    if key[0] == 0x61:  # "a": the status byte ends the family prefix
        return (key[:2], key[2:]) if len(key) >= 2 else None
    end = key.find(b"\x00", 1)
    return None if end < 0 else (key[: end + 1], key[end + 1 :])


def family_range(start: bytes, stop: bytes) -> tuple[bytes, bytes, bytes | None] | None:
    """``(family, lo, hi)`` when ``start <= key < stop`` lies within one family, else ``None``.

    ``lo``/``hi`` bound the family's ``rest`` (``hi`` exclusive; ``None``: to the family's
    end).  An empty range of a family gives ``lo >= hi``.
    """
    split = family_of(start)
    if split is None:
        return None
    family, lo = split
    end = family[:-1] + bytes([family[-1] + 1])  # the first key after the family
    if stop.startswith(family):
        return family, lo, stop[len(family) :]
    if stop <= family:
        return family, lo, b""
    return (family, lo, None) if stop <= end else None


def session_of(key: bytes) -> bytes | None:
    """The encoded session id (UTF-8, no terminator) a header/message/index key names."""
    if key[:1] == b"h":
        return key[1:-1]
    split = family_of(key)
    if split is None:
        return None
    family, rest = split
    if family[0] == 0x6D:  # "m": the family is the session
        return family[1:-1]
    return rest[8:-1] if len(rest) > 9 else None
