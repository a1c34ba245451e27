"""pytest-benchmark view of the same workloads: kvsessions and the raw engine side by side.

    python -m pytest benchmarks/ --benchmark-only -q

Each group (one operation on one store at one durability and history) holds the
``kvs`` and ``raw`` rows.  Outside the default test run (``testpaths = ["tests"]``).
For the §8 ratios in fresh processes use ``benchmarks/run.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from workloads import STORES, Workload, build

ROUNDS = 500  # one op per round: ~0.2-1 s per fsync-bound row
WARMUP_ROUNDS = 20
HISTORIES = [10, 1_000, 10_000]

IMPLS = [
    (store, dur, impl)
    for store, dur in STORES
    for impl in (("kvs", "raw") if store != "memory" else ("kvs",))
]
IMPL_IDS = [f"{store}-{dur}-{impl}" for store, dur, impl in IMPLS]


def _run(benchmark: Any, work: Workload, group: str) -> None:
    benchmark.group = group
    benchmark.pedantic(work.op, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_append(benchmark: Any, tmp_path: Path, impl: tuple[str, str, str], history: int) -> None:
    """One message appended and saved, on a session with ``history`` messages."""
    store, durability, kind = impl
    work = build("append", kind, store, durability, tmp_path, history)
    try:
        _run(benchmark, work, f"append {store}/{durability} history={history}")
    finally:
        work.close()


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_create(benchmark: Any, tmp_path: Path, impl: tuple[str, str, str]) -> None:
    """One session created and saved (header + two index entries)."""
    store, durability, kind = impl
    work = build("create", kind, store, durability, tmp_path, 0)
    try:
        _run(benchmark, work, f"create {store}/{durability}")
    finally:
        work.close()
