"""kvsessions: durable, fast conversation sessions for AI-agent code.

Everything public is re-exported here; the modules behind it are implementation.
"""

from .admin import MigrationReport, copy_store, migrate
from .async_api import AsyncSessionManager
from .errors import (
    ConflictError,
    CorruptRecordError,
    InvalidIdError,
    InvalidSessionError,
    InvalidValueError,
    KVSessionsError,
    SchemaVersionError,
    SessionArchivedError,
    SessionExistsError,
    SessionNotFoundError,
    StoreClosedError,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
    UnsupportedOperationError,
)
from .model import Message, Session, SessionPage, SessionStatus
from .stores import (
    KVSessionStore,
    LMDBSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    SQLiteSessionStore,
)
from .sync_api import SessionManager
from .transfer import ImportReport
from .urls import open_store

__all__ = [
    "AsyncSessionManager",
    "ConflictError",
    "ImportReport",
    "CorruptRecordError",
    "InvalidIdError",
    "InvalidSessionError",
    "InvalidValueError",
    "KVSessionStore",
    "KVSessionsError",
    "LMDBSessionStore",
    "MemorySessionStore",
    "Message",
    "MigrationReport",
    "RedisSessionStore",
    "SQLiteSessionStore",
    "SchemaVersionError",
    "Session",
    "SessionArchivedError",
    "SessionExistsError",
    "SessionManager",
    "SessionNotFoundError",
    "SessionPage",
    "SessionStatus",
    "SessionStore",
    "StoreClosedError",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
    "UnsupportedOperationError",
    "__version__",
    "copy_store",
    "migrate",
    "open_store",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("kvsessions")
        except PackageNotFoundError:  # running from a source tree without install
            return "0.0.0+unknown"
    raise AttributeError(f"module 'kvsessions' has no attribute {name!r}")
