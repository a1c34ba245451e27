"""The conformance suite over every store kind (each test also runs on both managers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kvsessions import LMDBSessionStore, MemorySessionStore, SessionStore, SQLiteSessionStore
from kvsessions.testing import StoreConformance

from .custom_store import DictStore


class TestMemory(StoreConformance):
    @pytest.fixture
    def open_store(self) -> Callable[[], SessionStore]:
        store = MemorySessionStore()
        return lambda: store

    @pytest.fixture
    def open_ttl_store(self) -> Callable[[float], SessionStore]:
        return lambda ttl: MemorySessionStore(ttl=ttl)


class TestLMDB(StoreConformance):
    @pytest.fixture(params=["full", "fast"])
    def open_store(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Callable[[], SessionStore]:
        return lambda: LMDBSessionStore(tmp_path / "s.lmdb", durability=request.param)

    @pytest.fixture
    def open_ttl_store(self, tmp_path: Path) -> Callable[[float], SessionStore]:
        return lambda ttl: LMDBSessionStore(tmp_path / "ttl.lmdb", ttl=ttl)


class TestSQLite(StoreConformance):
    @pytest.fixture(params=["full", "fast"])
    def open_store(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Callable[[], SessionStore]:
        return lambda: SQLiteSessionStore(
            path=tmp_path / "s.db", table_name="chat", durability=request.param
        )

    @pytest.fixture
    def open_ttl_store(self, tmp_path: Path) -> Callable[[float], SessionStore]:
        return lambda ttl: SQLiteSessionStore(tmp_path / "ttl.db", ttl=ttl)


class TestCustomStore(StoreConformance):
    kv_semantics = False

    @pytest.fixture
    def open_store(self) -> Callable[[], SessionStore]:
        store = DictStore()
        return lambda: store
