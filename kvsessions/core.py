"""Session logic, written once and free of I/O: every operation is a *plan*.

A plan is a generator that yields key-value operations (``backends.base``: Get, Scan,
Batch, Commit) and receives their answers.  It decides everything — which keys, what to
expect, how to merge after a conflict — and the facades only drive it: ``SessionManager``
with blocking calls, ``AsyncSessionManager`` from an event loop.  Nothing here imports an
engine, a thread or asyncio.

Saves are optimistic: a save expects the stored header to be the one the session was
loaded with (its compare-and-set token) and commits new messages, the merged header and
the index entries at once.  If another writer got there first, the backend answers with
the current header; the plan reads the messages it missed, re-bases its changes on the
current state (appends go after the others' appends; state and metadata merge per key)
and commits again.  Local engines run the whole plan under their write lock, so there the
first attempt always wins.  A save that only appended marks its commit ``append_only``:
the backend may then re-base it itself, inside that commit (:mod:`kvsessions.rebase`,
and the Redis commit script), and answer ``Rebased``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

import attrs
import orjson

from . import keys
from .backends.base import Batch, Commit, Conflict, Get, Plan, Rebased, Scan
from .codec import (
    RECENT_TOKENS,
    HeaderRecord,
    decode_header,
    decode_message,
    decode_messages,
    encode_header,
    encode_message,
    from_micros,
    to_micros,
)
from .errors import (
    ConflictError,
    CorruptRecordError,
    InvalidSessionError,
    SchemaVersionError,
    SessionArchivedError,
    SessionExistsError,
    SessionNotFoundError,
    StoreConfigError,
)
from .model import (
    MESSAGE_SETTERS,
    Message,
    Session,
    SessionStatus,
    SyncBase,
    new_session_id,
    stored_message,
    stored_session,
)
from .rebase import AppendHint, recent_tokens
from .values import check_json_value

__all__ = [
    "Job",
    "WriteIf",
    "append_directly",
    "build_session",
    "check_records",
    "check_replacement",
    "check_session",
    "create_directly",
    "ensure_format",
    "expired",
    "inactive_since",
    "new_session",
    "purge",
]

T = TypeVar("T")
MAX_ATTEMPTS = 100  # optimistic retries of an edit before it gives up (Redis)
#: A merging save re-bases and retries while others keep winning (each lost round means
#: another writer's commit went in); only a session changing for this long gives up.
MAX_SAVE_ATTEMPTS = 10_000
ARCHIVE_CHUNK = 512  # sessions archived per commit by archive_inactive
_MISSING: Any = object()
_set_seq = MESSAGE_SETTERS[4]  # (Message is frozen; its seq is set once, when saved)
_BUCKET = keys.ACTIVITY_BUCKET_US


@attrs.define(slots=True)
class Job(Generic[T]):
    """A plan plus whether it writes (local engines then take their write lock first),
    and whether its first step is heavy (asyncio runs it off the event loop)."""

    plan: Plan[T]
    write: bool
    heavy: bool = False


def new_session(
    user_id: str, metadata: dict[str, Any] | None, session_id: str | None, now: datetime
) -> Session:
    """The unsaved session ``create_session`` makes (ids are checked when it is saved)."""
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidSessionError(f"metadata must be a dict, got {type(metadata).__name__}")
    return stored_session(
        new_session_id() if session_id is None else session_id,
        user_id,
        dict(metadata or {}),
        [],
        {},
        SessionStatus.ACTIVE,
        now,
        now,
        None,
    )


def inactive_since(days: float, clock: Callable[[], datetime]) -> datetime:
    """The cutoff of ``archive_inactive(days)``: sessions not saved since are inactive.

    More days than the store can hold (``inf`` included) give the epoch: none.
    """
    if isinstance(days, bool) or not isinstance(days, int | float) or not days >= 0:
        raise InvalidSessionError(f"days must be a non-negative number, got {days!r}")
    try:
        return max(clock() - timedelta(days=days), _EPOCH)
    except OverflowError:  # (before the year 1)
        return _EPOCH


_EPOCH = from_micros(0)


def ensure_format() -> Plan[int]:
    """Mark a new store with this layout version; return the stored version of any store.

    A store written by a newer kvsessions raises ``SchemaVersionError``; an older one is
    returned as is (managers refuse it until ``kvsessions migrate`` has upgraded it).
    """
    stored = yield Get(keys.FORMAT_KEY)
    if stored is None:
        current = str(keys.STORE_FORMAT).encode()
        answer = yield Commit(expect={keys.FORMAT_KEY: None}, put={keys.FORMAT_KEY: current})
        if answer is None:
            return keys.STORE_FORMAT
        stored = answer.current[keys.FORMAT_KEY]
    try:
        version = int(stored)
    except ValueError:
        raise StoreConfigError(
            f"this store's format marker {stored!r:.40} is not kvsessions'; "
            "point the store at a path or table of its own"
        ) from None
    if version > keys.STORE_FORMAT:
        raise SchemaVersionError(
            f"this store was written by a newer kvsessions (layout {version}; this one reads "
            f"{keys.STORE_FORMAT}); upgrade kvsessions to open it"
        )
    return version


def expired(record: HeaderRecord, expiry_us: int | None) -> bool:
    """Whether a session's TTL ran out: last saved before ``expiry_us`` (now - ttl)."""
    return expiry_us is not None and record.updated_at < expiry_us


def purge(session_id: str, header: bytes, record: HeaderRecord) -> Commit:
    """The commit that removes a session whole (header, messages, index entries)."""
    session_keys = keys.SessionKeys(session_id)
    return Commit(
        expect={session_keys.header: header},
        delete=(
            session_keys.header,
            *session_keys.index_entries(
                record.user_id, record.created_at, record.status, record.updated_at
            ),
        ),
        delete_ranges=(keys.message_range(session_id),),
    )


_TOKEN_PREFIX = [os.urandom(6).hex()]
_token_counter = itertools.count()


def _new_token() -> str:
    """A save token unique across processes: a random per-process prefix and a counter."""
    return f"{_TOKEN_PREFIX[0]}{next(_token_counter):x}"


def _fresh_token_prefix() -> None:
    _TOKEN_PREFIX[0] = os.urandom(6).hex()  # a forked child must not repeat its parent's


