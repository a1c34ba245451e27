"""Store constructors refuse settings they cannot honour with ``StoreConfigError``
(not the builtin ``OverflowError`` / ``ValueError`` the engine would raise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvsessions import LMDBSessionStore, MemorySessionStore, SQLiteSessionStore, StoreConfigError
from kvsessions.urls import open_store


@pytest.mark.parametrize("ttl", [float("inf"), float("nan"), 1e20, 0, -1, "7d", True])
def test_ttl_out_of_range(ttl: Any, tmp_path: Path) -> None:
    for make in (
        lambda: MemorySessionStore(ttl=ttl),
        lambda: LMDBSessionStore(tmp_path / "s.lmdb", ttl=ttl),
        lambda: SQLiteSessionStore(tmp_path / "s.db", ttl=ttl),
    ):
        with pytest.raises(StoreConfigError, match="ttl"):
            make()


def test_ttl_in_a_url_too_large() -> None:
    with pytest.raises(StoreConfigError, match="ttl"):
        open_store("memory://?ttl=" + "9" * 400)


@pytest.mark.parametrize("map_size", [2**70, -1, 0, 1.5, True])
def test_lmdb_map_size_out_of_range(map_size: Any, tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="map_size"):
        LMDBSessionStore(tmp_path / "s.lmdb", map_size=map_size)


def test_lmdb_map_size_in_a_url_too_large(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="map_size"):
        open_store(f"lmdb:{tmp_path / 's.lmdb'}?map_size=99999999TiB")


def test_lmdb_path_with_nul(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="NUL"):
        LMDBSessionStore(str(tmp_path / "x\0y"))
    with pytest.raises(StoreConfigError, match="NUL"):
        open_store(f"lmdb:{tmp_path}/x%00y")
    assert not list(tmp_path.iterdir())  # nothing created


@pytest.mark.parametrize("timeout", ["x", float("inf"), float("nan"), -1, True])
def test_sqlite_timeout_out_of_range(timeout: Any, tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="timeout"):
        SQLiteSessionStore(tmp_path / "s.db", timeout=timeout)
    with pytest.raises(StoreConfigError, match="timeout"):
        open_store(f"sqlite:{tmp_path / 's.db'}?timeout=inf")


def test_an_existing_table_is_found_whatever_its_case(tmp_path: Path) -> None:
    """SQLite ignores case in table names, so ``create=False`` must too."""
    SQLiteSessionStore(tmp_path / "s.db", table_name="chat").close()
    store = open_store(f"sqlite:{tmp_path / 's.db'}?table=CHAT", create=False)
    store.close()
