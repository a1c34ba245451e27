"""``list_sessions``: pages of session headers from the indexes, with opaque cursors.

Orders (newest first): ``"activity"`` reads the activity index (to the minute, then by
session id), ``"created"`` the creation index (global, or the user's own).  A page reads
``limit`` index entries and their headers, never messages, and never more of the index
than the page needs, so its cost does not grow with the number of sessions stored.  With
a user and ``order="activity"`` the user's sessions are read and sorted (a user's
sessions are few; there is no per-user activity index to keep up to date on every save).
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any, TypeVar

from . import keys
from .backends.base import Batch, Get, Plan, Scan
from .codec import HeaderRecord, decode_header
from .core import build_session, expired
from .errors import InvalidSessionError
from .model import Session, SessionPage, SessionStatus

__all__ = ["ORDERS", "check_listing", "list_sessions"]

T = TypeVar("T")
ORDERS = ("activity", "created")
MAX_LIMIT = 10_000
_U64 = struct.Struct(">Q")


def check_listing(
    user_id: str | None, status: Any, order: str, limit: int
) -> tuple[SessionStatus, ...]:
    """Validate ``list_sessions`` arguments; the statuses to list (any store)."""
    if user_id is not None:
        keys.check_id(user_id, "user_id")
    if order not in ORDERS:
        raise InvalidSessionError(f"order must be 'activity' or 'created', got {order!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
        raise InvalidSessionError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
    if status is None:
        return tuple(SessionStatus)
    try:
        return (SessionStatus(status),)
    except ValueError:
        raise InvalidSessionError(
            f"status must be 'active', 'archived' or None (both), got {status!r}"
        ) from None


def encode_cursor(query: bytes, position: bytes) -> str:
    """An opaque cursor: the listing it belongs to (a checksum) and where it stopped."""
    return base64.urlsafe_b64encode(_U64.pack(zlib.crc32(query)) + position).decode()


def decode_cursor(query: bytes, cursor: str | None) -> bytes | None:
    """The position in a cursor made by :func:`encode_cursor` for the same listing."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
    except (ValueError, AttributeError, UnicodeEncodeError):
        raw = b""
    if len(raw) < 8 or _U64.unpack_from(raw)[0] != zlib.crc32(query):
        raise InvalidSessionError(
            f"cursor {cursor!r:.40} does not belong to this listing; pass back the cursor of "
            "the previous page of the same list_sessions(...) call, or None to start over"
        )
    return raw[8:]


def list_sessions(
    user_id: str | None,
    status: Any,
    order: str,
    limit: int,
    cursor: str | None,
    expiry_us: int | None = None,
) -> Plan[SessionPage]:
    """One page of sessions, newest first (see the module docstring)."""
    statuses = check_listing(user_id, status, order, limit)
    query = repr((user_id, sorted(statuses), order)).encode("utf-8", "surrogatepass")
    position = decode_cursor(query, cursor)
    if user_id is not None and order == "activity":
        return (yield from _user_by_activity(user_id, statuses, limit, query, position, expiry_us))
    if order == "activity":
        prefixes = [keys.activity_range(s)[0] for s in statuses]
        fixed = 10
    elif user_id is None:
        prefixes, fixed = [keys.CREATED_SPACE], 9
    else:
        prefixes = [keys.user_range(user_id)[0]]
        fixed = len(prefixes[0]) + 8
    sessions: list[Session] = []
    more = True
    while more and len(sessions) < limit:
        want = limit - len(sessions)
        scans = tuple(
            Scan(
                prefix, prefix + position if position is not None else _end(prefix), want + 1, True
            )
            for prefix in prefixes
        )
        answers = yield Batch(scans)
        entries = sorted(
            ((key[len(prefix) :], key) for prefix, rows in zip(prefixes, answers, strict=True)
             for key, _ in rows),
            reverse=True,
        )  # fmt: skip
        more = len(entries) > want
        entries = entries[:want]
        sids = [keys.parse_index_sid(key, fixed) for _, key in entries]
        headers = yield Batch(tuple(Get(keys.header_key(sid)) for sid in sids))
        for (rest, key), sid, header in zip(entries, sids, headers, strict=True):
            position = rest
            record = decode_header(header) if header is not None else None
            if record is None or not _indexed(key, sid, record, user_id, order):
                continue  # a stale entry
            if record.status in statuses and not expired(record, expiry_us):
                sessions.append(build_session(sid, header, (), record))
    cursor = encode_cursor(query, position) if more and position is not None else None
    return SessionPage(sessions, cursor)


def _end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _indexed(key: bytes, sid: str, record: HeaderRecord, user_id: str | None, order: str) -> bool:
    """Whether an index entry still describes the session's header (else it is stale)."""
    if order == "activity":
        return key == keys.activity_key(record.status, record.updated_at, sid)
    if user_id is None:
        return key == keys.created_key(record.created_at, sid)
    return record.user_id == user_id and key == keys.user_key(user_id, record.created_at, sid)


def _user_by_activity(
    user_id: str,
    statuses: tuple[SessionStatus, ...],
    limit: int,
    query: bytes,
    position: bytes | None,
    expiry_us: int | None,
) -> Plan[SessionPage]:
    start, stop = keys.user_range(user_id)
    index = yield Scan(start, stop)
    fixed = len(start) + 8
    sids = [keys.parse_index_sid(key, fixed) for key, _ in index]
    headers = yield Batch(tuple(Get(keys.header_key(sid)) for sid in sids))
    ranked = []
    for sid, header in zip(sids, headers, strict=True):
        if header is None:
            continue
        record = decode_header(header)
        if record.user_id != user_id or record.status not in statuses:
            continue
        if expired(record, expiry_us):
            continue
        ranked.append((rank(record.updated_at, sid), (sid, header, record)))
    page, cursor = page_of(ranked, limit, query, position)  # sessions built for the page only
    return SessionPage([build_session(sid, h, (), r) for sid, h, r in page], cursor)


def rank(micros: int, session_id: str) -> bytes:
    """A session's place in a listing sorted in memory: its time, then its id.

    (A user's own store may hold times before 1970: they rank as 1970, then by id.)
    """
    return _U64.pack(max(micros, 0)) + session_id.encode("utf-8", "surrogatepass")


def page_of(
    ranked: list[tuple[bytes, T]], limit: int, query: bytes, position: bytes | None
) -> tuple[list[T], str | None]:
    """The page after ``position`` of items ranked in memory, newest first, and a cursor."""
    if position is not None:
        ranked = [item for item in ranked if item[0] < position]
    ranked.sort(reverse=True, key=lambda item: item[0])
    page = ranked[:limit]
    cursor = encode_cursor(query, page[-1][0]) if len(ranked) > limit else None
    return [item for _, item in page], cursor
