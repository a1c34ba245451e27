"""The built-in local stores by name, for tests parametrised over them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvsessions import LMDBSessionStore, MemorySessionStore, SQLiteSessionStore

LOCAL_KINDS = ["memory", "lmdb", "sqlite"]


def local_store(kind: str, path: Path) -> Any:
    """A new ``kind`` store ("memory", "lmdb" or "sqlite") under ``path``, durability fast."""
    if kind == "memory":
        return MemorySessionStore()
    if kind == "lmdb":
        return LMDBSessionStore(path / "s.lmdb", durability="fast")
    return SQLiteSessionStore(path=path / "s.db", durability="fast")
