"""OpenAI Agents SDK sessions stored in kvsessions: :class:`KVSession`.

The switch is one line: pass a ``KVSession`` where you would pass the SDK's ``SQLiteSession``::

    session = KVSession("conv_123", store=LMDBSessionStore("sessions.lmdb"))
    result = await Runner.run(agent, "Hello", session=session)

Each SDK item becomes one kvsessions message of the kvsessions session ``session_id``.
The message's content is the item itself, so it comes back exactly as it was added,
whatever keys it has (``role``, ``content``, ``timestamp``, ``seq``... collide with
nothing); its role is the item's ``role`` (``"user"``, ``"assistant"``...) or else its
``type`` (``"function_call"``, ``"function_call_output"``...), and a tool output also
carries its ``call_id`` as the ``tool_call_id`` extra, so kvsessions' own
``pair_safe`` windows work on these histories.  ``get_items(limit)`` reads a history
window (never the whole history), ``pop_item`` is one atomic commit, and the
kvsessions session is created by the first ``add_items``.

Needs ``pip install kvsessions[openai-agents]`` (openai-agents 0.8 or later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import keys
from ..async_api import AsyncSessionManager
from ..errors import (
    ConflictError,
    InvalidSessionError,
    InvalidValueError,
    SessionExistsError,
    SessionNotFoundError,
    StoreConfigError,
)
from ..model import Message, Session
from ..stores import KVSessionStore, SessionStore
from ..values import check_json_value

try:
    from agents.memory import SessionSettings
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kvsessions.integrations.openai_agents needs the OpenAI Agents SDK 0.8 or later "
        f"({exc}): pip install -U 'kvsessions[openai-agents]'"
    ) from exc

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["DEFAULT_USER_ID", "KVSession"]

T = TypeVar("T")

#: The kvsessions ``user_id`` of the sessions a ``KVSession`` creates, unless given.
DEFAULT_USER_ID = "openai-agents"

_ATTEMPTS = 20  # add_items re-reads when another writer created or cleared the session
_SHARED = "_kvsessions_openai_agents_manager"  # the store's shared manager (see _manager_for)


class KVSession:
    """An OpenAI Agents SDK ``Session`` kept in any kvsessions store.

    ``store``: a kvsessions store (``LMDBSessionStore(...)``, ``RedisSessionStore(...)``,
    ...); every ``KVSession`` on the same store object shares one ``AsyncSessionManager``
    (one worker pool, commits of all conversations grouped).  Or ``manager``: an
    ``AsyncSessionManager`` of your own.  Give exactly one; closing it (or the store)
    stays yours to do.  ``user_id``: the kvsessions user the session is created under
    (its index lists them).  ``session_settings``: the SDK's ``SessionSettings`` (or a
    dict of its fields); its ``limit`` applies when ``get_items`` is called without one.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        *,
        store: SessionStore | None = None,
        manager: AsyncSessionManager | None = None,
        user_id: str = DEFAULT_USER_ID,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        keys.check_id(session_id, "session_id")
        keys.check_id(user_id, "user_id")
        self.session_id = session_id
        self.user_id = user_id
        self.session_settings = _settings(session_settings)
        self._manager = _manager_for(store, manager)
        # Built-in stores read windows and pop atomically; a user's whole-session store
        # can only load and save whole sessions.
        self._windowed = isinstance(self._manager.store, KVSessionStore)

    @property
    def manager(self) -> AsyncSessionManager:
        """The ``AsyncSessionManager`` this session reads and writes through."""
        return self._manager

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The history, oldest first: all of it, or the newest ``limit`` items.

        Without ``limit``, ``session_settings.limit`` applies.  ``0`` returns ``[]``; a
        negative limit returns everything (as the SDK's ``SQLiteSession`` does).
        """
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise InvalidSessionError(f"limit must be None or an int, got {limit!r}")
            if limit == 0:
                return []
            if limit < 0:
                limit = None
        if self._windowed:
            messages = await self._manager.get_messages(self.session_id, limit)
        else:
            stored = await self._manager.get_session(self.session_id)
            messages = [] if stored is None else stored.messages
            if limit is not None:
                messages = messages[-limit:]
        return [message.content for message in messages]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in one atomic commit (creating the session if needed).

        Every item must be a JSON-shaped dict; otherwise ``InvalidValueError`` is raised
        and nothing is written.  Concurrent calls all keep their items.
        """
        messages = _messages(items)
        if messages:
            await _settled(self._append(messages))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (``None`` if there is none); atomic."""
        return await _settled(self._pop())

    async def clear_session(self) -> None:
        """Delete every item: the kvsessions session goes, with its index entries.

        The next ``add_items`` creates it again.  Metadata or state you attached to it
        through kvsessions' own API go with it.
        """
        await _settled(self._manager.delete(self.session_id))

    async def _append(self, messages: list[Message]) -> None:
        for _ in range(_ATTEMPTS):
            if self._windowed:  # the header only: an append never reads the history
                stored = await self._manager.get_session(self.session_id, messages=0)
            else:
                stored = await self._manager.get_session(self.session_id)
            if stored is None:
                stored = Session(session_id=self.session_id, user_id=self.user_id)
            stored.messages.extend(messages)
            try:
                await self._manager.save(stored)
                return
            except (SessionExistsError, SessionNotFoundError):
                continue  # created or cleared by another writer since we looked: look again
        raise ConflictError(
            f"session {self.session_id!r} was created and cleared by other writers "
            f"{_ATTEMPTS} times while adding items; retry later"
        )

    async def _pop(self) -> TResponseInputItem | None:
        try:
            message = await self._manager.pop_message(self.session_id)
        except SessionNotFoundError:
            return None  # never written to (or cleared): empty
        return None if message is None else message.content

    def __repr__(self) -> str:
        return (
            f"KVSession({self.session_id!r}, store={self._manager.store!r}, "
            f"user_id={self.user_id!r})"
        )


def _settings(value: SessionSettings | dict[str, Any] | None) -> SessionSettings:
    if value is None:
        return SessionSettings()
    if isinstance(value, SessionSettings):
        return value
    if isinstance(value, dict):
        return SessionSettings(**value)
    raise InvalidSessionError(
        f"session_settings must be a SessionSettings, a dict or None, got {type(value).__name__}"
    )


def _manager_for(
    store: SessionStore | None, manager: AsyncSessionManager | None
) -> AsyncSessionManager:
    """The given manager, or the one every ``KVSession`` on ``store`` shares."""
    if (store is None) == (manager is None):
        raise StoreConfigError(
            "KVSession needs exactly one of store=... (e.g. LMDBSessionStore('sessions.lmdb')) "
            "or manager=... (an AsyncSessionManager)"
        )
    if manager is not None:
        if not isinstance(manager, AsyncSessionManager):
            raise StoreConfigError(
                f"manager must be an AsyncSessionManager (the SDK is asyncio), got "
                f"{type(manager).__name__}; or pass the store itself as store=..."
            )
        return manager
    if not isinstance(store, SessionStore):
        raise StoreConfigError(
            f"store must be a kvsessions SessionStore, got {type(store).__name__}"
        )
    # Kept on the store, so it lives (and is collected) with it: one worker pool however
    # many conversations, instead of a pool per KVSession.
    namespace = getattr(store, "__dict__", None)
    if namespace is None:  # a store with __slots__: a manager of its own
        return AsyncSessionManager(store)
    shared = namespace.get(_SHARED)
    if shared is None:
        shared = namespace.setdefault(_SHARED, AsyncSessionManager(store))
    return shared


def _messages(items: Iterable[Any]) -> list[Message]:
    """The items as messages, all checked before anything is written."""
    if isinstance(items, dict) or not isinstance(items, Iterable):
        raise InvalidValueError(
            f"add_items takes a list of items, got {type(items).__name__}; wrap one item in a list"
        )
    messages = []
    for position, item in enumerate(items):
        where = f"session item {position}"
        if type(item) is not dict:
            raise InvalidValueError(
                f"{where} is a {type(item).__name__}; items must be dicts (TResponseInputItem); "
                "convert a model object with .model_dump(exclude_unset=True)"
            )
        check_json_value(item, where)
        role = item.get("role")
        if type(role) is not str or not role:
            role = item.get("type")
            if type(role) is not str or not role:
                role = "item"
        extras: dict[str, Any] = {}
        call_id, kind = item.get("call_id"), item.get("type")
        if type(call_id) is str and type(kind) is str and kind.endswith("_output"):
            extras["tool_call_id"] = call_id
        messages.append(Message(role=role, content=item, extras=extras))
    return messages


async def _settled(write: Awaitable[T]) -> T:
    """Run ``write`` to its end even if the caller is cancelled meanwhile.

    The cancellation is re-raised once the write has finished, so a cancelled caller
    knows its write either happened whole or was never started, never "maybe".
    """
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            raise  # the write itself was cancelled (e.g. the loop is shutting down)
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                continue  # cancelled again: still let the write finish
        if not task.cancelled():
            task.exception()  # retrieved: the caller hears of the cancellation instead
        raise
