"""Google ADK: a ``BaseSessionService`` over any kvsessions store.

``KVSessionService(store=LMDBSessionStore("sessions.lmdb"))`` replaces ADK's
``InMemorySessionService`` / ``DatabaseSessionService`` in a ``Runner``.  Needs
``google-adk`` (``pip install kvsessions[adk]``).

How ADK's model maps onto kvsessions sessions (all ids built by :func:`_ident`, so any
``app_name``/``user_id``/``session_id`` text is stored exactly and never collides):

- an ADK session is a kvsessions session ``adk:s:["app","user","id"]`` whose messages are
  its events (one message each: ``event.model_dump(mode="json", exclude_none=True)``, as
  ADK's own database schema stores them), whose state is the session-scoped state, and
  whose metadata names the app, user and session and keeps ``last_update_time``.  Its
  kvsessions ``user_id`` is ``adk:o:["app","user"]``, so a user's sessions in one app come
  from the user index;
- app state (``app:`` keys) lives in the state of one reserved session per app,
  ``adk:a:["app"]``, whose messages also register the app's users (for listing all of an
  app's sessions);
- user state (``user:`` keys) lives in the state of one reserved session per app and user,
  ``adk:u:["app","user"]``.

``temp:`` keys are never stored.  Both reserved sessions are changed by kvsessions' merging
save, so concurrent writers of different keys all keep their values.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import weakref
from types import TracebackType
from typing import Any, Literal

from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import (
    SessionNotFoundError as ADKSessionNotFound,
)
from google.adk.events.event import Event
from google.adk.platform import time as adk_time
from google.adk.platform import uuid as adk_uuid
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session as ADKSession
from google.adk.sessions.state import State
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from .. import keys
from ..async_api import AsyncSessionManager
from ..errors import (
    ConflictError,
    CorruptRecordError,
    InvalidIdError,
    InvalidValueError,
    SessionExistsError,
    SessionNotFoundError,
    StoreConfigError,
)
from ..model import Message, Session
from ..stores import KVSessionStore, SessionStore
from ..values import check_json_value

__all__ = [
    "ADKSessionExistsError",
    "ADKSessionNotFoundError",
    "ADKStaleSessionError",
    "KVSessionService",
]

_PAGE = 64  # events read per step when after_timestamp has to look back page by page
_MAX_PAGE = 4096
_APPEND_ATTEMPTS = 20
_USER_ENTRY = "adk_user"  # role of the app record's messages that register a user


# per manager over a user's store: the locks all its services share
_USER_STORE_LOCKS: weakref.WeakKeyDictionary[
    Any, weakref.WeakValueDictionary[str, asyncio.Lock]
] = weakref.WeakKeyDictionary()


class ADKSessionExistsError(SessionExistsError, AlreadyExistsError):
    """``create_session`` with a session id the app and user already have (ADK's error too)."""


class ADKSessionNotFoundError(SessionNotFoundError, ADKSessionNotFound):
    """``append_event`` to a session that is not (or no longer) stored (ADK's error too)."""


class ADKStaleSessionError(ConflictError, StaleSessionError):
    """The session object is older than the stored session (ADK's ``StaleSessionError`` too)."""


def _ident(kind: str, *parts: str) -> str:
    """A kvsessions id for ``parts``: injective, at most 200 UTF-8 bytes, never NUL.

    The parts are JSON-encoded (so separators inside them cannot collide); when that is
    too long, the SHA-256 of the encoding stands in, under a prefix the plain form never
    has.  (The ids themselves are also kept in the session's metadata.)
    """
    for what, part in zip(("app_name", "user_id", "session_id"), parts, strict=False):
        if type(part) is not str:
            raise InvalidIdError(f"{what} must be a str, got {type(part).__name__} {part!r:.60}")
        try:
            part.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidIdError(
                f"{what} is not valid unicode text (lone surrogate at {exc.start}): {part!r:.60}"
            ) from None
    body = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) + 6 <= keys.MAX_ID_BYTES:
        return f"adk:{kind}:" + body.decode("utf-8")
    return f"adk:{kind}#" + hashlib.sha256(body).hexdigest()


def _json_safe(values: dict[str, Any], where: str) -> dict[str, Any]:
    """State values as ADK's database service stores them (datetimes, models -> JSON).

    What still would not round-trip (NaN, huge ints, unserialisable objects) raises
    ``InvalidValueError`` before anything is written.
    """
    try:
        safe = to_jsonable_python(values)
    except Exception as exc:  # pydantic raises PydanticSerializationError and friends
        raise InvalidValueError(
            f"{where}: a value cannot be stored as JSON ({exc}); store str, int, float, "
            "bool, None, list or dict values"
        ) from exc
    check_json_value(safe, where)
    return safe


