"""The conformance suite: every behaviour kvsessions promises, for any store.

Subclass :class:`StoreConformance` in a test module and define the ``open_store`` fixture:
a factory that returns a store object over the *same* underlying storage each time it is
called (two calls model two processes or workers sharing one database).  pytest then runs
every test against both the blocking and the asyncio manager::

    from kvsessions.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def open_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "db")

A user's whole-session store cannot promise what the key-value core does (merging
concurrent appends, versions); set ``kv_semantics = False`` and those tests are skipped.
A store that keeps a TTL by the managers' clock can also define ``open_ttl_store``, a
factory taking the ttl in seconds (the TTL tests are skipped without it).  Tests move
time with :class:`ManualClock`.  Requires pytest.
"""

from .conformance import ManualClock, StoreConformance, SyncView

__all__ = ["ManualClock", "StoreConformance", "SyncView"]
