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
first attempt always wins.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import attrs
import orjson

from . import keys
from .backends.base import Batch, Commit, Conflict, Get, Plan, Scan
from .codec import (
    FORMAT_VERSION,
    HeaderRecord,
    decode_header,
    decode_message,
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
from .model import Message, Session, SessionStatus, SyncBase, new_session_id
from .values import check_json_value

__all__ = [
    "Job",
    "check_records",
    "check_replacement",
    "KVOperations",
    "check_session",
    "ensure_format",
    "inactive_since",
    "new_session",
]

T = TypeVar("T")
MAX_ATTEMPTS = 100  # optimistic retries before a save gives up (only remote stores retry)
ARCHIVE_CHUNK = 512  # sessions archived per commit by archive_inactive
RECENT_TOKENS = 8  # saves remembered in a header: a retry after this many others may repeat
_MISSING: Any = object()


@attrs.define(slots=True)
class Job(Generic[T]):
    """A plan plus whether it writes (local engines then take their write lock first)."""

    plan: Plan[T]
    write: bool


class KVOperations:
    """The manager operations as plans over the key-value protocol."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    def _now_us(self) -> int:
        return to_micros(self._clock())

    def create(
        self, user_id: str, metadata: dict[str, Any] | None, session_id: str | None
    ) -> Job[Session]:
        session = new_session(user_id, metadata, session_id, self._clock())
        return Job(_returning(_save(session, session.created_at, None), session), write=True)

    def save(self, session: Session, expect_version: int | None) -> Job[Session]:
        return Job(_returning(_save(session, self._clock(), expect_version), session), True)

    def get(self, session_id: str, messages: int | None = None) -> Job[Session | None]:
        return Job(_load(session_id, _window(messages)), write=False)

    def get_messages(
        self,
        session_id: str,
        limit: int | None,
        before: int | None,
        after: int | None,
        pair_safe: bool,
    ) -> Job[list[Message]]:
        return Job(_messages(session_id, _window(limit), before, after, pair_safe), write=False)

    def for_user(self, user_id: str) -> Job[list[Session]]:
        return Job(_sessions_for_user(user_id), write=False)

    def delete(self, session_id: str) -> Job[bool]:
        return Job(_delete(session_id), write=True)

    def archive(self, session_id: str) -> Job[bool]:
        return Job(_set_status(session_id, SessionStatus.ARCHIVED, None), write=True)

    def restore(self, session_id: str) -> Job[bool]:
        return Job(_set_status(session_id, SessionStatus.ACTIVE, self._now_us()), write=True)

    def archive_inactive(self, days: float) -> Job[int]:
        return Job(_archive_inactive(to_micros(inactive_since(days, self._clock))), write=True)

    def update(
        self, session_id: str, change: Callable[[Session], object], retries: int
    ) -> Job[Session]:
        # not a write plan: ``change`` is user code and must not run under the write lock
        return Job(_update(session_id, change, retries, self._clock), write=False)

    def pop_message(self, session_id: str) -> Job[Message | None]:
        return Job(_pop_message(session_id, self._now_us()), write=True)

    def delete_message(self, session_id: str, seq: int) -> Job[bool]:
        return Job(_delete_message(session_id, seq, self._now_us()), write=True)

    def update_message(
        self, session_id: str, seq: int, changes: dict[str, Any]
    ) -> Job[Message | None]:
        return Job(_update_message(session_id, seq, changes, self._now_us()), write=True)

    def replace_messages(
        self, session_id: str, start: int, end: int, messages: list[Message]
    ) -> Job[list[Message]]:
        return Job(_replace_messages(session_id, start, end, list(messages), self._now_us()), True)

    def clear_all(self) -> Job[None]:
        return Job(_clear_all(), write=True)


def new_session(
    user_id: str, metadata: dict[str, Any] | None, session_id: str | None, now: datetime
) -> Session:
    """The unsaved session ``create_session`` makes (ids are checked when it is saved)."""
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidSessionError(f"metadata must be a dict, got {type(metadata).__name__}")
    return Session(
        session_id=new_session_id() if session_id is None else session_id,
        user_id=user_id,
        metadata=dict(metadata or {}),
        created_at=now,
        updated_at=now,
    )


def inactive_since(days: float, clock: Callable[[], datetime]) -> datetime:
    """The cutoff of ``archive_inactive(days)``: sessions not saved since are inactive."""
    if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
        raise InvalidSessionError(f"days must be a non-negative number, got {days!r}")
    return clock() - timedelta(days=days)


def ensure_format() -> Plan[None]:
    """Record this store's format version, or refuse a store written by a newer one."""
    stored = yield Get(keys.FORMAT_KEY)
    if stored is None:
        answer = yield Commit(
            expect={keys.FORMAT_KEY: None}, put={keys.FORMAT_KEY: str(FORMAT_VERSION).encode()}
        )
        if answer is None:
            return
        stored = answer.current[keys.FORMAT_KEY]
    try:
        version = int(stored)
    except ValueError:
        raise StoreConfigError(
            f"this store's format marker {stored!r:.40} is not kvsessions'; "
            "point the store at a path or table of its own"
        ) from None
    if version > FORMAT_VERSION:
        raise SchemaVersionError(
            f"this store was written by a newer kvsessions (format {version}; this one reads "
            f"{FORMAT_VERSION}); upgrade kvsessions to open it"
        )


def _returning(plan: Plan[Any], value: T) -> Plan[T]:
    yield from plan
    return value


# -- loading ---------------------------------------------------------------------------


def _window(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidSessionError(f"a message count must be None or an int >= 0, got {limit!r}")
    return limit


def _load(session_id: str, last: int | None = None) -> Plan[Session | None]:
    """The session; with ``last``, only its newest ``last`` messages are read."""
    keys.check_id(session_id, "session_id")
    scan = Scan(*keys.message_range(session_id), limit=last, reverse=last is not None)
    header, rows = yield Batch((Get(keys.header_key(session_id)), scan))
    if header is None:
        return None
    if last is not None:
        rows.reverse()
    return _build(session_id, header, rows)


def _messages(
    session_id: str, limit: int | None, before: int | None, after: int | None, pair_safe: bool
) -> Plan[list[Message]]:
    """Messages with ``after < seq < before``, the newest ``limit`` of them, oldest first.

    ``pair_safe`` widens the window backwards while it would start with a tool result
    (a message with a ``tool_call_id`` extra, or role ``"tool"``), so the tool call it
    answers is never cut off.
    """
    keys.check_id(session_id, "session_id")
    start = 0 if after is None else after + 1
    begin, stop = keys.message_range(session_id, max(start, 0), before)
    rows = yield Scan(begin, stop, limit=limit, reverse=limit is not None)
    if limit is not None:
        rows.reverse()
    window = [decode_message(value) for _, value in rows]
    while pair_safe and window and _is_tool_result(window[0]) and window[0].seq > start:
        earlier = yield Scan(begin, rows[0][0], limit=1, reverse=True)
        if not earlier:
            break
        rows = earlier + rows
        window.insert(0, decode_message(earlier[0][1]))
    return window


def _is_tool_result(message: Message) -> bool:
    return message.role == "tool" or "tool_call_id" in message.extras


def _build(session_id: str, header: bytes, rows: Iterable[tuple[bytes, bytes]]) -> Session:
    record = decode_header(header)
    session = Session(
        session_id=session_id,
        user_id=record.user_id,
        metadata=dict(record.metadata),
        messages=[decode_message(value) for _, value in rows],
        state=dict(record.state),
        status=record.status,
        created_at=from_micros(record.created_at),
        updated_at=from_micros(record.updated_at),
    )
    _mark_synced(session, header, record, keys.SessionKeys(session_id))
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


def _sessions_for_user(user_id: str) -> Plan[list[Session]]:
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
        if header is not None:  # an index entry without a header is stale: skip it
            session = _build(sid, header, rows)
            if session.user_id == user_id:
                sessions.append(session)
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
    if not isinstance(session, Session):
        raise InvalidSessionError(f"save() takes a Session, got {type(session).__name__}")
    base = session._base
    if base is None or session.session_id is not base.keys.sid:
        keys.check_id(session.session_id, "session_id")
    if base is None or session.user_id is not base.record.user_id:
        keys.check_id(session.user_id, "user_id")
    for field, value in (("state", session.state), ("metadata", session.metadata)):
        if type(value) is not dict:
            raise InvalidSessionError(f"session.{field} must be a dict, got {type(value).__name__}")
    state_set, state_del = _dict_changes(session.state, base.state_json if base else b"{}", "state")
    meta_set, meta_del = _dict_changes(
        session.metadata, base.metadata_json if base else b"{}", "metadata"
    )
    pending = session.messages[session._synced :]
    for message in pending:
        if not isinstance(message, Message):
            raise InvalidSessionError(
                "session.messages may only hold Message objects; use "
                f"session.add_message(), got {type(message).__name__}"
            )
        if type(message.role) is not str or not message.role:
            raise InvalidSessionError(f"message role must be a non-empty str, got {message.role!r}")
        if type(message.content) is not str:
            check_json_value(message.content, "message content")
        if message.extras:
            check_json_value(message.extras, "message extras")
    status: SessionStatus | None = None
    if base is None or session.status is not base.record.status:
        try:
            status = SessionStatus(session.status)
        except ValueError:
            raise InvalidSessionError(
                f"session.status must be 'active' or 'archived', got {session.status!r}"
            ) from None
        if base is not None and status is base.record.status:
            status = None
    return _Changes(pending, state_set, state_del, meta_set, meta_del, status)


def _dict_changes(
    current: dict[str, Any], snapshot_json: bytes, where: str
) -> tuple[dict[str, Any], list[str]]:
    """Keys of ``current`` that differ from the JSON snapshot, and keys it no longer has."""
    try:
        if orjson.dumps(current) == snapshot_json:
            return {}, []  # the common case: untouched, decided without a per-key walk
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


def _save(session: Session, now: datetime, expect_version: int | None) -> Plan[None]:
    sid = session.session_id
    changes = check_session(session)
    base = session._base
    if base is not None and session.user_id != base.record.user_id:
        raise InvalidSessionError(
            f"session {sid!r} belongs to user {base.record.user_id!r}; a session's user_id "
            "cannot change (create a new session for the other user)"
        )
    if base is not None and not changes and expect_version is None:
        return  # nothing to write
    now_us = to_micros(now)
    created_us = to_micros(session.created_at) if base is None else base.record.created_at
    session_keys = base.keys if base is not None and base.keys.sid is sid else keys.SessionKeys(sid)
    hkey = session_keys.header
    current_bytes = base.header if base is not None else None
    current: HeaderRecord | None = base.record if base is not None else None
    base_record = current
    if expect_version is not None and (current.version if current else 0) != expect_version:
        current_bytes = yield Get(hkey)  # our copy is not what the caller expects: look
        current = decode_header(current_bytes) if current_bytes is not None else None
    if session._save_token is None:
        session._save_token = os.urandom(6).hex()
    token = session._save_token
    known_next = base.record.next_seq if base is not None else 0
    missed: list[Message] = []
    for _ in range(MAX_ATTEMPTS):
        if current is not None and current is not base_record and token in current.recent:
            # An earlier attempt of this very save committed, but we never heard so (a
            # lost reply, a cancelled task): adopt the stored session, write nothing.
            rows = yield Scan(*keys.message_range(sid, known_next, current.next_seq))
            session.messages[session._synced :] = missed + [decode_message(v) for _, v in rows]
            _adopt(session, current_bytes, current, session_keys)  # type: ignore[arg-type]
            return
        _check_can_save(session, base, current, changes, expect_version)
        header, record, commit = _commit_for(
            session, session_keys, current, current_bytes, changes, now_us, created_us, token
        )
        answer = yield commit
        if answer is None:
            break
        assert isinstance(answer, Conflict)
        current_bytes = answer.current[hkey]
        current = decode_header(current_bytes) if current_bytes is not None else None
        if current is not None and base is not None and current.next_seq > known_next:
            rows = yield Scan(*keys.message_range(sid, known_next, current.next_seq))
            missed += (decode_message(value) for _, value in rows)
            known_next = current.next_seq
    else:
        raise ConflictError(
            f"session {sid!r} kept changing under {MAX_ATTEMPTS} save attempts; retry later"
        )
    first_seq = record.next_seq - len(changes.pending)
    saved = [
        Message(m.role, m.content, m.timestamp, m.extras, first_seq + i)
        for i, m in enumerate(changes.pending)
    ]
    session.messages[session._synced :] = missed + saved
    if changes.state_set or changes.state_del or current is not base_record:
        session.state.clear()
        session.state.update(record.state)
    if changes.meta_set or changes.meta_del or current is not base_record:
        session.metadata.clear()
        session.metadata.update(record.metadata)
    session.status = record.status
    session.updated_at = now
    _mark_synced(session, header, record, session_keys)
    session._save_token = None


def _adopt(
    session: Session, header: bytes, record: HeaderRecord, session_keys: keys.SessionKeys
) -> None:
    """Make ``session`` mirror the stored ``header`` (its messages are already in place)."""
    session.state.clear()
    session.state.update(record.state)
    session.metadata.clear()
    session.metadata.update(record.metadata)
    session.status = record.status
    session.updated_at = from_micros(record.updated_at)
    _mark_synced(session, header, record, session_keys)
    session._save_token = None


def _update(
    session_id: str,
    change: Callable[[Session], object],
    retries: int,
    clock: Callable[[], datetime],
) -> Plan[Session]:
    """Load, apply ``change``, save with ``expect_version``; on a conflict, start over."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidSessionError(f"retries must be a non-negative int, got {retries!r}")
    attempts_left = retries
    while True:
        session = yield from _load(session_id)
        if session is None:
            raise SessionNotFoundError(f"no session {session_id!r} in this store")
        change(session)
        try:
            yield from _save(session, clock(), session.version)
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


def _commit_for(
    session: Session,
    session_keys: keys.SessionKeys,
    current: HeaderRecord | None,
    current_bytes: bytes | None,
    changes: _Changes,
    now_us: int,
    created_us: int,
    token: str,
) -> tuple[bytes, HeaderRecord, Commit]:
    first_seq = current.next_seq if current is not None else 0
    state = _merged(current.state if current else {}, changes.state_set, changes.state_del)
    metadata = _merged(current.metadata if current else {}, changes.meta_set, changes.meta_del)
    status = changes.status or (current.status if current else SessionStatus.ACTIVE)
    record = HeaderRecord(
        user_id=session.user_id,
        created_at=current.created_at if current is not None else created_us,
        updated_at=now_us,
        status=status,
        version=(current.version if current is not None else 0) + 1,
        next_seq=first_seq + len(changes.pending),
        count=(current.count if current is not None else 0) + len(changes.pending),
        metadata=metadata,
        state=state,
        recent=[*current.recent[1 - RECENT_TOKENS :], token] if current is not None else [token],
    )
    header = encode_header(record)
    put = {
        session_keys.message(first_seq + i): encode_message(message, first_seq + i)
        for i, message in enumerate(changes.pending)
    }
    put[session_keys.header] = header
    delete = []
    if current is None:
        put[session_keys.user(session.user_id, record.created_at)] = b""
        put[session_keys.activity(status, now_us)] = b""
    elif status is not current.status or keys.activity_bucket(
        current.updated_at
    ) != keys.activity_bucket(now_us):  # (same status, same minute: the index says so)
        delete.append(session_keys.activity(current.status, current.updated_at))
        put[session_keys.activity(status, now_us)] = b""
    return header, record, Commit({session_keys.header: current_bytes}, put, delete)


def _merged(stored: dict[str, Any], changed: dict[str, Any], removed: list[str]) -> dict[str, Any]:
    """``stored`` with this save's changes applied (stored dicts are never mutated)."""
    if not changed and not removed:
        return stored
    merged = {**stored, **changed}
    for key in removed:
        merged.pop(key, None)
    return merged


# -- delete, archive, clear ------------------------------------------------------------


def _delete(session_id: str) -> Plan[bool]:
    keys.check_id(session_id, "session_id")
    hkey = keys.header_key(session_id)
    current = yield Get(hkey)
    for _ in range(MAX_ATTEMPTS):
        if current is None:
            return False
        record = decode_header(current)
        answer = yield Commit(
            expect={hkey: current},
            delete=(
                hkey,
                keys.user_key(record.user_id, record.created_at, session_id),
                keys.activity_key(record.status, record.updated_at, session_id),
            ),
            delete_ranges=(keys.message_range(session_id),),
        )
        if answer is None:
            return True
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
) -> Plan[Any]:
    """Read what an edit needs, decide it, and commit it with the new header atomically.

    Two concurrent edits expect the same header: one commits, the other re-reads and
    decides again (so two pops never return the same message).
    """
    session_keys = keys.SessionKeys(session_id)
    hkey = session_keys.header
    for _ in range(MAX_ATTEMPTS):
        current = yield Get(hkey)
        if current is None:
            raise SessionNotFoundError(f"no session {session_id!r} in this store")
        record = decode_header(current)
        if record.status is SessionStatus.ARCHIVED:
            raise SessionArchivedError(
                f"session {session_id!r} is archived; restore it before editing its messages"
            )
        decided = edit(record, (yield read(record)))
        if decided is None:
            return unchanged
        put, delete, count_change, result = decided
        new = attrs.evolve(
            record,
            version=record.version + 1,
            updated_at=now_us,
            count=record.count + count_change,
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


def _pop_message(session_id: str, now_us: int) -> Plan[Message | None]:
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
        )
    )


