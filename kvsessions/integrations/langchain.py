"""LangChain chat history on any kvsessions store: :class:`KVChatMessageHistory`.

The switch from LangChain's own histories is one line::

    RunnableWithMessageHistory(
        chain, lambda session_id: KVChatMessageHistory(session_id, store=store), ...
    )

Each LangChain message is one kvsessions message, so an append writes only the new
messages, whatever the length of the history.  The kvsessions ``role`` comes from the
message type (human → ``"user"``, ai → ``"assistant"``, ``"system"``, ``"tool"``,
``"function"``; a ``ChatMessage`` keeps its own role), ``content`` is the message's
content, and the rest of what ``message_to_dict`` gives is kept in the extra
``"langchain"`` (``{"type": ..., "data": {...}}`` without the content), so
``messages_from_dict`` rebuilds every message exactly: tool calls, usage metadata,
``additional_kwargs``, ids, multimodal content lists.  Messages that other kvsessions
code wrote (no ``"langchain"`` extra) are read by their role.

The blocking methods run on a :class:`~kvsessions.SessionManager`; the ``a*`` methods
on an :class:`~kvsessions.AsyncSessionManager` (native asyncio on Redis, a bounded
worker pool for LMDB/SQLite), never on LangChain's executor wrappers.  All histories on
one store share one blocking manager and one asyncio manager per event loop, so
concurrent saves from many conversations are group-committed.  The ``a*`` methods convert
more than a few messages in a worker thread, so a long history never stalls the loop.

A user's own whole-session store loads and saves whole sessions, so two overlapping
writes of one session would keep only the second: there, every add and clear of a
session through the histories of this process takes its turn (:class:`_SessionTurns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from .. import keys
from ..async_api import AsyncSessionManager
from ..errors import (
    CorruptRecordError,
    InvalidSessionError,
    SessionExistsError,
    SessionNotFoundError,
    StoreConfigError,
    UnsupportedOperationError,
)
from ..model import Message, Session
from ..stores import KVSessionStore, SessionStore
from ..sync_api import SessionManager
from ..turns import Turns
from ..values import check_json_value

__all__ = ["EXTRA", "KVChatMessageHistory", "from_langchain", "to_langchain"]

T = TypeVar("T")
L = TypeVar("L")

#: The message extra that holds the rest of ``message_to_dict`` (all but the content).
EXTRA = "langchain"
DEFAULT_USER_ID = "langchain"
_ALL_SEQS = (0, 2**63 - 1)  # a replace_messages range that covers every stored seq
_ATTEMPTS = 5  # creating a session another writer creates (or deletes) at the same time
# The a* methods convert more messages than this in a thread: a hop costs about 0.1 ms,
# a message 10-20 µs, so up to 32 stay on the loop (under 1 ms) and longer ones move.
_OFF_LOOP = 32
_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (HumanMessage, "user"),
    (AIMessage, "assistant"),
    (SystemMessage, "system"),
    (ToolMessage, "tool"),
    (FunctionMessage, "function"),
)
_REBUILT_TYPES = frozenset(  # what messages_from_dict rebuilds
    (
        *("human", "ai", "system", "chat", "function", "tool", "remove"),
        *("AIMessageChunk", "HumanMessageChunk", "SystemMessageChunk"),
        *("ChatMessageChunk", "FunctionMessageChunk", "ToolMessageChunk"),
    )
)


class KVChatMessageHistory(BaseChatMessageHistory):
    """A LangChain ``BaseChatMessageHistory`` kept in a kvsessions store.

    ``session_id`` names the conversation (the kvsessions session id).  ``store`` is any
    kvsessions store (LMDB, SQLite, Redis, memory or your own ``SessionStore``).  The
    session is created on the first add, owned by ``user_id`` (which only matters then:
    it makes ``manager.get_sessions_for_user(user_id)`` list it).  ``window=N`` makes
    ``messages`` the newest N messages, widened so it never starts on a tool result cut
    off from its tool call (built-in stores only); adds and ``clear`` still act on the
    whole history.  ``clear`` removes the messages but keeps the session, its metadata
    and state.
    """

    def __init__(
        self,
        session_id: str,
        store: SessionStore,
        *,
        user_id: str = DEFAULT_USER_ID,
        window: int | None = None,
    ) -> None:
        super().__init__()
        keys.check_id(session_id, "session_id")
        keys.check_id(user_id, "user_id")
        if not isinstance(store, SessionStore):
            raise StoreConfigError(
                f"store must be a kvsessions store (e.g. LMDBSessionStore(path)), got "
                f"{type(store).__name__}"
            )
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 0
        ):
            raise InvalidSessionError(f"window must be None or an int >= 0, got {window!r}")
        if window is not None and not isinstance(store, KVSessionStore):
            raise UnsupportedOperationError(
                f"window={window} reads only the newest messages, which needs a built-in "
                f"store; {type(store).__name__} is a whole-session store, so use window=None"
            )
        self.session_id = session_id
        self.store = store
        self.user_id = user_id
        self.window = window

    # -- the BaseChatMessageHistory interface ------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The stored messages, oldest first (the newest ``window`` if one is set)."""
        return _to_messages(_run(_sync_manager(self.store), self._read()), self.session_id)

    async def aget_messages(self) -> list[BaseMessage]:
        """The stored messages, oldest first (the newest ``window`` if one is set)."""
        stored = await _arun(_async_manager(self.store), self._read())
        return await _converted(partial(_to_messages, stored, self.session_id), len(stored))

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one atomic commit (creating the session on first use)."""
        records = _records(list(messages))
        if records:
            with self._turn():
                _run(_sync_manager(self.store), self._append(records))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one atomic commit (creating the session on first use)."""
        messages = list(messages)
        records = await _converted(partial(_records, messages), len(messages))
        if records:
            async with self._aturn():
                await _arun(_async_manager(self.store), self._append(records))

    def clear(self) -> None:
        """Delete every message of the session atomically; keep the session itself."""
        with self._turn():
            _run(_sync_manager(self.store), self._clear())

    async def aclear(self) -> None:
        """Delete every message of the session atomically; keep the session itself."""
        async with self._aturn():
            await _arun(_async_manager(self.store), self._clear())

    def __repr__(self) -> str:
        window = "" if self.window is None else f", window={self.window}"
        return (
            f"KVChatMessageHistory({self.session_id!r}, store={self.store!r}, "
            f"user_id={self.user_id!r}{window})"
        )

    # -- the operations, written once as steps for either manager ----------------------

    def _turn(self) -> contextlib.AbstractContextManager[None]:
        """Around a blocking write: nothing for built-in stores (their commits merge)."""
        if isinstance(self.store, KVSessionStore):
            return contextlib.nullcontext()
        return _session_turns(self.store).hold(self.session_id)

    def _aturn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around an asyncio write: nothing for built-in stores (their commits merge)."""
        if isinstance(self.store, KVSessionStore):
            return contextlib.nullcontext()
        return _session_turns(self.store).ahold(self.session_id)

    def _read(self) -> _Steps[list[Message]]:
        if isinstance(self.store, KVSessionStore):
            pair_safe = {"pair_safe": self.window is not None}
            stored = yield _Step("get_messages", (self.session_id, self.window), pair_safe)
        else:
            session = yield _Step("get_session", (self.session_id,))
            stored = session.messages if session is not None else []
        return stored

    def _append(self, records: list[Message]) -> _Steps[None]:
        # A built-in store loads only the header (messages=0) and appends after whatever
        # is stored, merging with concurrent writers; a new session may meet another
        # writer creating it (or deleting it) at the same moment: then load and go again.
        window = {"messages": 0} if isinstance(self.store, KVSessionStore) else {}
        for attempt in range(_ATTEMPTS):
            session = yield _Step("get_session", (self.session_id,), window)
            if session is None:
                session = Session(session_id=self.session_id, user_id=self.user_id)
            session.messages.extend(records)
            try:
                yield _Step("save", (session,))
                return
            except (SessionExistsError, SessionNotFoundError):
                if attempt == _ATTEMPTS - 1:
                    raise

    def _clear(self) -> _Steps[None]:
        with contextlib.suppress(SessionNotFoundError):  # nothing stored: nothing to clear
            yield _Step("replace_messages", (self.session_id, *_ALL_SEQS, []))


# -- conversion ------------------------------------------------------------------------


def _records(messages: list[BaseMessage]) -> list[Message]:
    return [from_langchain(message, f"message {i}") for i, message in enumerate(messages)]


def _to_messages(stored: list[Message], session_id: str) -> list[BaseMessage]:
    return [to_langchain(message, session_id) for message in stored]


async def _converted(convert: Callable[[], T], count: int) -> T:
    """``convert()`` on the loop for up to ``_OFF_LOOP`` messages, else in a thread."""
    return convert() if count <= _OFF_LOOP else await asyncio.to_thread(convert)


def from_langchain(message: BaseMessage, where: str = "message") -> Message:
    """The kvsessions :class:`~kvsessions.Message` that stores a LangChain message.

    Raises ``InvalidValueError`` if a part of it (e.g. a tool artifact) is not
    JSON-shaped, and ``InvalidSessionError`` for what LangChain could not rebuild.
    """
    if not isinstance(message, BaseMessage):
        raise InvalidSessionError(
            f"{where}: a chat history stores LangChain messages (BaseMessage), got "
            f"{type(message).__name__}"
        )
    dumped = message_to_dict(message)
    data = dict(dumped["data"])
    content = data.pop("content")
    kind = dumped["type"]
    label = f"{where} ({kind})"
    check_json_value(content, f"{label} content")
    check_json_value(data, label)
    if kind not in _REBUILT_TYPES:  # a message class of the user's own: can it come back?
        try:
            messages_from_dict([dumped])
        except (ValueError, TypeError) as exc:
            raise InvalidSessionError(
                f"{label}: LangChain's messages_from_dict cannot rebuild this message type, "
                f"so it would not come back from storage ({exc}); store a standard message "
                "type (HumanMessage, AIMessage, ChatMessage, ...)"
            ) from None
    return Message(
        role=_role(message), content=content, extras={EXTRA: {"type": kind, "data": data}}
    )


def to_langchain(message: Message, session_id: str = "?") -> BaseMessage:
    """The LangChain message a stored kvsessions message stands for.

    Messages written by :class:`KVChatMessageHistory` come back exactly; others are
    built from their role (``"user"`` → ``HumanMessage``, ``"assistant"`` →
    ``AIMessage``, ``"system"``, ``"tool"`` with its ``tool_call_id`` extra, other
    roles → ``ChatMessage``), their extras becoming ``additional_kwargs``.
    """
    stored = message.extras.get(EXTRA)
    if stored is None:
        return _foreign(message)
    try:
        data = {**stored["data"], "content": message.content}
        return messages_from_dict([{"type": stored["type"], "data": data}])[0]
    except (KeyError, TypeError, ValueError) as exc:  # (pydantic's errors are ValueErrors)
        raise CorruptRecordError(
            f"message {message.seq} of session {session_id!r} has a {EXTRA!r} extra that "
            f"LangChain cannot rebuild ({type(exc).__name__}: {str(exc)[:200]}); fix it with "
            "manager.update_message() or remove it with manager.delete_message()"
        ) from exc


def _role(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role if isinstance(message.role, str) and message.role else "chat"
    for cls, role in _ROLES:
        if isinstance(message, cls):
            return role
    return message.type or "message"


def _foreign(message: Message) -> BaseMessage:
    content: Any = message.content
    if not isinstance(content, str) and not (
        isinstance(content, list) and all(isinstance(part, str | dict) for part in content)
    ):
        content = json.dumps(content, ensure_ascii=False)
    extras = dict(message.extras)
    role = message.role
    if role in ("user", "human"):
        return HumanMessage(content=content, additional_kwargs=extras)
    if role in ("assistant", "ai"):
        return AIMessage(content=content, additional_kwargs=extras)
    if role == "system":
        return SystemMessage(content=content, additional_kwargs=extras)
    if role == "tool":
        call_id = extras.pop("tool_call_id", "")
        return ToolMessage(content=content, tool_call_id=str(call_id), additional_kwargs=extras)
    return ChatMessage(role=role, content=content, additional_kwargs=extras)


# -- driving the steps with either manager ---------------------------------------------


class _Step:
    """Ask the driver for ``manager.<method>(*args, **kwargs)``; its result is sent back
    (its kvsessions error thrown back) into the steps."""

    __slots__ = ("args", "kwargs", "method")

    def __init__(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> None:
        self.method, self.args, self.kwargs = method, args, kwargs or {}


_Steps = Generator[_Step, Any, T]


def _run(manager: SessionManager, steps: _Steps[T]) -> T:
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(answer) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        try:
            answer, error = getattr(manager, step.method)(*step.args, **step.kwargs), None
        except Exception as exc:
            answer, error = None, exc


async def _arun(manager: AsyncSessionManager, steps: _Steps[T]) -> T:
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(answer) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        try:
            answer, error = await getattr(manager, step.method)(*step.args, **step.kwargs), None
        except Exception as exc:
            answer, error = None, exc


# -- the managers every history on a store shares --------------------------------------

_lock = threading.Lock()
_SYNC_ATTR = "_kvsessions_langchain_manager"
_ASYNC_ATTR = "_kvsessions_langchain_async_managers"
_TURNS_ATTR = "_kvsessions_langchain_turns"


def _sync_manager(store: SessionStore) -> SessionManager:
    manager = store.__dict__.get(_SYNC_ATTR)
    if manager is None:
        with _lock:
            manager = store.__dict__.get(_SYNC_ATTR)
            if manager is None:
                manager = store.__dict__[_SYNC_ATTR] = SessionManager(store)
    return manager


def _async_manager(store: SessionStore) -> AsyncSessionManager:
    # One per event loop: a manager's group commit belongs to the loop that runs it.  It
    # goes (with its worker pool) when the loop is garbage.
    loop = asyncio.get_running_loop()
    with _lock:
        per_loop = store.__dict__.get(_ASYNC_ATTR)
        if per_loop is None:
            per_loop = store.__dict__[_ASYNC_ATTR] = weakref.WeakKeyDictionary()
        manager = per_loop.get(loop)
        if manager is None:
            manager = per_loop[loop] = AsyncSessionManager(store)
    return manager


def _session_turns(store: SessionStore) -> _SessionTurns:
    turns = store.__dict__.get(_TURNS_ATTR)
    if turns is None:
        with _lock:
            turns = store.__dict__.setdefault(_TURNS_ATTR, _SessionTurns())
    return turns


# -- one write of a session at a time on a user's whole-session store ------------------


class _SessionTurns:
    """Writes of one session id through every history on a store, in this process, one
    at a time, whether from threads or from tasks on any event loop.

    A thread lock per session id is what is held; threads wait on it.  Tasks first queue
    on their loop's lock (so only the first in line waits), which then takes the thread
    lock without blocking the loop: at once if it is free, else polling every few ms
    while a thread or another loop's task holds it.
    """

    def __init__(self) -> None:
        self._threads: Turns[threading.Lock] = Turns(threading.Lock)
        self._tasks: Turns[asyncio.Lock] = Turns(asyncio.Lock)
        self._holders: dict[str, int] = {}  # session id -> thread (or loop thread) holding it

    @contextlib.contextmanager
    def hold(self, session_id: str) -> Iterator[None]:
        """Hold the session's turn from blocking code."""
        with _entered(self._threads, session_id) as lock:
            if not lock.acquire(blocking=False):
                if self._holders.get(session_id) == threading.get_ident():
                    raise UnsupportedOperationError(
                        f"session {session_id!r} is being written by a task of the event "
                        "loop this blocking call runs on, which cannot go on until the call "
                        "returns; in async code use aadd_messages / aclear"
                    )
                lock.acquire()
            with self._held(session_id, lock):
                yield

    @contextlib.asynccontextmanager
    async def ahold(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session's turn from a task."""
        with _entered(self._tasks, (asyncio.get_running_loop(), session_id)) as queue:
            async with queue:
                with _entered(self._threads, session_id) as lock:
                    pause = 0.0005
                    while not lock.acquire(blocking=False):
                        await asyncio.sleep(pause)
                        pause = min(2 * pause, 0.01)
                    with self._held(session_id, lock):
                        yield

    @contextlib.contextmanager
    def _held(self, session_id: str, lock: threading.Lock) -> Iterator[None]:
        """Record the holder while the acquired ``lock`` is held; release it after."""
        self._holders[session_id] = threading.get_ident()
        try:
            yield
        finally:
            del self._holders[session_id]
            lock.release()


@contextlib.contextmanager
def _entered(turns: Turns[L], key: Any) -> Iterator[L]:
    """The lock ``turns`` keeps for ``key`` while the block runs."""
    lock = turns.enter(key)
    try:
        yield lock
    finally:
        turns.leave(key)
