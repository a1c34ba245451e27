"""kvsessions vs the raw engine limit (DESIGN.md §8), each case in a fresh process.

    python benchmarks/run.py [--quick] [--only PATTERN] [--json PATH] [--repeat N]

A case (``op/store/durability/history``, e.g. ``append/lmdb/full/1000``) runs in its own
child process and temporary directory, through kvsessions and with the engine driven
directly (the *raw limit*), each side in its own subdirectory with the same history.  After
a short warm-up both sides are timed in alternating slices for a fixed total duration each,
so background load hits both alike.  ``--only`` keeps the cases whose name matches the glob
``*PATTERN*``; ``--repeat N`` runs each case N times (fresh processes) and keeps medians.
Prints ops/s, ratios and the §8 targets, and writes every figure as JSON; then runs
``concurrency.py`` (blocking vs asyncio throughput and event-loop stalls) and
``redis_ops.py`` (Redis vs a raw pipeline, round trips) unless ``--only`` excludes them.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb

HERE = Path(__file__).resolve().parent
TARGETS = {"full": 0.8, "fast": 0.5}  # kvsessions / raw, DESIGN.md §8
SCALING_TARGET = 0.8  # append at the largest history / at history 10
STORES = [
    ("lmdb", "full"),
    ("lmdb", "fast"),
    ("sqlite", "full"),
    ("sqlite", "fast"),
    ("memory", "none"),
]  # the same list as workloads.STORES, without importing kvsessions


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    op: str
    store: str
    durability: str
    history: int

    @property
    def name(self) -> str:
        return f"{self.op}/{self.store}/{self.durability}/{self.history}"

    @property
    def has_raw(self) -> bool:
        return self.store != "memory"


def all_cases(quick: bool) -> list[Case]:
    """Append at each history size for every store, then create for every store."""
    sizes = [10, 1_000, 10_000] + ([] if quick else [100_000])
    appends = [Case("append", s, d, h) for h in sizes for s, d in STORES]
    return appends + [Case("create", s, d, 0) for s, d in STORES]


# -- the child: one case ----------------------------------------------------------------------


def measure(spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Build each side of the case (``spec["impls"]``) in its own subdirectory, warm both up,
    then time them in alternating slices (so background load hits both alike)."""
    from workloads import build  # imported here: only children load kvsessions

    works, result = {}, {}
    try:
        for impl in spec["impls"]:
            started = time.perf_counter()
            path = Path(spec["path"], impl)
            path.mkdir()
            args = (spec["op"], impl, spec["store"], spec["durability"], path, spec["history"])
            works[impl] = build(*args)
            result[impl] = {"ops": 0, "seconds": 0.0, "setup_s": time.perf_counter() - started}
        for work in works.values():
            _count(work.op, spec["warmup"])
        for _ in range(spec["slices"]):
            for impl, work in works.items():
                ops, elapsed = _count(work.op, spec["seconds"] / spec["slices"])
                result[impl]["ops"] += ops
                result[impl]["seconds"] += elapsed
    finally:
        for work in works.values():
            work.close()
    for figures in result.values():
        figures["ops_per_s"] = figures["ops"] / figures["seconds"]
    return result


def _count(op: Callable[[], None], seconds: float) -> tuple[int, float]:
    clock = time.perf_counter
    ops, start = 0, clock()
    now, end = start, start + seconds
    while now < end:
        op()
        ops += 1
        now = clock()
    return ops, now - start


# -- the parent --------------------------------------------------------------------------------


def run_child(case: Case, seconds: float, warmup: float, slices: int) -> dict[str, Any]:
    """Measure both sides of ``case`` in a new process and temporary directory."""
    with tempfile.TemporaryDirectory(prefix="kvsbench-") as path:
        impls = ["raw", "kvs"] if case.has_raw else ["kvs"]
        spec = {
            **asdict(case),
            "impls": impls,
            "path": path,
            "seconds": seconds,
            "warmup": warmup,
            "slices": slices,
        }
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            cwd=path,
            check=False,
        )
    if proc.returncode != 0:
        return {"error": "\n".join(proc.stderr.strip().splitlines()[-3:]) or "crashed"}
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def bench(case: Case, seconds: float, warmup: float, slices: int, repeat: int) -> dict[str, Any]:
    """One case ``repeat`` times, each in a fresh process; medians and their ratio."""
    runs = [run_child(case, seconds, warmup, slices) for _ in range(repeat)]
    row: dict[str, Any] = {**asdict(case), "name": case.name, "runs": runs}
    ok = [run for run in runs if "error" not in run]
    for impl in ("kvs", "raw"):
        rates = [run[impl]["ops_per_s"] for run in ok if impl in run]
        row[f"{impl}_ops_s"] = statistics.median(rates) if rates else None
    raw, kvs = row["raw_ops_s"], row["kvs_ops_s"]
    row["ratio"] = kvs / raw if raw and kvs else None
    row["target"] = TARGETS.get(case.durability) if case.has_raw else None
    row["meets"] = None if row["ratio"] is None else row["ratio"] >= row["target"]
    row["errors"] = [run["error"] for run in runs if "error" in run]
    return row