def _split(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(app, user, session)`` parts of a state delta, prefixes removed; ``temp:`` dropped."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    session: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            session[key] = value
    return app, user, session


def _split_safe(
    state: dict[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """:func:`_split`, each part checked and converted by :func:`_json_safe`."""
    app, user, session = _split(state)
    return _json_safe(app, where), _json_safe(user, where), _json_safe(session, where)


def _merged(app: dict[str, Any], user: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    merged = dict(session)
    merged.update((State.APP_PREFIX + key, value) for key, value in app.items())
    merged.update((State.USER_PREFIX + key, value) for key, value in user.items())
    return merged


def _marker(stored: Session) -> str:
    """The stored revision a loaded ADK session came from (survives delete + recreate).

    The version alone identifies it in a built-in store; a user's store keeps no
    versions, so the event count and last update time stand in there.
    """
    last = stored.metadata.get("last_update_time")
    return f"{stored.created_at.isoformat()}#{stored.version}#{stored.message_count}#{last!r}"


def _event_time(message: Message) -> float:
    content = message.content
    return float(content.get("timestamp", 0.0)) if isinstance(content, dict) else 0.0


def _decode_event(message: Message, session_id: str) -> Event:
    try:
        return Event.model_validate(message.content)
    except ValidationError as exc:
        raise CorruptRecordError(
            f"event at seq {message.seq} of ADK session {session_id!r} is not an ADK event "
            f"({exc.error_count()} validation errors); delete it with "
            "manager.delete_message() or restore the store from a backup"
        ) from exc


class KVSessionService(BaseSessionService):
    """ADK's session service contract over a kvsessions store (LMDB, SQLite, Redis, ...).

    Pass ``store`` (the service then owns an :class:`~kvsessions.AsyncSessionManager` and
    closes it in :meth:`close`) or an existing ``manager``.

    ``on_stale`` decides what ``append_event`` does with a session object that is older
    than the stored session (another process or service object appended meanwhile):
    ``"raise"`` (default) refuses with ``StaleSessionError``, as ADK's
    ``DatabaseSessionService`` does, but checked atomically with the write (a
    compare-and-set on the session's version); ``"merge"`` appends after the other
    writers' events and merges state per key, as ``InMemorySessionService`` does.  In
    neither mode is a committed event ever lost or overwritten.
    """

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        manager: AsyncSessionManager | None = None,
        on_stale: Literal["raise", "merge"] = "raise",
    ) -> None:
        if (store is None) == (manager is None):
            raise StoreConfigError(
                "pass exactly one of store=... (e.g. LMDBSessionStore('sessions.lmdb')) "
                "or manager=AsyncSessionManager(...)"
            )
        if on_stale not in ("raise", "merge"):
            raise StoreConfigError(f"on_stale must be 'raise' or 'merge', got {on_stale!r}")
        self._owns_manager = manager is None
        self.manager = manager if manager is not None else AsyncSessionManager(store=store)
        self.on_stale = on_stale
        # built-in stores read windows and compare-and-set; a user's own store cannot, so
        # there every write is serialised per session id by all services on one manager
        self._kv = isinstance(self.manager.store, KVSessionStore)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
            if self._kv
            else _USER_STORE_LOCKS.setdefault(self.manager, weakref.WeakValueDictionary())
        )

    # -- the contract ----------------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> ADKSession:
        """Create a session; ``AlreadyExistsError`` if the app and user already have this id.

        ``app:`` and ``user:`` keys of ``state`` go to the app and user state, ``temp:``
        keys are dropped; the returned session shows the merged state.
        """
        session_id = session_id.strip() if session_id else None
        session_id = session_id or adk_uuid.new_uuid()
        app_delta, user_delta, session_state = _split_safe(state or {}, "state")
        ksid = _ident("s", app_name, user_id, session_id)
        user_record = await self._register_user(app_name, user_id)
        now = adk_time.get_time()
        stored = Session(
            session_id=ksid,
            user_id=_ident("o", app_name, user_id),
            metadata={
                "adk_app": app_name,
                "adk_user": user_id,
                "adk_session": session_id,
                "last_update_time": now,
            },
            state=session_state,
        )
        try:
            async with self._serial(ksid):
                stored = await self._create(stored)
        except SessionExistsError:
            raise ADKSessionExistsError(
                f"Session with id {session_id} already exists (app {app_name!r}, user "
                f"{user_id!r}); load it with get_session() or pick another id"
            ) from None
        app_state, user_state = await asyncio.gather(
            self._update_app_state(app_name, app_delta),
            self._update_user_state(app_name, user_id, user_delta, user_record),
        )
        return self._to_adk(stored, app_state, user_state, [])

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> ADKSession | None:
        """The session with merged state, or ``None``.

        ``config.num_recent_events`` loads only that many newest events;
        ``config.after_timestamp`` keeps the newest events from that time on, reading
        older pages only while they are still that recent.
        """
        session_id = session_id.strip() if session_id else session_id
        ksid = _ident("s", app_name, user_id, session_id)
        recent = config.num_recent_events if config is not None else None
        after = config.after_timestamp if config is not None else None
        loaded, app_state, user_state = await asyncio.gather(
            self._load_events(ksid, recent, after),
            self._app_state(app_name),
            self._user_state(app_name, user_id),
        )
        if loaded is None:
            return None
        stored, messages = loaded
        if not _owned(stored, app_name, user_id, session_id):
            return None
        events = [_decode_event(message, session_id) for message in messages]
        return self._to_adk(stored, app_state, user_state, events)

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """The app's sessions (one user's, or everyone's), without events, oldest update first."""
        users = [user_id] if user_id is not None else await self._users_of(app_name)
        app_state, per_user = await asyncio.gather(
            self._app_state(app_name),
            asyncio.gather(*(self._user_listing(app_name, user) for user in users)),
        )
        sessions = [
            ADKSession(
                id=metadata["adk_session"],
                app_name=app_name,
                user_id=user,
                state=_merged(app_state, user_state, state),
                last_update_time=metadata["last_update_time"],
            )
            for user, (user_state, headers) in zip(users, per_user, strict=True)
            for metadata, state in headers
        ]
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete the session and its events (app and user state stay); no error if absent."""
        session_id = session_id.strip() if session_id else session_id
        await self.manager.delete(_ident("s", app_name, user_id, session_id))

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's state in this app, keys without the ``user:`` prefix."""
        return await self._user_state(app_name, user_id)

    async def append_event(self, session: ADKSession, event: Event) -> Event:
        """Store a non-partial event and apply its state delta (see the class docstring).

        The event and the session-scoped state change are one atomic commit; the ``app:``
        and ``user:`` changes follow in commits of their own.  An event equal to the
        newest stored one (a retried call) is not stored twice.
        """
        if event.partial:
            return event
        delta = event.actions.state_delta if event.actions else None
        app_delta, user_delta, session_delta = _split_safe(delta or {}, "state_delta")
        self._apply_temp_state(session, event)  # (temp values need no JSON form)
        event = self._trim_temp_delta_state(event)
        record = event.model_dump(mode="json", exclude_none=True)
        ksid = _ident("s", session.app_name, session.user_id, session.id)
        async with self._lock(ksid):  # appends through one service object queue up, as ADK's do
            marker = await self._append(session, ksid, record, event, session_delta)
        if marker is None:
            return event  # already stored: a retry of an append that went through
        await asyncio.gather(
            self._update_app_state(session.app_name, app_delta),
            self._update_user_state(session.app_name, session.user_id, user_delta),
        )
        session.last_update_time = event.timestamp
        session._storage_update_marker = marker or None
        return self._commit_event_to_session(session, event)

    # -- resources -------------------------------------------------------------------

    async def close(self) -> None:
        """Close the manager if this service opened it (``store=...``)."""
        if self._owns_manager:
            await self.manager.close()

    async def __aenter__(self) -> KVSessionService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- appending -------------------------------------------------------------------

    async def _append(
        self,
        session: ADKSession,
        ksid: str,
        record: dict[str, Any],
        event: Event,
        session_delta: dict[str, Any],
    ) -> str | None:
        """Commit the event; the new marker ("" if others' events got in), None if a retry."""
        strict = self.on_stale == "raise"
        names = (session.app_name, session.user_id, session.id)
        for _ in range(_APPEND_ATTEMPTS):
            loaded = await self._load_events(ksid, 1, None)
            if loaded is None or not _owned(loaded[0], *names):
                raise ADKSessionNotFoundError(
                    f"Session {session.id} not found (app {session.app_name!r}, user "
                    f"{session.user_id!r}); create it with create_session() first"
                )
            stored, newest_only = loaded
            newest = newest_only[-1] if newest_only else None
            if newest is not None and newest.content == record:
                return None
            if strict:
                self._check_fresh(session, stored, newest)
            version = stored.version
            stored.add_message(event.author or "event", record)
            for key, value in session_delta.items():
                stored.set_state(key, value)
            stored.metadata["last_update_time"] = event.timestamp
            try:
                if strict and self._kv:
                    await self.manager.save(stored, expect_version=version)
                else:  # merging (or a user's store: checked above, under the lock only)
                    await self.manager.save(stored)
            except SessionNotFoundError:
                raise ADKSessionNotFoundError(
                    f"Session {session.id} was deleted while appending to it; create it again"
                ) from None
            except ConflictError as exc:
                if type(exc) is not ConflictError:
                    raise  # archived, or another refusal that a retry cannot fix
                continue  # someone wrote meanwhile: look again (stale now, in most cases)
            alone = not self._kv or stored.version == version + 1  # (no one else's events)
            return _marker(stored) if alone else ""
        raise ConflictError(
            f"session {session.id!r} kept changing under {_APPEND_ATTEMPTS} append attempts; "
            "retry later"
        )

    @staticmethod
    def _check_fresh(session: ADKSession, stored: Session, newest: Message | None) -> None:
        """Refuse a session object older than the store, as ADK's database service does."""
        marker = session._storage_update_marker
        if marker is not None:
            stale = marker != _marker(stored)
        elif stored.metadata.get("last_update_time", 0.0) > session.last_update_time:
            # a session object not loaded here: stale unless it holds the newest event
            newest_id = newest.content.get("id") if newest is not None else None
            mine = session.events[-1].id if session.events else None
            stale = newest is not None and (mine is None or newest_id != mine)
        else:
            stale = False
        if stale:
            raise ADKStaleSessionError(
                f"session {session.id!r} was changed in storage since this object was "
                "loaded; reload it with get_session() and append again"
            )

    # -- loading ---------------------------------------------------------------------

    async def _load_events(
        self, ksid: str, recent: int | None, after: float | None
    ) -> tuple[Session, list[Message]] | None:
        """The stored session and the messages ``recent``/``after`` select, oldest first."""
        if not self._kv:  # a user's store has no windows: load all, then cut
            stored = await self.manager.get_session(ksid)
            if stored is None:
                return None
            messages = stored.messages
            if recent is not None:
                messages = messages[len(messages) - recent :] if recent else []
        else:
            first = recent if recent is not None or after is None else _PAGE
            stored = await self.manager.get_session(ksid, messages=first)
            if stored is None:
                return None
            messages = stored.messages
            unloaded = stored.message_count - len(messages)
            page = _PAGE
            while recent is None and after is not None and unloaded > 0 and messages:
                if _event_time(messages[0]) < after:
                    break
                page = min(page * 2, _MAX_PAGE)
                older = await self.manager.get_messages(ksid, page, before=messages[0].seq)
                if not older:
                    break
                messages = older + messages
                unloaded -= len(older)
        if after is not None:  # the events after the newest one older than ``after``
            cut = len(messages)
            while cut > 0 and _event_time(messages[cut - 1]) >= after:
                cut -= 1
            messages = messages[cut:]
        return stored, messages

    async def _record(self, ksid: str) -> Session | None:
        """A reserved record (app or user state), without its messages where possible."""
        if self._kv:
            return await self.manager.get_session(ksid, messages=0)
        return await self.manager.get_session(ksid)

    async def _app_state(self, app_name: str) -> dict[str, Any]:
        record = await self._record(_ident("a", app_name))
        return record.state if record is not None else {}

    async def _user_state(self, app_name: str, user_id: str) -> dict[str, Any]:
        record = await self._record(_ident("u", app_name, user_id))
        return record.state if record is not None else {}

    async def _users_of(self, app_name: str) -> list[str]:
        """The app's users, from the registry in its app record (first-seen order)."""
        aid = _ident("a", app_name)
        if self._kv:
            entries = await self.manager.get_messages(aid)
        else:
            record = await self.manager.get_session(aid)
            entries = record.messages if record is not None else []
        users = (m.content for m in entries if m.role == _USER_ENTRY)
        return list(dict.fromkeys(u for u in users if isinstance(u, str)))

    async def _user_listing(
        self, app_name: str, user_id: str
    ) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, Any]]]]:
        """The user's state and ``(metadata, state)`` of each of their sessions in the app."""
        owner = _ident("o", app_name, user_id)
        user_state = self._user_state(app_name, user_id)
        found = []
        cursor = None
        while True:  # headers only (no events), oldest first
            page = await self.manager.list_sessions(
                owner, status=None, order="created", limit=1000, cursor=cursor
            )
            found += [(s.metadata, s.state) for s in page.sessions]
            if (cursor := page.cursor) is None:
                break
        found.reverse()
        mine = [
            (metadata, state)
            for metadata, state in found
            if metadata.get("adk_app") == app_name and metadata.get("adk_user") == user_id
        ]
        return await user_state, mine

    def _to_adk(
        self,
        stored: Session,
        app_state: dict[str, Any],
        user_state: dict[str, Any],
        events: list[Event],
    ) -> ADKSession:
        metadata = stored.metadata
        session = ADKSession(
            id=metadata["adk_session"],
            app_name=metadata["adk_app"],
            user_id=metadata["adk_user"],
            state=_merged(app_state, user_state, stored.state),
            events=events,
            last_update_time=metadata["last_update_time"],
        )
        session._storage_update_marker = _marker(stored)
        return session

    # -- app and user state ----------------------------------------------------------

    def _lock(self, ksid: str) -> asyncio.Lock:
        return self._locks.setdefault(ksid, asyncio.Lock())

    def _serial(self, ksid: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """Around a read-modify-write: nothing for built-in stores (they merge), a lock
        for a user's store (it replaces whole sessions)."""
        return contextlib.nullcontext() if self._kv else self._lock(ksid)

    async def _create(self, new: Session) -> Session:
        """Store a new session; ``SessionExistsError`` if its id is taken (nothing written)."""
        if self._kv:
            return await self.manager.save(new)  # one atomic commit, checked by the store
        # a user's store replaces on save: create_session checks first (not atomically)
        created = await self.manager.create_session(new.user_id, new.metadata, new.session_id)
        if new.state or new.messages:
            created.state.update(new.state)
            created.messages.extend(new.messages)
            await self.manager.save(created)
        return created

    async def _register_user(self, app_name: str, user_id: str) -> Session:
        """The user's record; a new user is first registered in the app record.

        Registering before the record exists means a crash in between leaves at most a
        duplicate registry entry (read as one), never an unlisted user.
        """
        uid = _ident("u", app_name, user_id)
        record = await self._record(uid)
        if record is not None:
            return record
        aid = _ident("a", app_name)
        for _ in range(_APPEND_ATTEMPTS):
            async with self._serial(aid):
                stored = await self._record(aid)
                app = stored or Session(session_id=aid, user_id=aid, metadata={"adk_app": app_name})
                app.add_message(_USER_ENTRY, user_id)
                try:
                    await (self.manager.save(app) if stored else self._create(app))
                    break
                except SessionExistsError:
                    continue  # another task created the app record first: append to it
        else:
            raise ConflictError(f"app record {aid!r} kept changing; retry later")
        record = Session(
            session_id=uid, user_id=uid, metadata={"adk_app": app_name, "adk_user": user_id}
        )
        async with self._serial(uid):
            with contextlib.suppress(SessionExistsError):  # (or a concurrent create made it)
                record = await self._create(record)
        return record

    async def _update_app_state(self, app_name: str, delta: dict[str, Any]) -> dict[str, Any]:
        aid = _ident("a", app_name)
        return await self._merge_state(aid, delta, {"adk_app": app_name})

    async def _update_user_state(
        self,
        app_name: str,
        user_id: str,
        delta: dict[str, Any],
        record: Session | None = None,
    ) -> dict[str, Any]:
        if record is not None and not delta:
            return record.state
        uid = _ident("u", app_name, user_id)
        return await self._merge_state(uid, delta, {"adk_app": app_name, "adk_user": user_id})

    async def _merge_state(
        self, ksid: str, delta: dict[str, Any], metadata: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply ``delta`` to a reserved record's state (per-key merge) and return the state."""
        for _ in range(_APPEND_ATTEMPTS):
            async with self._serial(ksid):
                stored = await self._record(ksid)
                if not delta:
                    return stored.state if stored is not None else {}
                record = stored or Session(session_id=ksid, user_id=ksid, metadata=dict(metadata))
                for key, value in delta.items():
                    record.set_state(key, value)
                try:
                    record = await (self.manager.save(record) if stored else self._create(record))
                except SessionExistsError:
                    continue  # created concurrently: merge into that one
                return record.state
        raise ConflictError(f"state record {ksid!r} kept changing; retry later")


def _owned(stored: Session, app_name: str, user_id: str, session_id: str) -> bool:
    """Whether a loaded kvsessions session is this ADK session (not a hash twin, not foreign)."""
    metadata = stored.metadata
    return (
        metadata.get("adk_app") == app_name
        and metadata.get("adk_user") == user_id
        and metadata.get("adk_session") == session_id
        and isinstance(metadata.get("last_update_time"), int | float)
    )