def _delete_message(session_id: str, seq: int, now_us: int) -> Plan[bool]:
    key = keys.message_key(session_id, _seq(seq))

    def edit(record: HeaderRecord, value: bytes | None) -> EditPlan | None:
        return None if value is None else ({}, [key], -1, True)

    return (yield from _edit_messages(session_id, now_us, lambda r: Get(key), edit, False))


def _update_message(
    session_id: str, seq: int, changes: dict[str, Any], now_us: int
) -> Plan[Message | None]:
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

    return (yield from _edit_messages(session_id, now_us, lambda r: Get(key), edit, None))


def _replace_messages(
    session_id: str, start: int, end: int, messages: list[Message], now_us: int
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

    return (yield from _edit_messages(session_id, now_us, lambda r: Scan(first, stop), edit, []))


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


def _seq(seq: int) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidSessionError(f"a message seq is an int >= 0, got {seq!r}")
    return seq


def _set_status(session_id: str, status: SessionStatus, touch_us: int | None) -> Plan[bool]:
    keys.check_id(session_id, "session_id")
    hkey = keys.header_key(session_id)
    current = yield Get(hkey)
    for _ in range(MAX_ATTEMPTS):
        if current is None:
            raise SessionNotFoundError(f"no session {session_id!r} in this store")
        record = decode_header(current)
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


def _archive_inactive(cutoff_us: int) -> Plan[int]:
    archived = 0
    start, stop = keys.activity_range(SessionStatus.ACTIVE, cutoff_us)
    while True:
        index = yield Scan(start, stop, limit=ARCHIVE_CHUNK)
        if not index:
            return archived
        sids = [keys.parse_index_sid(key, 10) for key, _ in index]
        headers = yield Batch(tuple(Get(keys.header_key(sid)) for sid in sids))
        expect: dict[bytes, bytes | None] = {}
        put: dict[bytes, bytes] = {}
        delete: list[bytes] = []
        for (index_key, _), sid, header in zip(index, sids, headers, strict=True):
            record = decode_header(header) if header is not None else None
            if record is None or index_key != keys.activity_key(
                record.status, record.updated_at, sid
            ):
                delete.append(index_key)  # stale entry (session gone or moved): drop it
                continue
            if record.updated_at >= cutoff_us:
                continue  # saved in the cutoff's own minute, after the cutoff: still active
            hkey = keys.header_key(sid)
            expect[hkey] = header
            new = attrs.evolve(record, status=SessionStatus.ARCHIVED, version=record.version + 1)
            put[hkey] = encode_header(new)
            put[keys.activity_key(SessionStatus.ARCHIVED, record.updated_at, sid)] = b""
            delete.append(index_key)
        answer = yield Commit(expect=expect, put=put, delete=delete)
        if answer is None:
            archived += len(expect)
            start = index[-1][0] + b"\x00"
        else:  # a store that commits per slot may have applied part of it: count that part
            archived += sum(answer.current.get(hkey) == put[hkey] for hkey in expect)


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
        elif kind in (keys.USER_SPACE, b"a"):
            fixed = 10 if kind == b"a" else key.index(b"\x00") + 9
            sid = keys.parse_index_sid(key, fixed)
            if (yield Get(keys.header_key(sid))) is None:
                return f"index entry for session {sid!r}, which has no header"
        elif key != keys.FORMAT_KEY:
            return "not a kvsessions key"
    except (CorruptRecordError, SchemaVersionError, UnicodeDecodeError, ValueError) as exc:
        return str(exc)
    return None


def _clear_all() -> Plan[None]:
    yield Commit(
        delete_ranges=((b"", b"\xff"),), put={keys.FORMAT_KEY: str(FORMAT_VERSION).encode()}
    )