def scaling(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per store: append ops/s at the largest history over ops/s at history 10 (the §8 check),
    and the same for the kvsessions/raw ratio (which cancels drift in the engine's speed)."""
    out = []
    for store, durability in STORES:
        mine = {
            r["history"]: r
            for r in rows
            if r["op"] == "append" and (r["store"], r["durability"]) == (store, durability)
        }
        big = max(mine, default=10)
        small_ops, big_ops = mine.get(10, {}).get("kvs_ops_s"), mine.get(big, {}).get("kvs_ops_s")
        if big > 10 and small_ops and big_ops:
            small_ratio, big_ratio = mine[10]["ratio"], mine[big]["ratio"]
            ratio = big_ops / small_ops
            out.append(
                {
                    "store": store,
                    "durability": durability,
                    "history": big,
                    "ratio": ratio,
                    "vs_raw": big_ratio / small_ratio if small_ratio and big_ratio else None,
                    "target": SCALING_TARGET,
                    "meets": ratio >= SCALING_TARGET,
                }
            )
    return out


def machine() -> dict[str, Any]:
    """Where and when the figures were taken."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "lmdb": ".".join(map(str, lmdb.version())),
        "py_lmdb": lmdb.__version__,
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg": os.getloadavg()[0],  # other work on the machine skews the figures
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _verdict(target: float | None, meets: bool | None) -> str:
    if target is None:
        return "-"
    return f">={target:.1f} " + {True: "ok", False: "MISS", None: "?"}[meets]


def table(rows: list[dict[str, Any]], scales: list[dict[str, Any]]) -> str:
    """The printed report: one line per case, then the history-scaling checks."""
    lines = [
        f"{'case':<7} {'store':<7} {'durability':<10} {'history':>8} {'kvsessions ops/s':>17} "
        f"{'raw ops/s':>10} {'ratio':>6}  target"
    ]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        history = "-" if r["op"] == "create" else f"{r['history']:,}"
        lines.append(
            f"{r['op']:<7} {r['store']:<7} {r['durability']:<10} {history:>8} "
            f"{_num(r['kvs_ops_s']):>17} {_num(r['raw_ops_s']):>10} {ratio:>6}  "
            f"{_verdict(r['target'], r['meets'])}{' ERROR' if r['errors'] else ''}"
        )
    for s in scales:
        lines.append(
            f"scaling {s['store']:<7} {s['durability']:<10} append at {s['history']:,} / "
            f"at 10 = {s['ratio']:.3f}  {_verdict(s['target'], s['meets'])}"
            + ("" if s["vs_raw"] is None else f"  (same for kvs/raw: {s['vs_raw']:.3f})")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, histories up to 10k")
    parser.add_argument("--only", metavar="PATTERN", help="glob over case names (*PATTERN*)")
    parser.add_argument("--json", metavar="PATH", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--repeat", type=int, help="fresh runs per case (default 1 quick, 3 full)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0

    seconds, warmup, slices = (0.5, 0.1, 5) if args.quick else (1.5, 0.3, 10)
    repeat = args.repeat or (1 if args.quick else 3)
    cases = [
        c
        for c in all_cases(args.quick)
        if not args.only or fnmatch.fnmatch(c.name, f"*{args.only}*")
    ]
    info = machine()
    print(
        f"machine: {info['platform']}, {info['cpu']}, {info['cpus']} CPUs, Python "
        f"{info['python']}, LMDB {info['lmdb']} (py-lmdb {info['py_lmdb']}), SQLite "
        f"{info['sqlite']}; {info['date']}, load {info['loadavg']:.2f}; "
        f"{seconds}s per side in {slices} slices, x{repeat}",
        flush=True,
    )
    rows, started = [], time.perf_counter()
    for case in cases:
        row = bench(case, seconds, warmup, slices, repeat)
        rows.append(row)
        print(
            f"  {case.name:<28} kvs {_num(row['kvs_ops_s']):>8}/s  "
            f"raw {_num(row['raw_ops_s']):>8}/s",
            file=sys.stderr,
            flush=True,
        )
    scales = scaling(rows)
    print(table(rows, scales))
    print(f"({len(cases)} cases in {time.perf_counter() - started:.0f}s)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": info,
        "settings": {
            "quick": args.quick,
            "seconds": seconds,
            "warmup": warmup,
            "slices": slices,
            "repeat": repeat,
            "only": args.only,
        },
        "results": rows,
        "scaling": scales,
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    if not args.only or fnmatch.fnmatch("async", f"*{args.only}*"):
        print("\nasyncio vs blocking (benchmarks/concurrency.py):", flush=True)
        sessions = "300" if args.quick else "1000"
        subprocess.run(
            [sys.executable, str(HERE / "concurrency.py"), "--sessions", sessions], check=True
        )
    if (not args.only or fnmatch.fnmatch("redis", f"*{args.only}*")) and shutil.which(
        "redis-server"
    ):
        print("\nRedis vs a raw redis-py pipeline (benchmarks/redis_ops.py):", flush=True)
        seconds_redis = "1" if args.quick else "4"
        subprocess.run(
            [sys.executable, str(HERE / "redis_ops.py"), "--seconds", seconds_redis], check=True
        )
    failed = [(r["name"], e) for r in rows for e in r["errors"]]
    for name, error in failed:
        print(f"ERROR in {name}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
