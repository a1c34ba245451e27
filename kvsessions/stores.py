"""The stores users pick: the built-in ones, and :class:`SessionStore` for their own.

Built-in stores (memory, LMDB, SQLite) sit on the key-value layer and the shared core, so
they get per-message writes, merges, indexes and atomic commits.  A user's own store
subclasses :class:`SessionStore` and stores whole sessions its own way; the managers call
its four methods (sync or ``async def``, either works in both managers).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .backends.base import MAX_TTL, LocalBackend
from .backends.lmdb import DEFAULT_MAP_SIZE, LMDBBackend
from .backends.memory import MemoryBackend
from .backends.redis import DEFAULT_SHARDS, RedisBackend
from .backends.sqlite import SQLiteBackend
from .core import ensure_format
from .custom import CallBackend, StoreCallOperations
from .errors import SchemaVersionError, StoreConfigError
from .keys import STORE_FORMAT
from .model import Session, utcnow
from .operations import KVOperations

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "KVSessionStore",
    "LMDBSessionStore",
    "MemorySessionStore",
    "RedisSessionStore",
    "SQLiteSessionStore",
    "SessionStore",
]

DEFAULT_REDIS_PREFIX = "kvsessions:"  # RedisSessionStore's, and the CLI's for Redis URLs


class SessionStore:
    """Base class for your own session storage.

    Override ``save``, ``get``, ``delete`` and ``list_for_user``, as plain methods or as
    ``async def``; both managers accept either.  Optional: ``list_inactive(before)``
    (enables ``archive_inactive``) and ``clear()`` (enables ``clear_all``), and ``close()``.
    """

    def save(self, session: Session) -> Any:
        """Store the whole session (insert or replace)."""
        raise NotImplementedError(f"{type(self).__name__} must define save(self, session)")

    def get(self, session_id: str) -> Any:
        """Return the session, or ``None`` when there is none with this id."""
        raise NotImplementedError(f"{type(self).__name__} must define get(self, session_id)")

    def delete(self, session_id: str) -> Any:
        """Remove the session; return whether it existed (``None`` counts as yes)."""
        raise NotImplementedError(f"{type(self).__name__} must define delete(self, session_id)")

    def list_for_user(self, user_id: str) -> Any:
        """Return the user's sessions (an iterable of :class:`Session`)."""
        raise NotImplementedError(f"{type(self).__name__} must define list_for_user(self, user_id)")

    def close(self) -> Any:
        """Release resources; the default does nothing."""

    # -- how the managers drive this store (internal) --
    def _operations(self, clock: Callable[[], datetime]) -> Any:
        return StoreCallOperations(self, clock)

    @property
    def _backend(self) -> Any:
        backend = self.__dict__.get("_kvsessions_calls")
        if backend is None:
            backend = self.__dict__["_kvsessions_calls"] = CallBackend(self)
        return backend


class KVSessionStore(SessionStore):
    """A built-in store: a key-value backend driven by the shared session core.

    Its ``save/get/delete/list_for_user`` work directly (blocking), but use it through a
    ``SessionManager`` or ``AsyncSessionManager`` for the full API.
    """

    def __init__(self, backend: LocalBackend, ttl: float | None = None) -> None:
        self._kv = backend
        self._ttl_us = _ttl_micros(ttl)
        self._ops = KVOperations(utcnow, self._ttl_us)
        #: the stored key-layout version (older than STORE_FORMAT: needs ``migrate``)
        self.layout: int = backend.run(ensure_format(), write=True)

    @property
    def _backend(self) -> LocalBackend:
        return self._kv

    def _operations(self, clock: Callable[[], datetime]) -> KVOperations:
        if self.layout < STORE_FORMAT:
            raise SchemaVersionError(
                f"{self!r} has key layout {self.layout}, older than the {STORE_FORMAT} this "
                "kvsessions uses; upgrade it in place with `kvsessions migrate <store url>` "
                "(or kvsessions.migrate(store)), then open it again"
            )
        return KVOperations(clock, self._ttl_us)

    def _run(self, job: Any) -> Any:
        return self._kv.run(job.plan, write=job.write)

    def save(self, session: Session) -> Session:
        return self._run(self._ops.save(session, None))

    def get(self, session_id: str) -> Session | None:
        return self._run(self._ops.get(session_id))

    def delete(self, session_id: str) -> bool:
        return self._run(self._ops.delete(session_id))

    def list_for_user(self, user_id: str) -> list[Session]:
        return self._run(self._ops.for_user(user_id))

    def close(self) -> None:
        """Close the engine; using the store afterwards raises ``StoreClosedError``."""
        self._kv.close()

    @property
    def durability(self) -> str:
        """``"full"`` (survives power loss), ``"fast"`` (survives a crash) or ``"none"``."""
        return self._kv.durability

    def __repr__(self) -> str:
        where = getattr(self._kv, "path", None)
        return (
            f"{type(self).__name__}({str(where) + ', ' if where else ''}"
            f"durability={self.durability!r})"
        )


