"""Export and import: sessions as JSON Lines, and the plans that read and write them.

The format (``kvsessions.session/1``), one session per line, UTF-8::

    {"format": "kvsessions.session/1", "session_id": "...", "user_id": "...",
     "status": "active" | "archived", "created_at": "2026-11-25T14:15:10.123456+00:00",
     "updated_at": "...", "parent_id": null | "...", "metadata": {...}, "state": {...},
     "messages": [{"seq": 0, "role": "user", "content": ..., "timestamp": "...",
                   "extras": {...}}, ...]}

Timestamps are ISO 8601 with microseconds and an offset; every other value is the JSON
the session holds.  Importing a line creates the session exactly (ids, seqs, status, and
times as the same moments in UTC); a session that already exists, or came earlier in the
file, is left alone and counted ``unchanged`` if it is identical, else reported as a
conflict.  Importing the same file twice changes nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import attrs
import orjson

from . import keys
from .backends.base import Batch, Commit, Get, Plan, Scan
from .codec import HeaderRecord, encode_header, encode_message, to_micros
from .core import SEQ_LIMIT, Job, build_session
from .errors import InvalidSessionError
from .listing import list_sessions
from .model import Message, Session, SessionStatus
from .values import check_json_value

__all__ = [
    "FORMAT", "ImportReport", "checked_session", "export_steps", "import_steps", "session_line",
]  # fmt: skip

FORMAT = "kvsessions.session/1"
PAGE = 100  # sessions per export page / per import commit
PAGE_MESSAGES = 10_000  # an import commit also ends after this many messages
_FIELDS = {
    "format", "session_id", "user_id", "status", "created_at", "updated_at", "parent_id",
    "metadata", "state", "messages",
}  # fmt: skip
_MESSAGE_FIELDS = {"seq", "role", "content", "timestamp", "extras"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LONG_DIGITS = re.compile(rb"\d{19}")  # (every integer beyond 64 bits has 19 digits or more)

#: A multi-step operation: yields jobs for the manager to run, gets their results back.
Steps = Generator[Job[Any], Any, Any]


@attrs.frozen(slots=True)
class ImportReport:
    """What an import (or ``copy_store``) did: sessions created, already there, clashing."""

    created: int = 0
    unchanged: int = 0
    conflicts: tuple[str, ...] = ()  # ids that exist with different content: left alone

    def __add__(self, other: ImportReport) -> ImportReport:
        return ImportReport(
            self.created + other.created,
            self.unchanged + other.unchanged,
            self.conflicts + other.conflicts,
        )


def session_line(session: Session) -> bytes:
    """A fully loaded session as one export line (with the trailing newline)."""
    return (
        orjson.dumps(
            {
                "format": FORMAT,
                "session_id": session.session_id,
                "user_id": session.user_id,
                "status": str(session.status),
                "created_at": session.created_at.isoformat(),
                "updated_at": session.updated_at.isoformat(),
                "parent_id": session.parent_id,
                "metadata": session.metadata,
                "state": session.state,
                "messages": [
                    {
                        "seq": m.seq,
                        "role": m.role,
                        "content": m.content,
                        "timestamp": m.timestamp.isoformat(),
                        "extras": m.extras,
                    }
                    for m in session.messages
                ],
            }
        )
        + b"\n"
    )


def parse_line(line: bytes | str, where: str) -> Session:
    """One export line back to an unsaved :class:`Session` (messages keep their seqs)."""
    try:
        data = _loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidSessionError(f"{where}: not JSON ({exc})") from None
    except RecursionError:  # (only json.loads: orjson stops at 1024 levels)
        raise InvalidSessionError(f"{where}: nested too deeply for a session") from None
    if type(data) is not dict or data.keys() != _FIELDS:
        raise InvalidSessionError(
            f"{where}: an export line is an object with keys {sorted(_FIELDS)}"
        )
    if data["format"] != FORMAT:
        raise InvalidSessionError(
            f"{where}: format {data['format']!r} is not {FORMAT!r}; export it again with "
            "this kvsessions, or upgrade kvsessions to read it"
        )
    try:
        return _checked(
            Session(
                session_id=data["session_id"],
                user_id=data["user_id"],
                metadata=data["metadata"],
                messages=[_parse_message(m) for m in _as_list(data["messages"])],
                state=data["state"],
                status=data["status"],
                created_at=_time(data["created_at"]),
                updated_at=_time(data["updated_at"]),
                parent_id=data["parent_id"],
            )
        )
    except (InvalidSessionError, ValueError, TypeError) as exc:
        raise InvalidSessionError(f"{where}: {exc}") from None


def _loads(line: bytes | str) -> Any:
    """The JSON of ``line``, its integers exact (the value checks refuse those too big).

    orjson reads an integer beyond 64 bits as a float, which would pass the checks; a
    line with 19 digits in a row, where such an integer may be, is read again by the
    json module, which keeps every integer whole.  Other lines cost one regex scan.
    """
    data = orjson.loads(line)
    text = line if isinstance(line, bytes) else line.encode()
    return json.loads(line) if _LONG_DIGITS.search(text) else data


def checked_session(session: Session, where: str) -> Session:
    """``session`` as an import would store it, if an export line could carry it.

    The checks of :func:`parse_line` (ids, JSON values, int seqs unique and ascending,
    ranges, aware times); a new :class:`Session` with its times in UTC is returned, or
    :class:`InvalidSessionError` naming ``where`` raised.
    """
    try:
        return _checked(session)
    except (InvalidSessionError, ValueError, TypeError) as exc:
        raise InvalidSessionError(f"{where}: {exc}") from None


def _checked(session: Session) -> Session:
    keys.check_id(session.session_id, "session_id")
    keys.check_id(session.user_id, "user_id")
    if session.parent_id is not None:
        keys.check_id(session.parent_id, "parent_id")
    if type(session.metadata) is not dict or type(session.state) is not dict:
        raise InvalidSessionError("metadata and state must be objects")
    check_json_value(session.metadata, "metadata")
    check_json_value(session.state, "state")
    messages = [_checked_message(m) for m in _as_list(session.messages)]
    seqs = [m.seq for m in messages]
    if seqs != sorted(set(seqs)):  # type: ignore[type-var]
        raise InvalidSessionError("message seqs must be unique and ascending")
    created_at, updated_at = _utc(session.created_at), _utc(session.updated_at)
    if created_at < _EPOCH or updated_at < _EPOCH:  # (indexes keep them as unsigned micros)
        raise InvalidSessionError("created_at and updated_at must be 1970-01-01 UTC or later")
    return Session(
        session_id=session.session_id,
        user_id=session.user_id,
        metadata=session.metadata,
        messages=messages,
        state=session.state,
        status=SessionStatus(session.status),
        created_at=created_at,
        updated_at=updated_at,
        parent_id=session.parent_id,
    )


def _parse_message(data: Any) -> Message:
    if type(data) is not dict or data.keys() != _MESSAGE_FIELDS:
        raise InvalidSessionError(f"a message is an object with keys {sorted(_MESSAGE_FIELDS)}")
    timestamp = _time(data["timestamp"])
    return Message(data["role"], data["content"], timestamp, data["extras"], data["seq"])


def _checked_message(message: Any) -> Message:
    if not isinstance(message, Message):
        raise InvalidSessionError(f"messages are Message objects, got {type(message).__name__}")
    seq, role = message.seq, message.role
    if type(seq) is not int or not 0 <= seq < SEQ_LIMIT or type(role) is not str or not role:
        raise InvalidSessionError(
            "a message needs an int seq from 0 to 2**63 - 1 and a non-empty str role, got "
            f"seq {seq!r:.30} and role {role!r:.30}"
        )
    check_json_value(message.content, "message content")
    if type(message.extras) is not dict:
        raise InvalidSessionError("message extras must be an object")
    check_json_value(message.extras, "message extras")
    timestamp = _utc(message.timestamp)
    return message if timestamp is message.timestamp else attrs.evolve(message, timestamp=timestamp)


def _as_list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise InvalidSessionError("messages must be a list")
    return value


def _time(value: Any) -> datetime:
    if type(value) is not str:
        raise InvalidSessionError(f"timestamps are ISO 8601 strings, got {value!r:.40}")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise InvalidSessionError(f"timestamp {value!r} has no UTC offset")
    return moment


def _utc(moment: Any) -> datetime:
    """An aware datetime in UTC: the same moment with any offset compares equal."""
    if not isinstance(moment, datetime) or (offset := moment.utcoffset()) is None:
        raise InvalidSessionError(f"times must be timezone-aware datetimes, got {moment!r:.60}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # (the year 1 with a positive offset, or 9999 with a negative one)
        end = "after the year 9999" if offset < timedelta(0) else "before the year 1"
        raise InvalidSessionError(f"{moment.isoformat()} is {end} in UTC") from None


# -- plans over the key-value stores -----------------------------------------------------


def export_page(
    user_id: str | None, cursor: str | None, expiry_us: int | None
) -> Plan[tuple[list[Session], str | None]]:
    """One page of whole sessions to export, each read in one snapshot, and a cursor."""
    page = yield from list_sessions(user_id, None, "created", PAGE, cursor, expiry_us)
    reads: list[Get | Scan] = []
    for session in page.sessions:
        sid = session.session_id
        reads += (Get(keys.header_key(sid)), Scan(*keys.message_range(sid)))
    answers = yield Batch(tuple(reads))
    sessions = []
    for position, session in enumerate(page.sessions):
        header, rows = answers[2 * position], answers[2 * position + 1]
        if header is not None:  # (deleted since the page was listed)
            sessions.append(build_session(session.session_id, header, rows))
    return sessions, page.cursor


def import_sessions(sessions: list[Session]) -> Plan[ImportReport]:
    """Create each session exactly as given, unless its id exists (then compare).

    An id met again in ``sessions`` counts as existing too: that session is compared with
    the one created first, never merged into it.
    """
    headers = yield Batch(tuple(Get(keys.header_key(s.session_id)) for s in sessions))
    report = ImportReport()
    expect: dict[bytes, bytes | None] = {}
    put: dict[bytes, bytes] = {}
    fresh, existing = [], []
    for session, header in zip(sessions, headers, strict=True):
        session_keys = keys.SessionKeys(session.session_id)
        if header is not None or session_keys.header in expect:
            existing.append(session)
            continue
        expect[session_keys.header] = None
        put.update(_records(session, session_keys))
        fresh.append(session)
    if fresh:
        answer = yield Commit(expect, put)
        if answer is None:
            report += ImportReport(created=len(fresh))
        else:  # someone created some of them meanwhile: sort it out one by one
            for session in fresh:
                report += yield from import_sessions([session])
    for session in existing:
        report += yield from _compare(session)
    return report


def _records(session: Session, session_keys: keys.SessionKeys) -> dict[bytes, bytes]:
    created_us, updated_us = to_micros(session.created_at), to_micros(session.updated_at)
    status = SessionStatus(session.status)
    last = session.messages[-1].seq if session.messages else -1
    record = HeaderRecord(
        user_id=session.user_id,
        created_at=created_us,
        updated_at=updated_us,
        status=status,
        version=1,
        next_seq=last + 1,  # type: ignore[operator]
        count=len(session.messages),
        metadata=session.metadata,
        state=session.state,
        recent=[],
        parent=session.parent_id,
    )
    put = {session_keys.message(m.seq): encode_message(m, m.seq) for m in session.messages}  # type: ignore[arg-type]
    put[session_keys.header] = encode_header(record)
    for entry in session_keys.index_entries(session.user_id, created_us, status, updated_us):
        put[entry] = b""
    return put


def _compare(session: Session) -> Plan[ImportReport]:
    sid = session.session_id
    header, rows = yield Batch((Get(keys.header_key(sid)), Scan(*keys.message_range(sid))))
    if header is None:  # deleted meanwhile: import it after all
        return (yield from import_sessions([session]))
    stored = build_session(sid, header, rows)
    if session_line(stored) == session_line(session):
        return ImportReport(unchanged=1)
    return ImportReport(conflicts=(sid,))


# -- multi-step operations, driven by the managers ----------------------------------------


@contextlib.contextmanager
def _opened(target: str | os.PathLike[str] | IO[Any], mode: str) -> Iterator[IO[Any]]:
    if isinstance(target, str | os.PathLike):
        with open(target, mode + "b") as file:
            yield file
    else:
        yield target


def _write(file: IO[Any], lines: list[bytes]) -> None:
    data = b"".join(lines)
    if isinstance(file, io.TextIOBase):
        file.write(data.decode("utf-8"))
    else:
        file.write(data)


def export_steps(ops: Any, target: Any, user_id: str | None) -> Steps:
    """Write every session (or a user's) to ``target``; return how many."""
    written = 0
    cursor = None
    with _opened(target, "w") as file:
        while True:
            sessions, cursor = yield ops.export_page(user_id, cursor)
            _write(file, [session_line(session) for session in sessions])
            written += len(sessions)
            if cursor is None:
                return written


def import_steps(ops: Any, source: Any) -> Steps:
    """Read export lines from ``source`` and import them, a page per commit.

    A bad line raises :class:`InvalidSessionError` once the lines before it are imported.
    """
    report = ImportReport()
    batch: list[Session] = []
    messages = 0
    with _opened(source, "r") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    batch.append(parse_line(line, f"line {number}"))
                except InvalidSessionError:
                    if batch:
                        yield ops.import_sessions(batch)
                    raise
                messages += len(batch[-1].messages)
            if len(batch) == PAGE or messages >= PAGE_MESSAGES:
                report += yield ops.import_sessions(batch)
                batch, messages = [], 0
    if batch:
        report += yield ops.import_sessions(batch)
    return report
