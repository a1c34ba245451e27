"""pytest-benchmark view of the same workloads: kvsessions, the raw engine and the peers.

    python -m pytest benchmarks/ --benchmark-only -q

Each group (one operation on one store at one durability and size) holds the ``kvs`` and
``raw`` rows (and the peers' where they have the operation), at small sizes so the suite
runs in a minute or two; compare commits with ``--benchmark-save`` /
``--benchmark-compare``.  Outside the default test run (``testpaths = ["tests"]``).  For
the §8 ratios at full sizes, in fresh processes, use ``benchmarks/run.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import scenarios
from workloads import STORES, Workload, build_case, copy_store, manager

ROUNDS = 300  # one op per round: ~0.1-1 s per fsync-bound row
WARMUP_ROUNDS = 20
HISTORIES = [10, 1_000, 10_000]
PEERS = ["peer-agents", "peer-blob", "peer-diskcache"]
PEER_MODULES = {"peer-agents": "agents", "peer-blob": "orjson", "peer-diskcache": "diskcache"}

IMPLS = [
    (store, dur, impl)
    for store, dur in STORES
    for impl in (("kvs", "raw") if store != "memory" else ("kvs",))
]
IMPL_IDS = [f"{store}-{dur}-{impl}" for store, dur, impl in IMPLS]
# raw = the same records + kvsessions' decoders (§8's reference); rawjson = + plain orjson
READ_IMPLS = [("lmdb", "fast", "kvs"), ("lmdb", "fast", "raw"), ("lmdb", "fast", "rawjson"),
              ("sqlite", "fast", "kvs"), ("sqlite", "fast", "raw"),
              ("sqlite", "fast", "rawjson"), ("memory", "none", "kvs")]  # fmt: skip
READS = [("load", 100), ("load", 1_000), ("load_last", 10_000), ("messages_last", 10_000),
         ("list", 2_000)]  # fmt: skip


def _run(benchmark: Any, work: Workload, group: str, rounds: int = ROUNDS) -> None:
    benchmark.group = group
    benchmark.pedantic(work.op, rounds=rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)


def _only(works: dict[str, Workload]) -> Workload:
    (work,) = works.values()
    return work


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_append(benchmark: Any, tmp_path: Path, impl: tuple[str, str, str], history: int) -> None:
    """One message appended and saved, on a session with ``history`` messages."""
    store, durability, kind = impl
    work = _only(build_case("append", [kind], store, durability, tmp_path, history))
    try:
        _run(benchmark, work, f"append {store}/{durability} history={history}")
    finally:
        work.close()


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_create(benchmark: Any, tmp_path: Path, impl: tuple[str, str, str]) -> None:
    """One session created and saved (header + index entries)."""
    store, durability, kind = impl
    work = _only(build_case("create", [kind], store, durability, tmp_path, 0))
    try:
        _run(benchmark, work, f"create {store}/{durability}")
    finally:
        work.close()


@pytest.mark.parametrize(("op", "size"), READS, ids=[f"{op}-{size}" for op, size in READS])
@pytest.mark.parametrize("impl", READ_IMPLS, ids=[f"{s}-{i}" for s, _, i in READ_IMPLS])
def test_read(
    benchmark: Any, tmp_path: Path, impl: tuple[str, str, str], op: str, size: int
) -> None:
    """A load (all, or the last 20) of a ``size``-message session, or listing one user's 10
    sessions among ``size``; raw = the same records read and decoded with kvsessions'
    decoders, rawjson = with plain orjson into dicts."""
    store, durability, kind = impl
    work = _only(build_case(op, [kind], store, durability, tmp_path, size))
    try:
        _run(benchmark, work, f"{op} {store} size={size}")
    finally:
        work.close()


@pytest.mark.parametrize("impl", ["kvs", "raw"])
@pytest.mark.parametrize("store", ["lmdb", "sqlite"])
def test_archive_inactive(benchmark: Any, tmp_path: Path, store: str, impl: str) -> None:
    """archive_inactive(days=30) over 2,000 sessions, half inactive; raw = the same archive
    done on the engine directly.  Each round works on a fresh copy of the seeded store."""
    template = tmp_path / "template"
    archived = scenarios.seed_inactive(store, "fast", template, 2_000)
    rounds = iter(range(1_000))
    opened: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        for previous in opened:
            previous.close()
        where = tmp_path / f"round{next(rounds)}"
        copy_store(store, template, where)
        opened[:] = [
            manager(store, "fast", where)
            if impl == "kvs"
            else scenarios.raw_archiver(store, "fast", where)
        ]
        return (), {}

    def archive() -> int:
        if impl == "kvs":
            return opened[0].archive_inactive(days=scenarios.INACTIVE_DAYS)  # type: ignore[no-any-return]
        return opened[0].archive(scenarios.cutoff_us())  # type: ignore[no-any-return]

    benchmark.group = f"archive_inactive {store} 2,000 sessions"
    result = benchmark.pedantic(archive, setup=setup, rounds=5, iterations=1)
    for previous in opened:
        previous.close()
    assert result == archived


@pytest.mark.parametrize("op", ["lost", "lost_window"])
@pytest.mark.parametrize("impl", ["lmdb-kvs", "lmdb-raw", "sqlite-kvs", "sqlite-raw", *PEERS])
def test_two_processes(benchmark: Any, tmp_path: Path, impl: str, op: str) -> None:
    """2 processes x 50 ``get_session -> add_message -> save`` on one session (one round,
    process start-up included); ``lost_window`` loads the header only (``messages=0``).
    kvsessions and the raw engine must keep all 100."""
    store, _, kind = impl.partition("-") if not impl.startswith("peer-") else (impl, "", impl)
    if impl.startswith("peer-"):
        if op == "lost_window":
            pytest.skip("peers have no header-only load")
        pytest.importorskip(PEER_MODULES[impl])
    spec = {"store": store, "durability": "fast", "impls": [kind], "path": str(tmp_path),
            "appends": 50, "op": op}  # fmt: skip
    cycle = "header only" if op == "lost_window" else "whole session"
    benchmark.group = f"2 processes x 50 appends, one session, {cycle} loaded"
    result = benchmark.pedantic(scenarios.lost_writes, args=(spec,), rounds=1, iterations=1)
    kept = result[kind]["kept"]
    benchmark.extra_info["kept"] = kept
    if not impl.startswith("peer-"):
        assert kept == 100


@pytest.mark.parametrize("history", [10, 1_000])
@pytest.mark.parametrize("peer", PEERS)
def test_peer_append(benchmark: Any, tmp_path: Path, peer: str, history: int) -> None:
    """A peer's append + save at ``history`` messages (compare with test_append's groups)."""
    pytest.importorskip(PEER_MODULES[peer])
    work = _only(build_case("append", [peer], peer, "-", tmp_path, history))
    try:
        _run(benchmark, work, f"append peers history={history}", rounds=100)
    finally:
        work.close()


@pytest.mark.parametrize(("op", "size"), [("load", 100), ("load", 1_000), ("load_last", 10_000)])
@pytest.mark.parametrize("peer", PEERS)
def test_peer_read(benchmark: Any, tmp_path: Path, peer: str, op: str, size: int) -> None:
    """A peer's load of all (or the last 20) of a ``size``-message session."""
    pytest.importorskip(PEER_MODULES[peer])
    work = _only(build_case(op, [peer], peer, "-", tmp_path, size))
    try:
        _run(benchmark, work, f"{op} peers size={size}", rounds=100)
    finally:
        work.close()


def test_sizes_match(tmp_path: Path) -> None:
    """kvsessions and the raw reader see the same records (else the read ratios mean nothing)."""
    works = build_case("load", ["raw", "rawjson", "kvs"], "lmdb", "fast", tmp_path, 250)
    try:
        assert works["raw"].records == works["rawjson"].records == works["kvs"].records == 251
        assert works["raw"].op()[1] == works["kvs"].op().messages  # the same decoder's output
    finally:
        for work in works.values():
            work.close()