def _ttl_micros(ttl: float | None) -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        raise StoreConfigError(
            f"ttl must be a number of seconds above 0 and at most {MAX_TTL:,} (100 years), "
            f"or None for no expiry; got {ttl!r}"
        )
    return max(1, round(ttl * 1_000_000))


class MemorySessionStore(KVSessionStore):
    """Sessions in this process's memory: for tests and demos; nothing is persisted.

    ``ttl`` (seconds, on every local store): a session not saved for that long is gone
    for every read at once; ``manager.sweep()`` (or reading it) removes its records.
    """

    def __init__(self, *, ttl: float | None = None) -> None:
        super().__init__(MemoryBackend(), ttl)


class LMDBSessionStore(KVSessionStore):
    """Sessions in an LMDB environment (a directory): the embedded default.

    ``durability="full"`` fsyncs every commit (survives power loss); ``"fast"`` does not
    (survives a process crash).  ``map_size`` is the most the file may grow to.  ``ttl``:
    seconds after its last save at which a session expires (see ``MemorySessionStore``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.lmdb",
        *,
        durability: str = "full",
        map_size: int = DEFAULT_MAP_SIZE,
        ttl: float | None = None,
    ) -> None:
        super().__init__(LMDBBackend(path, durability=durability, map_size=map_size), ttl)

    @property
    def path(self) -> str:
        return str(self._kv.path)  # type: ignore[attr-defined]


class SQLiteSessionStore(KVSessionStore):
    """Sessions in one table of a SQLite database file (WAL mode).

    ``durability="full"`` is ``synchronous=FULL`` (survives power loss); ``"fast"`` is
    ``NORMAL`` (survives a process crash).  Several stores may share a file with different
    ``table_name``\\ s; SQLite ignores case in table names (``Chat`` and ``chat`` are one
    table), and names starting with ``sqlite_`` are SQLite's own.  ``timeout``: seconds a
    write waits for another writer's lock.  ``ttl``: as for ``MemorySessionStore``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.db",
        table_name: str = "sessions",
        *,
        durability: str = "full",
        timeout: float = 30.0,
        ttl: float | None = None,
    ) -> None:
        super().__init__(
            SQLiteBackend(path, table_name=table_name, durability=durability, timeout=timeout),
            ttl,
        )

    @property
    def path(self) -> str:
        return str(self._kv.path)  # type: ignore[attr-defined]


class RedisSessionStore(KVSessionStore):
    """Sessions in Redis or Redis Cluster; every session operation is one round trip.

    ``url``: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS,
    ``unix:///path/redis.sock``; IPv6 hosts in brackets), or ``redis+cluster://host:port``
    (``rediss+cluster://``) to open a Redis Cluster through any of its nodes.  ``prefix``
    starts every key this store writes, and ``clear_all`` deletes only those.  ``ttl``:
    seconds (1 ms to 100 years) after its last write at which a session expires (header,
    messages and index entries together); ``None`` keeps sessions forever.
    ``shards``: index shards (hash tags) sessions spread over; fixed per prefix.
    ``timeout``/``connect_timeout`` (seconds) bound how long an unreachable server takes
    to raise ``StoreUnavailableError``.  The key layout is in
    :mod:`kvsessions.backends.redis`.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = DEFAULT_REDIS_PREFIX,
        ttl: float | None = None,
        *,
        shards: int = DEFAULT_SHARDS,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        backend = RedisBackend(
            url,
            prefix=prefix,
            ttl=ttl,
            shards=shards,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self.prefix = prefix
        self.ttl = ttl
        super().__init__(backend)  # type: ignore[arg-type]

    def close(self) -> Any:
        """Close the connections (returns a coroutine inside the loop that used asyncio)."""
        return self._kv.close()

    def __repr__(self) -> str:
        kv: Any = self._kv
        kind = "cluster" if kv.cluster else "server"
        return f"RedisSessionStore({kind}={kv.address!r}, prefix={self.prefix!r}, ttl={self.ttl!r})"