os.register_at_fork(after_in_child=_fresh_token_prefix)


# -- loading ---------------------------------------------------------------------------


def check_window(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidSessionError(f"a message count must be None or an int >= 0, got {limit!r}")
    return limit


def load(
    session_id: str, last: int | None = None, expiry_us: int | None = None
) -> Plan[Session | None]:
    """The session; with ``last``, only its newest ``last`` messages are read.

    A session whose TTL ran out (``expiry_us``) is removed on the spot and not returned.
    """
    session_keys = keys.SessionKeys(session_id)
    header, rows = _loaded((yield _load_reads(session_keys, last)), last)
    if header is None:
        return None
    record = None
    if expiry_us is not None:
        record = decode_header(header)
        if expired(record, expiry_us):
            yield purge(session_id, header, record)  # lazily; a conflict means it lives on
            return None
    return build_session(session_id, header, rows, record, session_keys)


def load_directly(
    session_id: str, last: int | None, expiry_us: int | None, read: Callable[[Get | Batch], Any]
) -> Session | Literal[False] | None:
    """:func:`load` without a plan, its reads answered by ``read`` from one snapshot
    (``LocalBackend.read``); ``False`` for a session whose TTL ran out (the plan then
    removes it).  Loads are what agent code does most after appends."""
    session_keys = keys.SessionKeys(session_id)
    header, rows = _loaded(read(_load_reads(session_keys, last)), last)
    if header is None:
        return None
    if expiry_us is None:  # (no TTL: the header is decoded once, by build_session)
        return build_session(session_id, header, rows, None, session_keys)
    record = decode_header(header)
    if expired(record, expiry_us):
        return False
    return build_session(session_id, header, rows, record, session_keys)


def _load_reads(session_keys: keys.SessionKeys, last: int | None) -> Get | Batch:
    """The reads of a load: the header alone for ``last == 0`` (how agent code appends:
    one read, no scan), else the header and the (newest ``last``) messages."""
    if last == 0:
        return Get(session_keys.header)
    return Batch((Get(session_keys.header), Scan(*session_keys.messages(), last, last is not None)))


def _loaded(answer: Any, last: int | None) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    """The header and the message rows (in seq order) from the answer of ``_load_reads``."""
    if last == 0:
        return answer, []
    header, rows = answer
    if last is not None:
        rows.reverse()
    return header, rows


def messages_window(
    session_id: str,
    limit: int | None,
    before: int | None,
    after: int | None,
    pair_safe: bool,
    expiry_us: int | None = None,
) -> Plan[list[Message]]:
    """Messages with ``after < seq < before``, the newest ``limit`` of them, oldest first.

    ``pair_safe`` widens the window backwards while it would start with a tool result
    (a message with a ``tool_call_id`` extra, or role ``"tool"``), so the tool call it
    answers is never cut off.
    """
    keys.check_id(session_id, "session_id")
    start = 0 if after is None else _seq(after) + 1
    begin, stop = keys.message_range(session_id, start, None if before is None else _seq(before))
    scan = Scan(begin, stop, limit=limit, reverse=limit is not None)
    if expiry_us is None:
        rows = yield scan
    else:  # the header tells whether the session is still alive
        header, rows = yield Batch((Get(keys.header_key(session_id)), scan))
        if header is None or expired(decode_header(header), expiry_us):
            return []
    if limit is not None:
        rows.reverse()
    window = decode_messages(rows)
    while pair_safe and window and _is_tool_result(window[0]) and (window[0].seq or 0) > start:
        earlier = yield Scan(begin, rows[0][0], limit=1, reverse=True)
        if not earlier:
            break
        rows = earlier + rows
        window.insert(0, decode_message(earlier[0][1]))
    return window


def fork(
    session_id: str,
    at_seq: int | None,
    new_id: str | None,
    now: datetime,
    expiry_us: int | None,
) -> Plan[Session]:
    """Save an independent copy of a session (up to message ``at_seq``, inclusive)."""
    keys.check_id(session_id, "session_id")
    stop = None if at_seq is None else _seq(at_seq) + 1
    if new_id is not None:
        keys.check_id(new_id, "new_session_id")
    header, rows = yield Batch(
        (Get(keys.header_key(session_id)), Scan(*keys.message_range(session_id, 0, stop)))
    )
    record = _alive(session_id, header, expiry_us)
    copy = Session(
        session_id=new_session_id() if new_id is None else new_id,
        user_id=record.user_id,
        metadata=dict(record.metadata),
        state=dict(record.state),
        created_at=now,
        updated_at=now,
        parent_id=session_id,
    )
    for _, value in rows:
        m = decode_message(value)
        copy.messages.append(Message(m.role, m.content, m.timestamp, m.extras))
    yield from save(copy, now, None, expiry_us)
    return copy


def _is_tool_result(message: Message) -> bool:
    return message.role == "tool" or "tool_call_id" in message.extras


def build_session(
    session_id: str,
    header: bytes,
    rows: Iterable[tuple[bytes, bytes]],
    record: HeaderRecord | None = None,
    session_keys: keys.SessionKeys | None = None,
) -> Session:
    """A session from its stored header and message rows (in seq order)."""
    record = decode_header(header) if record is None else record
    session = stored_session(
        session_id,
        record.user_id,
        dict(record.metadata),
        decode_messages(rows) if rows else [],  # (a header-only load: no call)
        dict(record.state),
        record.status,
        from_micros(record.created_at),
        from_micros(record.updated_at),
        record.parent,
    )
    if session_keys is None:
        session_keys = keys.SessionKeys(session_id)
    _mark_synced(session, header, record, session_keys)
    return session


def _mark_synced(
    session: Session, header: bytes, record: HeaderRecord, session_keys: keys.SessionKeys
) -> None:
    """Remember ``header`` as what is stored now (``record`` may share values with it)."""
    old = session._base
    if old is not None and record.state is old.record.state:  # untouched: same snapshot
        state_json = old.state_json
    else:
        state_json = orjson.dumps(record.state)
    if old is not None and record.metadata is old.record.metadata:
        metadata_json = old.metadata_json
    else:
        metadata_json = orjson.dumps(record.metadata)
    session._base = SyncBase(header, record, state_json, metadata_json, session_keys)
    session._synced = len(session.messages)
    session._unloaded = record.count - session._synced  # stored but not loaded (windows)


def sessions_for_user(user_id: str, expiry_us: int | None = None) -> Plan[list[Session]]:
    keys.check_id(user_id, "user_id")
    start, stop = keys.user_range(user_id)
    index = yield Scan(start, stop)
    fixed = len(start) + 8
    sids = [keys.parse_index_sid(key, fixed) for key, _ in index]
    if not sids:
        return []
    reads: list[Get | Scan] = []
    for sid in sids:
        reads += (Get(keys.header_key(sid)), Scan(*keys.message_range(sid)))
    answers = yield Batch(tuple(reads))
    sessions = []
    for position, sid in enumerate(sids):
        header, rows = answers[2 * position], answers[2 * position + 1]
        if header is None:  # an index entry without a header is stale: skip it
            continue
        record = decode_header(header)
        if record.user_id == user_id and not expired(record, expiry_us):
            sessions.append(build_session(sid, header, rows, record))
    return sessions


# -- saving ----------------------------------------------------------------------------


@attrs.define(slots=True)
class _Changes:
    """What a session changed since it was loaded, ready to apply on any stored header."""

    pending: list[Message]
    state_set: dict[str, Any]
    state_del: list[str]
    meta_set: dict[str, Any]
    meta_del: list[str]
    status: SessionStatus | None  # the new status, if the session changed it

    def __bool__(self) -> bool:
        return bool(
            self.pending
            or self.state_set
            or self.state_del
            or self.meta_set
            or self.meta_del
            or self.status is not None
        )

    def touches_content(self) -> bool:
        return bool(
            self.pending or self.state_set or self.state_del or self.meta_set or self.meta_del
        )


def check_session(session: Session) -> _Changes:
    """Validate a session about to be saved and return what it changed (any store)."""
    if type(session) is not Session and not isinstance(session, Session):
        raise InvalidSessionError(f"save() takes a Session, got {type(session).__name__}")
    base = session._base
    if base is None or session.session_id is not base.keys.sid:
        keys.check_id(session.session_id, "session_id")
    if base is None or session.user_id is not base.record.user_id:
        keys.check_id(session.user_id, "user_id")
    if base is None:
        _check_created(session.created_at)
    state, metadata = session.state, session.metadata
    if type(state) is not dict or type(metadata) is not dict:
        field = "state" if type(state) is not dict else "metadata"
        value = getattr(session, field)
        raise InvalidSessionError(f"session.{field} must be a dict, got {type(value).__name__}")
    if base is not None and _untouched(state, metadata, base):  # the common case first
        (state_set, state_del), (meta_set, meta_del) = _UNCHANGED, _UNCHANGED
    else:
        state_set, state_del = _dict_changes(state, base.state_json if base else b"{}", "state")
        meta_set, meta_del = _dict_changes(
            metadata, base.metadata_json if base else b"{}", "metadata"
        )
    pending = session.messages[session._synced :]
    _check_messages(pending)
    status: SessionStatus | None = None
    if base is None or session.status is not base.record.status:
        try:
            status = session.status
            if type(status) is not SessionStatus:  # (a plain str: calling the enum is dear)
                status = SessionStatus(status)
        except ValueError:
            raise InvalidSessionError(
                f"session.status must be 'active' or 'archived', got {session.status!r}"
            ) from None
        if base is not None and status is base.record.status:
            status = None
    return _Changes(pending, state_set, state_del, meta_set, meta_del, status)


def _check_created(created_at: Any) -> None:
    """A new session's ``created_at`` must be an aware datetime from 1970 on (the indexes
    order sessions by it, as unsigned microseconds since the epoch)."""
    if not isinstance(created_at, datetime):
        raise InvalidSessionError(f"created_at must be a datetime, got {created_at!r}")
    if to_micros(created_at) < 0:
        raise InvalidSessionError(
            f"created_at must be 1970-01-01 UTC or later, got {created_at.isoformat()}"
        )


def _check_messages(pending: list[Message]) -> None:
    """Refuse anything in ``pending`` that cannot be stored as a message."""
    for message in pending:
        if type(message) is not Message and not isinstance(message, Message):
            raise InvalidSessionError(
                "session.messages may only hold Message objects; use "
                f"session.add_message(), got {type(message).__name__}"
            )
        role, content = message.role, message.content
        if type(role) is not str or not role:
            raise InvalidSessionError(f"message role must be a non-empty str, got {role!r}")
        if type(content) is not str or not content.isascii():  # (ASCII text cannot fail)
            check_json_value(content, "message content")
        if message.extras:
            check_json_value(message.extras, "message extras")


def _appended(session: Session, base: SyncBase) -> list[Message] | None:
    """The messages added to a loaded session, if nothing else changed; else ``None``.

    ``None`` also for anything unusual (a replaced id or user, a status set, an archived
    session): the general plan then checks and reports it.  Bad messages raise here as
    they would there.
    """
    record = base.record
    if (
        session.session_id is not base.keys.sid
        or session.user_id is not record.user_id
        or session.status is not record.status
        or record.status is not SessionStatus.ACTIVE
    ):
        return None
    state, metadata = session.state, session.metadata
    if type(state) is not dict or type(metadata) is not dict:
        return None
    if not _untouched(state, metadata, base):
        return None
    pending = session.messages[session._synced :]
    _check_messages(pending)
    return pending


def _untouched(state: dict[str, Any], metadata: dict[str, Any], base: SyncBase) -> bool:
    """Whether state and metadata are as last synced (compared as JSON, without a walk)."""
    try:
        return orjson.dumps(state) == base.state_json and (
            orjson.dumps(metadata) == base.metadata_json
        )
    except TypeError:  # a value JSON cannot hold: the general plan names it
        return False


#: What ``_dict_changes`` answers for an untouched dict (never mutated by the callers).
_UNCHANGED: tuple[dict[str, Any], list[str]] = ({}, [])


def _dict_changes(
    current: dict[str, Any], snapshot_json: bytes, where: str
) -> tuple[dict[str, Any], list[str]]:
    """Keys of ``current`` that differ from the JSON snapshot, and keys it no longer has."""
    try:
        if orjson.dumps(current) == snapshot_json:
            return _UNCHANGED  # the common case: untouched, decided without a per-key walk
    except TypeError:
        pass  # a value JSON cannot hold: the walk below names it
    base = orjson.loads(snapshot_json)
    changed = {}
    for key, value in current.items():
        if not _same(value, base.get(key, _MISSING)):
            if type(key) is not str:
                raise InvalidSessionError(f"{where} keys must be str, got {key!r}")
            check_json_value(value, f"{where}[{key!r}]")
            changed[key] = value
    return changed, [key for key in base if key not in current]


def _same(a: Any, b: Any) -> bool:
    """Equal with types, as JSON sees it (Python's ``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def save(
    session: Session, now: datetime, expect_version: int | None, expiry_us: int | None = None
) -> Plan[Session]:
    """Commit what ``session`` changed (see the module docstring) and return it.

    The most common save, a loaded session that only gained messages, takes the direct
    path (:func:`_append`); anything else, and such a save that the direct path hands
    back, is the general plan's.
    """
    base = session._base if type(session) is Session else None
    if base is not None and expect_version is None and expiry_us is None:
        pending = _appended(session, base)
        if pending is not None:  # (the plan is chosen here: one generator per save)
            return _append(session, base, pending, now) if pending else _nothing(session)
    return _save(session, now, expect_version, expiry_us, None)


def _nothing(session: Session) -> Plan[Session]:
    """The plan of a save with nothing to write."""
    return session
    yield  # (a generator: a plan that asks for nothing)


def _append(
    session: Session, base: SyncBase, pending: list[Message], now: datetime
) -> Plan[Session]:
    """Commit ``pending`` after the stored messages.

    When other saves moved the header meanwhile, the messages go after theirs, on the
    header that won (taking its state and metadata: this session changed neither), and
    the session gets the messages it missed; a backend may do that re-base itself
    (``Rebased``).  A header that moved otherwise (the session deleted, archived, or this
    very save already committed) goes on in the general plan, from that ``Conflict``.
    """
    session_keys = base.keys
    hkey, sid = session_keys.header, session_keys.sid
    current, current_bytes = base.record, base.header
    now_us = to_micros(now)
    token = session._save_token
    if token is None:
        token = session._save_token = _new_token()
    missed: list[Message] = []
    snapshot = base.metadata_json, base.state_json
    for _ in range(MAX_SAVE_ATTEMPTS):
        record, header, commit = _append_commit(
            session_keys, current, current_bytes, session.user_id, pending, now_us, token,
            snapshot,
        )  # fmt: skip
        answer = yield commit
        if answer is None:
            break
        if type(answer) is Rebased:  # applied after what others appended meanwhile
            stale = current is not base.record  # (state and metadata as stored now)
            _finish_rebased(session, pending, answer, session_keys, now, missed, stale)
            return session
        known_next = current.next_seq
        current_bytes = answer.current[hkey]
        current = decode_header(current_bytes) if current_bytes is not None else None
        if (
            current is None
            or current.status is not SessionStatus.ACTIVE
            or current.user_id != session.user_id
            or token in current.recent
        ):
            break
        missed += yield from _missed(sid, known_next, current.next_seq)
        snapshot = orjson.dumps(current.metadata), orjson.dumps(current.state)
    if answer is not None and type(answer) is not Rebased:  # for the general plan
        return (yield from _save(session, now, None, None, answer))
    if current is not base.record:  # re-based: state and metadata as stored now
        _take_stored(session, record)
    _finish(session, pending, missed, record, header, session_keys, now, False)
    return session


def _append_commit(
    session_keys: keys.SessionKeys,
    current: HeaderRecord,
    current_bytes: bytes,
    user_id: str,
    pending: list[Message],
    now_us: int,
    token: str,
    snapshot: tuple[bytes, bytes],
) -> tuple[HeaderRecord, bytes, Commit]:
    """The header, its bytes and the commit of saving ``pending`` after ``current``.

    ``snapshot`` is ``current``'s metadata and state as JSON (as the header holds them):
    with what else the plan knows it is the commit's ``hint``, so that a local engine can
    re-base the commit without reading it back (:mod:`kvsessions.rebase`).
    """
    record, header, put, delete, hint = _append_writes(
        session_keys, current, user_id, pending, now_us, token, snapshot
    )
    return record, header, Commit({session_keys.header: current_bytes}, put, delete, (), True, hint)


def _append_writes(
    session_keys: keys.SessionKeys,
    current: HeaderRecord,
    user_id: str,
    pending: list[Message],
    now_us: int,
    token: str,
    snapshot: tuple[bytes, bytes],
) -> tuple[HeaderRecord, bytes, dict[bytes, bytes], list[bytes], AppendHint]:
    """The new header (decoded and encoded), puts, deletes and re-base hint of saving
    ``pending`` after ``current`` (``snapshot``: its metadata and state as JSON).

    The puts hold the message records first, then the header (the hint relies on that
    order).
    """
    record = _successor(
        current, user_id, current.status, current.metadata, current.state, len(pending),
        now_us, token,
    )  # fmt: skip
    header = encode_header(record)
    seq = current.next_seq
    if len(pending) == 1:  # (the common save, one message: no loop, no call)
        put = {session_keys.message(seq): encode_message(pending[0], seq)}
    else:
        put = _message_puts(session_keys, seq, pending)
    put[session_keys.header] = header
    delete: list[bytes] = []
    if current.updated_at // _BUCKET != now_us // _BUCKET:  # (else the entry stays)
        _move_activity(session_keys, current, record, put, delete)
    hint = (session_keys, current.next_seq, len(pending), token, now_us, snapshot)
    return record, header, put, delete, hint


#: ``write_if(key, expected, put, delete, hint)``: a local engine's one write transaction
#: for a save (``LocalBackend.write_if``): True when written as planned, ``Rebased`` when
#: an append was written after others' appends, False when nothing was written.
WriteIf = Callable[
    [bytes, "bytes | None", Mapping[bytes, bytes], Sequence[bytes], "AppendHint | None"],
    "bool | Rebased",
]


def create_directly(session: Session, write_if: WriteIf) -> bool:
    """Save a new session (``new_session``) in one write transaction; whether it did.

    Checked and written exactly as :func:`save` would; False, with nothing written, if its
    id is taken (:func:`save` then reports that).
    """
    changes = check_session(session)
    session_keys = keys.SessionKeys(session.session_id)
    now = session.created_at
    now_us = to_micros(now)
    token = session._save_token = _new_token()
    header, record, put, _ = _writes_for(
        session, session_keys, None, changes, now_us, now_us, token
    )
    if write_if(session_keys.header, None, put, [], None) is not True:
        return False
    _take_stored(session, record, bool(changes.state_set), bool(changes.meta_set))
    _finish(session, changes.pending, [], record, header, session_keys, now, True)
    return True


def append_directly(session: Session, now: datetime, write_if: WriteIf) -> bool:
    """Save a session that only gained messages in one write transaction; whether it did.

    False, with nothing written, for every other save (a new session, changed state or
    metadata, a status, a replaced id or user, nothing pending, a header that moved
    otherwise than by others' appends): :func:`save` plans those.  This is the save agent
    code makes most, so a local engine does it without driving a plan; a race lost to
    other appends is re-based in the same transaction, as the plan's commit would be.
    """
    base = session._base if type(session) is Session else None
    if base is None:
        return False
    pending = _appended(session, base)
    if not pending:
        return False
    token = session._save_token
    if token is None:
        token = session._save_token = _new_token()
    session_keys, current, now_us = base.keys, base.record, to_micros(now)
    record, header, put, delete, hint = _append_writes(
        session_keys, current, session.user_id, pending, now_us, token,
        (base.metadata_json, base.state_json),
    )  # fmt: skip
    answer = write_if(session_keys.header, base.header, put, delete, hint)
    if answer is True:
        _finish_append(session, base, pending, record, header, now)
        return True
    if answer is False:
        return False
    _finish_rebased(session, pending, answer, session_keys, now)
    return True


def _finish_rebased(
    session: Session,
    pending: list[Message],
    answer: Rebased,
    session_keys: keys.SessionKeys,
    now: datetime,
    missed: list[Message] | None = None,
    take_stored: bool = False,
) -> None:
    """After an append was re-based where the data lives: take the header that won and
    the messages others added (after any ``missed`` the plan had already read), and with
    ``take_stored`` the stored state and metadata."""
    base, counters = session._base, answer.counters
    record = None
    if counters is not None and not take_stored and base is not None:
        # the header the backend edited: the base's but for the counters it moved
        updated_us, version, next_seq, count, kept = counters
        loaded, recent = base.record, recent_tokens(kept)
        if recent is not None and loaded.parent is None:
            record = HeaderRecord(
                session.user_id, loaded.created_at, updated_us, SessionStatus.ACTIVE, version,
                next_seq, count, loaded.metadata, loaded.state, recent,
            )  # fmt: skip
    if record is None:
        record = decode_header(answer.header)
        record.user_id = session.user_id  # (equal: kept identical, see _successor)
        if take_stored:
            _take_stored(session, record)
    others = decode_messages(answer.missed)
    _finish(session, pending, others if missed is None else missed + others, record,
            answer.header, session_keys, now, False)  # fmt: skip


def _missed(sid: str, known_next: int, next_seq: int) -> Plan[list[Message]]:
    """The messages others stored from ``known_next`` on, up to ``next_seq`` (if any)."""
    if next_seq <= known_next:
        return []
    return decode_messages((yield Scan(*keys.message_range(sid, known_next, next_seq))))


def _take_stored(
    session: Session, record: HeaderRecord, state: bool = True, metadata: bool = True
) -> None:
    """Make the session's state and/or metadata dicts hold ``record``'s."""
    if state:
        session.state.clear()
        session.state.update(record.state)
    if metadata:
        session.metadata.clear()
        session.metadata.update(record.metadata)


def _save(
    session: Session,
    now: datetime,
    expect_version: int | None,
    expiry_us: int | None,
    lost: Conflict | None,
) -> Plan[Session]:
    """The general save: checks everything, merges state and metadata, re-bases on races.

    ``lost``: the answer of a first attempt that lost a race (the plan starts from it).
    """
    sid = session.session_id
    changes = check_session(session)
    base = session._base
    if base is not None and session.user_id != base.record.user_id:
        raise InvalidSessionError(
            f"session {sid!r} belongs to user {base.record.user_id!r}; a session's user_id "
            "cannot change (create a new session for the other user)"
        )
    if base is not None and not changes.pending and expect_version is None and not changes:
        return session  # nothing to write
    now_us = to_micros(now)
    created_us = to_micros(session.created_at) if base is None else base.record.created_at
    session_keys = base.keys if base is not None and base.keys.sid is sid else keys.SessionKeys(sid)
    hkey = session_keys.header
    current_bytes = base.header if base is not None else None
    current: HeaderRecord | None = base.record if base is not None else None
    base_record = current
    fresh = False  # whether ``current`` was read in this plan (else it is our base)
    if expect_version is not None and (current.version if current else 0) != expect_version:
        current_bytes = yield Get(hkey)  # our copy is not what the caller expects: look
        current = decode_header(current_bytes) if current_bytes is not None else None
        fresh = True
    if session._save_token is None:
        session._save_token = _new_token()
    token = session._save_token
    known_next = base.record.next_seq if base is not None else 0
    missed: list[Message] = []
    answer = lost
    for _ in range(MAX_SAVE_ATTEMPTS):
        if answer is not None:  # lost a race: re-base on the header that won
            current_bytes = answer.current[hkey]
            current = decode_header(current_bytes) if current_bytes is not None else None
            fresh = True
            answer = None
            if current is not None and base is not None and current.next_seq > known_next:
                missed += yield from _missed(sid, known_next, current.next_seq)
                known_next = current.next_seq
        if current is not None and current is not base_record and token in current.recent:
            # An earlier attempt of this very save committed, but we never heard so (a
            # lost reply, a cancelled task): adopt the stored session, write nothing.
            ours = yield from _missed(sid, known_next, current.next_seq)
            session.messages[session._synced :] = missed + ours
            _adopt(session, current_bytes, current, session_keys)  # type: ignore[arg-type]
            return session
        if expiry_us is not None and current is not None and expired(current, expiry_us):
            if not fresh:  # our copy is old: someone may have saved it since
                current_bytes = yield Get(hkey)
                current = decode_header(current_bytes) if current_bytes is not None else None
                fresh = True
                continue
            if base is not None:
                raise SessionNotFoundError(
                    f"session {sid!r} expired (its ttl ran out) since it was loaded; "
                    "create it again (create_session) to keep writing"
                )
            gone = yield purge(sid, current_bytes, current)  # type: ignore[arg-type]
            current_bytes = None if gone is None else gone.current[hkey]
            current = None if current_bytes is None else decode_header(current_bytes)
            continue
        if (
            current is None
            or current is not base_record
            or expect_version is not None
            or current.status is not SessionStatus.ACTIVE
        ):  # (else: the header we loaded, active, as the session expects: nothing to check)
            _check_can_save(session, base, current, changes, expect_version)
        header, record, put, delete = _writes_for(
            session, session_keys, current, changes, now_us, created_us, token
        )
        answer = yield Commit({hkey: current_bytes}, put, delete)
        if answer is None:
            break
        assert isinstance(answer, Conflict)
    else:
        raise ConflictError(
            f"session {sid!r} kept changing under {MAX_SAVE_ATTEMPTS} save attempts; retry later"
        )
    rebased = current is not base_record
    _take_stored(
        session,
        record,
        rebased or bool(changes.state_set or changes.state_del),
        rebased or bool(changes.meta_set or changes.meta_del),
    )
    _finish(session, changes.pending, missed, record, header, session_keys, now, True)
    return session


def _finish(
    session: Session,
    pending: list[Message],
    missed: list[Message],
    record: HeaderRecord,
    header: bytes,
    session_keys: keys.SessionKeys,
    now: datetime,
    status_changed: bool,
) -> None:
    """After the commit: the session holds what is stored (``missed``: others' messages)."""
    seq = record.next_seq - len(pending)
    saved, replaced = missed, bool(missed)
    for m in pending:  # each pending message gets its seq: in place, as it had none
        if m.seq is None:
            _set_seq(m, seq)
        else:  # (a message that already has a seq, added again: a new one takes this one)
            m = stored_message(m.role, m.content, m.timestamp, m.extras, seq)
            replaced = True
        saved.append(m)
        seq += 1
    if replaced:
        session.messages[session._synced :] = saved
    if status_changed:
        session.status = record.status
    session.updated_at = now
    _mark_synced(session, header, record, session_keys)
    session._save_token = None


def _finish_append(
    session: Session,
    base: SyncBase,
    pending: list[Message],
    record: HeaderRecord,
    header: bytes,
    now: datetime,
) -> None:
    """:func:`_finish` for an append written as planned on ``base``: nothing missed, and
    status, state and metadata as synced (their snapshots carry over).

    One new message is the save agent code makes most, so that case does only this; more
    messages, or one that already has a seq (added again: stored as a copy), go to
    :func:`_finish`.
    """
    message = pending[0]
    if len(pending) != 1 or message.seq is not None:
        _finish(session, pending, [], record, header, base.keys, now, False)
        return
    _set_seq(message, record.next_seq - 1)
    session._base = SyncBase(header, record, base.state_json, base.metadata_json, base.keys)
    session.updated_at = now
    session._synced = synced = len(session.messages)
    session._unloaded = record.count - synced
    session._save_token = None


def _adopt(
    session: Session, header: bytes, record: HeaderRecord, session_keys: keys.SessionKeys
) -> None:
    """Make ``session`` mirror the stored ``header`` (its messages are already in place)."""
    _take_stored(session, record)
    session.status = record.status
    session.updated_at = from_micros(record.updated_at)
    _mark_synced(session, header, record, session_keys)
    session._save_token = None


def update(
    session_id: str,
    change: Callable[[Session], object],
    retries: int,
    clock: Callable[[], datetime],
    ttl_us: int | None = None,
) -> Plan[Session]:
    """Load, apply ``change``, save with ``expect_version``; on a conflict, start over."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidSessionError(f"retries must be a non-negative int, got {retries!r}")
    attempts_left = retries
    while True:
        now = clock()
        expiry_us = None if ttl_us is None else to_micros(now) - ttl_us
        session = yield from load(session_id, None, expiry_us)
        if session is None:
            raise SessionNotFoundError(f"no session {session_id!r} in this store")
        change(session)
        try:
            yield from save(session, clock(), session.version, expiry_us)
            return session
        except ConflictError:
            if attempts_left == 0:
                raise
            attempts_left -= 1


def _check_can_save(
    session: Session,
    base: SyncBase | None,
    current: HeaderRecord | None,
    changes: _Changes,
    expect_version: int | None,
) -> None:
    sid = session.session_id
    if expect_version is not None and (current.version if current else 0) != expect_version:
        raise ConflictError(
            f"session {sid!r} is at version {current.version if current else 0}, not the "
            f"expected {expect_version}; reload it with get_session() and reapply the change"
        )
    if current is None and base is not None:
        raise SessionNotFoundError(
            f"session {sid!r} was deleted since it was loaded; create "
            "it again (create_session) to keep writing"
        )
    if current is None:
        return
    if base is None:
        raise SessionExistsError(
            f"a session with id {sid!r} already exists; load it with "
            "get_session() and save that object, or pick another id"
        )
    if current.user_id != session.user_id:
        raise InvalidSessionError(
            f"session {sid!r} belongs to user {current.user_id!r}; a "
            "session's user_id cannot change (create a new session)"
        )
    if (
        current.status is SessionStatus.ARCHIVED
        and changes.touches_content()
        and changes.status is not SessionStatus.ACTIVE
    ):
        raise SessionArchivedError(
            f"session {sid!r} is archived; restore it (manager.restore "
            "or session.status = 'active') before adding to it"
        )


def _writes_for(
    session: Session,
    session_keys: keys.SessionKeys,
    current: HeaderRecord | None,
    changes: _Changes,
    now_us: int,
    created_us: int,
    token: str,
) -> tuple[bytes, HeaderRecord, dict[bytes, bytes], list[bytes]]:
    """The new header (encoded and decoded), puts and deletes of saving ``changes`` on
    ``current`` (``None``: a new session)."""
    first_seq = current.next_seq if current is not None else 0
    if current is not None and not changes.state_set and not changes.state_del:
        state = current.state  # (the common case: unchanged, shared with the stored header)
    else:
        state = _merged(current.state if current else {}, changes.state_set, changes.state_del)
    if current is not None and not changes.meta_set and not changes.meta_del:
        metadata = current.metadata
    else:
        metadata = _merged(current.metadata if current else {}, changes.meta_set, changes.meta_del)
    status = changes.status or (current.status if current else SessionStatus.ACTIVE)
    added = len(changes.pending)
    if current is not None:
        record = _successor(current, session.user_id, status, metadata, state, added, now_us, token)
    else:
        record = HeaderRecord(
            session.user_id, created_us, now_us, status, 1, added, added, metadata, state,
            [token], session.parent_id,
        )  # fmt: skip
    header = encode_header(record)
    put = _message_puts(session_keys, first_seq, changes.pending)
    put[session_keys.header] = header
    delete: list[bytes] = []
    if current is None:
        if record.parent is not None:
            keys.check_id(record.parent, "parent_id")
        for entry in session_keys.index_entries(session.user_id, record.created_at, status, now_us):
            put[entry] = b""
    else:
        _move_activity(session_keys, current, record, put, delete)
    return header, record, put, delete


def _successor(
    current: HeaderRecord,
    user_id: str,
    status: SessionStatus,
    metadata: dict[str, Any],
    state: dict[str, Any],
    added: int,
    now_us: int,
    token: str,
) -> HeaderRecord:
    """The header after a save of ``added`` messages on ``current``.

    ``user_id`` is the session's own (equal to the stored one): the next save recognises
    an unchanged user by identity.
    """
    return HeaderRecord(
        user_id, current.created_at, now_us, status, current.version + 1,
        current.next_seq + added, current.count + added, metadata, state,
        [*current.recent[1 - RECENT_TOKENS :], token], current.parent,
    )  # fmt: skip


def _message_puts(
    session_keys: keys.SessionKeys, first_seq: int, messages: list[Message]
) -> dict[bytes, bytes]:
    """The records of ``messages`` stored from ``first_seq`` on."""
    put = {}
    seq, message_key = first_seq, session_keys.message
    for message in messages:  # (a loop: a comprehension costs a call per save)
        put[message_key(seq)] = encode_message(message, seq)
        seq += 1
    return put


def _move_activity(
    session_keys: keys.SessionKeys,
    current: HeaderRecord,
    record: HeaderRecord,
    put: dict[bytes, bytes],
    delete: list[bytes],
) -> None:
    """Move the session's activity entry if the save changes its status or its minute."""
    if (
        record.status is not current.status
        or current.updated_at // keys.ACTIVITY_BUCKET_US
        != record.updated_at // keys.ACTIVITY_BUCKET_US
    ):  # (same status, same minute: the entry stays as it is)
        delete.append(session_keys.activity(current.status, current.updated_at))
        put[session_keys.activity(record.status, record.updated_at)] = b""


def _merged(stored: dict[str, Any], changed: dict[str, Any], removed: list[str]) -> dict[str, Any]:
    """``stored`` with this save's changes applied (stored dicts are never mutated)."""
    if not changed and not removed:
        return stored
    merged = {**stored, **changed}
    for key in removed:
        merged.pop(key, None)
    return merged


# -- delete, archive, clear ------------------------------------------------------------


def delete(session_id: str, expiry_us: int | None = None) -> Plan[bool]:
    """Remove a session whole; whether it existed (an expired one did not, for callers)."""
    keys.check_id(session_id, "session_id")
    hkey = keys.header_key(session_id)
    current = yield Get(hkey)
    for _ in range(MAX_ATTEMPTS):
        if current is None:
            return False
        record = decode_header(current)
        answer = yield purge(session_id, current, record)
        if answer is None:
            return not expired(record, expiry_us)
        current = answer.current[hkey]
    raise ConflictError(f"session {session_id!r} kept changing while being deleted; retry")


# -- editing the history ---------------------------------------------------------------

#: An edit decided from the header and what was read: ``(puts, deletes, count change,
#: result)``, or ``None`` when there is nothing to change.
EditPlan = tuple[dict[bytes, bytes], list[bytes], int, Any]


def _edit_messages(
    session_id: str,
    now_us: int,
    read: Callable[[HeaderRecord], Get | Scan],
    edit: Callable[[HeaderRecord, Any], EditPlan | None],
    unchanged: Any,
    expiry_us: int | None,
) -> Plan[Any]:
    """Read what an edit needs, decide it, and commit it with the new header atomically.

    Two concurrent edits expect the same header: one commits, the other re-reads and
    decides again (so two pops never return the same message).
    """
    session_keys = keys.SessionKeys(session_id)
    hkey = session_keys.header
    for _ in range(MAX_ATTEMPTS):
        current = yield Get(hkey)
        record = _alive(session_id, current, expiry_us)
        if record.status is SessionStatus.ARCHIVED:
            raise SessionArchivedError(
                f"session {session_id!r} is archived; restore it before editing its messages"
            )
        decided = edit(record, (yield read(record)))
        if decided is None:
            return unchanged
        put, delete, count_change, result = decided
        # a replacement may reach past the last seq: the next append goes after it
        top = max(map(keys.seq_of_message_key, put), default=-1) + 1
        new = attrs.evolve(
            record,
            version=record.version + 1,
            updated_at=now_us,
            count=record.count + count_change,
            next_seq=max(record.next_seq, top),
        )
        put[hkey] = encode_header(new)
        old_entry = session_keys.activity(record.status, record.updated_at)
        new_entry = session_keys.activity(record.status, now_us)
        if new_entry != old_entry:
            delete.append(old_entry)
            put[new_entry] = b""
        if (yield Commit({hkey: current}, put, delete)) is None:
            return result
    raise ConflictError(f"session {session_id!r} kept changing while being edited; retry")


def _alive(session_id: str, header: bytes | None, expiry_us: int | None) -> HeaderRecord:
    """The decoded header of a session that exists and has not expired, else raise."""
    record = None if header is None else decode_header(header)
    if record is None or expired(record, expiry_us):
        raise SessionNotFoundError(f"no session {session_id!r} in this store")
    return record


def pop_message(session_id: str, now_us: int, expiry_us: int | None) -> Plan[Message | None]:
    def edit(record: HeaderRecord, rows: list[tuple[bytes, bytes]]) -> EditPlan | None:
        if not rows:
            return None
        key, value = rows[0]
        return {}, [key], -1, decode_message(value)

    return (
        yield from _edit_messages(
            session_id,
            now_us,
            lambda record: Scan(*keys.message_range(session_id), limit=1, reverse=True),
            edit,
            None,
            expiry_us,
        )
    )


def delete_message(session_id: str, seq: int, now_us: int, expiry_us: int | None) -> Plan[bool]:
    keys.check_id(session_id, "session_id")
    key = keys.message_key(session_id, _seq(seq))

    def edit(record: HeaderRecord, value: bytes | None) -> EditPlan | None:
        return None if value is None else ({}, [key], -1, True)

    return (
        yield from _edit_messages(session_id, now_us, lambda r: Get(key), edit, False, expiry_us)
    )


def update_message(
    session_id: str, seq: int, changes: dict[str, Any], now_us: int, expiry_us: int | None
) -> Plan[Message | None]:
    keys.check_id(session_id, "session_id")
    key = keys.message_key(session_id, _seq(seq))
    extras = {name: value for name, value in changes.items() if name not in ("role", "content")}
    check_json_value(extras, "message extras")
    if "content" in changes:
        check_json_value(changes["content"], "message content")
    role = changes.get("role")
    if role is not None and (type(role) is not str or not role):
        raise InvalidSessionError(f"message role must be a non-empty str, got {role!r}")

    def edit(record: HeaderRecord, value: bytes | None) -> EditPlan | None:
        if value is None:
            return None
        old = decode_message(value)
        new = Message(
            role or old.role,
            changes.get("content", old.content),
            old.timestamp,
            {**old.extras, **extras},
            old.seq,
        )
        return {key: encode_message(new, seq)}, [], 0, new

    return (
        yield from _edit_messages(session_id, now_us, lambda r: Get(key), edit, None, expiry_us)
    )


def replace_messages(
    session_id: str,
    start: int,
    end: int,
    messages: list[Message],
    now_us: int,
    expiry_us: int | None,
) -> Plan[list[Message]]:
    check_replacement(start, end, messages)
    first, stop = keys.message_range(session_id, start, end + 1)

    def edit(record: HeaderRecord, rows: list[tuple[bytes, bytes]]) -> EditPlan:
        saved = [
            Message(m.role, m.content, m.timestamp, m.extras, start + i)
            for i, m in enumerate(messages)
        ]
        put = {keys.message_key(session_id, m.seq): encode_message(m, m.seq) for m in saved}  # type: ignore[arg-type]
        return put, [key for key, _ in rows], len(saved) - len(rows), saved

    read = lambda record: Scan(first, stop)  # noqa: E731
    return (yield from _edit_messages(session_id, now_us, read, edit, [], expiry_us))


def check_replacement(start: int, end: int, messages: list[Message]) -> None:
    """Validate ``replace_messages`` arguments (for every store)."""
    start, end = _seq(start), _seq(end)
    if end < start or len(messages) > end - start + 1:
        raise InvalidSessionError(
            f"replace_messages({start}, {end}, ...) takes at most {max(end - start + 1, 0)} "
            f"messages for that range, got {len(messages)}; widen the range"
        )
    for message in messages:
        if not isinstance(message, Message):
            raise InvalidSessionError(f"replacements must be Message objects, got {message!r}")
        check_json_value(message.content, "message content")
        check_json_value(message.extras, "message extras")


#: One past the largest seq an argument may name (keys hold seqs as 8 unsigned bytes,
#: and a range needs room for ``seq + 1``).
SEQ_LIMIT = 2**63


def _seq(seq: int) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < SEQ_LIMIT:
        raise InvalidSessionError(f"a message seq is an int from 0 to 2**63 - 1, got {seq!r}")
    return seq


def set_status(
    session_id: str, status: SessionStatus, touch_us: int | None, expiry_us: int | None
) -> Plan[bool]:
    """Archive or restore one session; whether it changed (``touch_us``: new activity)."""
    keys.check_id(session_id, "session_id")
    hkey = keys.header_key(session_id)
    current = yield Get(hkey)
    for _ in range(MAX_ATTEMPTS):
        record = _alive(session_id, current, expiry_us)
        if record.status is status:
            return False
        updated = record.updated_at if touch_us is None else touch_us
        new = attrs.evolve(record, status=status, version=record.version + 1, updated_at=updated)
        answer = yield Commit(
            expect={hkey: current},
            put={hkey: encode_header(new), keys.activity_key(status, updated, session_id): b""},
            delete=(keys.activity_key(record.status, record.updated_at, session_id),),
        )
        if answer is None:
            return True
        current = answer.current[hkey]
    raise ConflictError(f"session {session_id!r} kept changing while being archived; retry")


def check_records(chunk: int = 1000) -> Plan[list[tuple[bytes, str]]]:
    """Read every record and report the damaged ones as ``(key, problem)``; writes nothing.

    Headers and messages must decode (and a message's seq match its key); an index entry
    must point at an existing header.  The store is read in chunks, one snapshot each.
    """
    problems: list[tuple[bytes, str]] = []
    start = b""
    while True:
        rows = yield Scan(start, b"\xff", limit=chunk)
        if not rows:
            return problems
        for key, value in rows:
            problem = yield from _check_record(key, value)
            if problem:
                problems.append((key, problem))
        start = rows[-1][0] + b"\x00"


def _check_record(key: bytes, value: bytes) -> Plan[str | None]:
    kind = key[:1]
    try:
        if kind == b"h":
            decode_header(value)
        elif kind == b"m":
            seq = decode_message(value).seq
            if seq != keys.seq_of_message_key(key):
                return f"message record says seq {seq}, its key says {keys.seq_of_message_key(key)}"
        elif kind in (keys.USER_SPACE, b"a", keys.CREATED_SPACE):
            fixed = {b"a": 10, keys.CREATED_SPACE: 9}.get(kind) or key.index(b"\x00") + 9
            sid = keys.parse_index_sid(key, fixed)
            if (yield Get(keys.header_key(sid))) is None:
                return f"index entry for session {sid!r}, which has no header"
        elif key not in (keys.FORMAT_KEY, keys.MIGRATE_KEY):
            return "not a kvsessions key"
    except (CorruptRecordError, SchemaVersionError, UnicodeDecodeError, ValueError) as exc:
        return str(exc)
    return None


def clear_all() -> Plan[None]:
    """Delete every session (the store stays marked with this layout version)."""
    yield Commit(
        delete_ranges=((b"", b"\xff"),), put={keys.FORMAT_KEY: str(keys.STORE_FORMAT).encode()}
    )
