"""Many sessions at once: blocking vs asyncio throughput, and how long the loop stalls.

    python benchmarks/concurrency.py [--sessions 1000] [--only PATTERN] [--json PATH]

For each store (LMDB, SQLite at "full" and "fast", memory), in a fresh process:

- *blocking*: one thread serves the sessions one after another;
- *asyncio*: all sessions served concurrently on one event loop, flat out;
- *asyncio, paced*: all sessions open at once, each waiting 20-300 ms between turns
  (a model "thinking"), as an agent server runs; a 1 ms heartbeat task measures the
  loop's stalls, and a hook on the loop times every callback it runs (the slowest while
  the sessions are served, and apart from it the slowest while the manager and its store
  open and close);
- for the largest heartbeat gap of a paced run: how many callbacks ran in it, their time
  (the library's share less GC, the collections, the longest one), the time outside any
  callback, the CPU time the whole process used in it, and how much of it a *sidecar*
  (a second, idle process sleeping 1 ms at a time) stalled too; and the share of the VM's
  CPU time its host took away meanwhile (Linux ``steal``, where the VM reports it): a
  loop thread descheduled by the hypervisor stalls with no work of its own;
- the largest stall less the part the sidecar shared: what a pause of the machine does
  not explain;
- for each owner's slowest callback: its wall and thread CPU time, the collection in it,
  the kernel's part of the CPU time, its page faults and its name;
- *idle loop*: the same heartbeat on a loop with nothing else to do, first in each child:
  what the machine itself (scheduler, timers, virtual CPUs) adds to every stall figure.

A session's work: create, then 3 turns of (add a user and an assistant message, save),
then load it back.  Throughput is in sessions/s (5 operations each).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import fnmatch
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STORES = [("lmdb", "full"), ("lmdb", "fast"), ("sqlite", "full"), ("sqlite", "fast"),
          ("memory", "none")]  # fmt: skip
CONTENT = "Could you summarise the last report and list the open action items, please?"


def _store(kind: str, durability: str, path: Path) -> Any:
    from kvsessions import LMDBSessionStore, MemorySessionStore, SQLiteSessionStore

    if kind == "lmdb":
        return LMDBSessionStore(path / "s.lmdb", durability=durability)
    if kind == "sqlite":
        return SQLiteSessionStore(path / "s.db", durability=durability)
    return MemorySessionStore()


def blocking(kind: str, durability: str, path: Path, sessions: int) -> float:
    from kvsessions import SessionManager

    with SessionManager(store=_store(kind, durability, path)) as manager:
        start = time.perf_counter()
        for number in range(sessions):
            session = manager.create_session(f"user{number % 100}")
            for turn in range(3):
                session.add_message("user", f"{turn}: {CONTENT}")
                session.add_message("assistant", CONTENT)
                manager.save(session)
            manager.get_session(session.session_id)
        return sessions / (time.perf_counter() - start)


async def _conversation(manager: Any, number: int, pace: random.Random | None) -> None:
    if pace:
        await asyncio.sleep(pace.uniform(0, 1.5))
    session = await manager.create_session(f"user{number % 100}")
    for turn in range(3):
        if pace:
            await asyncio.sleep(pace.uniform(0.02, 0.3))
        session.add_message("user", f"{turn}: {CONTENT}")
        session.add_message("assistant", CONTENT)
        await manager.save(session)
    await manager.get_session(session.session_id)


def asynchronous(
    kind: str, durability: str, path: Path, sessions: int, paced: bool, frozen: bool = False
) -> dict[str, Any]:
    from kvsessions import AsyncSessionManager

    # The slowest callback while the sessions are served (the heartbeat running), and while
    # the manager opens and closes (its store, its thread pool) around that.  Each serving
    # callback is put down to its owner (a session's task: the library's plan steps and
    # the two add_message calls; the library's own tasks and asyncio's internal callbacks;
    # the harness), with the garbage collection inside it and the CPU its thread used:
    # wall time beyond CPU + GC is the loop thread waiting for the GIL or for a CPU.
    open_close = [0.0]  # the slowest callback outside serving
    worst: dict[str, dict[str, Any]] = {}  # owner -> its slowest serving callback
    phase = ["open_close"]
    gc_total = [0.0, 0.0, 0.0]  # time in collections so far, start of the current one, max
    # every serving callback as (start, wall, GC inside, whether the library's): to break
    # the largest heartbeat gap down into the callbacks that ran in it and the rest
    calls: list[tuple[float, float, float, bool]] = []
    original = asyncio.events.Handle._run
    perf_counter, thread_time = time.perf_counter, time.thread_time
    usage, this_thread = resource.getrusage, resource.RUSAGE_THREAD  # (kernel time, faults)

    def on_gc(stage: str, info: dict[str, int]) -> None:
        if stage == "start":
            gc_total[1] = perf_counter()
        else:
            took = perf_counter() - gc_total[1]
            gc_total[0] += took
            gc_total[2] = max(gc_total[2], took)

    def timed(handle: asyncio.events.Handle) -> None:
        now = phase[0]
        before = usage(this_thread)
        started, cpu, in_gc = perf_counter(), thread_time(), gc_total[0]
        original(handle)
        took = perf_counter() - started
        if now != "serving":
            open_close[0] = max(open_close[0], took)
        else:
            collecting = gc_total[0] - in_gc
            owner = _owner(handle)
            calls.append((started, took, collecting, owner != "harness"))
            if took > worst.get(owner, {}).get("wall_ms", 0.0) / 1000:
                after = usage(this_thread)
                worst[owner] = {
                    "wall_ms": took * 1000,
                    "cpu_ms": (thread_time() - cpu) * 1000,
                    "gc_ms": collecting * 1000,
                    # the kernel's share of that CPU time and the page faults taken in it
                    # (a callback that faults memory in spends its time in the kernel)
                    "sys_ms": (after.ru_stime - before.ru_stime) * 1000,
                    "page_faults": after.ru_minflt
                    + after.ru_majflt
                    - before.ru_minflt
                    - before.ru_majflt,
                    "what": _what(handle),
                }

    async def main() -> dict[str, Any]:
        beats: list[tuple[float, ...]] = []
        done = asyncio.Event()
        sidecar = Sidecar()

        async with AsyncSessionManager(store=_store(kind, durability, path)) as manager:
            beat = asyncio.create_task(_heartbeat(beats, lambda: not done.is_set()))
            phase[0] = "serving"
            pace = random.Random(7) if paced else None
            started = time.perf_counter()
            tasks = []
            for number in range(sessions):
                tasks.append(asyncio.create_task(_conversation(manager, number, pace)))
                if number % 25 == 24:
                    await asyncio.sleep(0)
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
            done.set()
            await beat
            phase[0] = "open_close"
        sidecar_stalls = sidecar.stop()
        largest = max(beats, key=lambda beat: beat[1] - beat[0])
        beyond_gc = max((wall - collected for _, wall, collected, _ in calls), default=0.0)
        gap = _gap_breakdown(calls, *largest[:2], process_cpu=largest[2])
        gap["sidecar_ms"] = _overlap(sidecar_stalls, *largest[:2]) * 1000
        unshared = max(
            (end - start - 0.001 - _overlap(sidecar_stalls, start, end) for start, end, _ in beats),
            default=0.0,
        )
        return {
            "largest_gap": gap,
            # the largest stall less the part of it the idle sidecar stalled too: what the
            # machine pausing does not explain
            "stall_max_unshared_ms": unshared * 1000,
            "sessions_s": sessions / elapsed,
            **_stalls(beats),
            "slowest_callback_ms": max(
                (figures["wall_ms"] for figures in worst.values()), default=0.0
            ),
            "slowest_open_close_callback_ms": open_close[0] * 1000,
            "slowest_by_owner": worst,
            "slowest_callback_without_gc_ms": beyond_gc * 1000,
            "gc_max_ms": gc_total[2] * 1000,
        }

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    if frozen:  # the heap so far (modules, the harness) out of the collector's way
        gc.collect()
        gc.freeze()
    gc.callbacks.append(on_gc)
    stolen, clock = _stolen_s(), time.perf_counter()
    try:
        result = asyncio.run(main())
        if stolen is not None:  # the share of this VM's CPU time its host took away
            result["steal_share"] = (_stolen_s() - stolen) / (  # type: ignore[operator]
                (time.perf_counter() - clock) * (os.cpu_count() or 1)
            )
        return result
    finally:
        if frozen:
            gc.unfreeze()
        gc.callbacks.remove(on_gc)
        asyncio.events.Handle._run = original  # type: ignore[method-assign]


async def _heartbeat(beats: list[tuple[float, ...]], running: Callable[[], bool]) -> None:
    """Sleep 1 ms at a time while ``running()``, noting when each sleep began and ended
    and the CPU time the whole process (all its threads) used meanwhile."""
    while running():
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(0.001)
        beats.append((started, time.perf_counter(), time.process_time() - cpu))


def _stalls(beats: list[tuple[float, ...]]) -> dict[str, float]:
    """The heartbeat's stalls (how much later than 1 ms each sleep ended): max, p99, median."""
    gaps = sorted(beat[1] - beat[0] - 0.001 for beat in beats)
    return {
        "stall_max_ms": gaps[-1] * 1000,
        "stall_p99_ms": gaps[int(len(gaps) * 0.99)] * 1000,
        "stall_median_ms": gaps[len(gaps) // 2] * 1000,
    }


def _stolen_s() -> float | None:
    """CPU time the hypervisor has taken from this VM so far (Linux ``steal``, counted in
    clock ticks of usually 10 ms), or None where the system does not say."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


_SIDECAR = """
import select, sys, time
clock, stalls = time.perf_counter, []
while not select.select([sys.stdin], [], [], 0)[0]:
    started = clock()
    time.sleep(0.001)
    if clock() - started > 0.002:
        stalls.append((started, clock()))
print(stalls)
"""


class Sidecar:
    """A second process sleeping 1 ms at a time beside the benchmark, noting its own
    stalls over 1 ms.  ``time.perf_counter`` is the system-wide monotonic clock on Linux,
    so its stalls line up with the loop's: a heartbeat gap the sidecar shares, with
    nothing to do of its own, is the machine pausing, not the benchmark's process."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SIDECAR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> list[tuple[float, float]]:
        out, _ = self._proc.communicate("stop\n", timeout=30)
        return [tuple(stall) for stall in ast.literal_eval(out.strip() or "[]")]


def _overlap(stalls: list[tuple[float, float]], start: float, end: float) -> float:
    """The longest of ``stalls`` (minus the 1 ms sleep) within ``start``..``end``."""
    return max((min(e, end) - max(s, start) for s, e in stalls if s < end and e > start),
               default=0.001) - 0.001  # fmt: skip


def _gap_breakdown(
    calls: list[tuple[float, float, float, bool]], start: float, end: float, process_cpu: float
) -> dict[str, float]:
    """What the loop did during one heartbeat gap: the callbacks it ran (how many, their
    time, the library's share less GC, the longest), the time outside any callback
    beyond the 1 ms sleep asked for (in the selector, waiting for the GIL, or not
    scheduled at all), and the CPU time the whole process used in the gap: next to
    nothing in a long gap means none of its threads ran (the machine paused it), about
    the gap's length or more that its threads were busy (the loop thread waiting for the
    GIL, or for a CPU they held)."""
    inside = [call for call in calls if start <= call[0] < end]
    in_callbacks = sum(min(wall, end - began) for began, wall, _, _ in inside)  # (in the gap)
    stall = end - start - 0.001  # (the heartbeat asked to sleep 1 ms)
    return {
        "ms": stall * 1000,
        "callbacks": len(inside),
        "in_callbacks_ms": in_callbacks * 1000,
        "library_less_gc_ms": sum(wall - gc_ms for _, wall, gc_ms, ours in inside if ours) * 1000,
        "gc_ms": sum(gc_ms for _, _, gc_ms, _ in inside) * 1000,
        "longest_callback_ms": max((wall for _, wall, _, _ in inside), default=0.0) * 1000,
        "outside_callbacks_ms": (stall - in_callbacks) * 1000,
        "process_cpu_ms": process_cpu * 1000,
    }


def _full_collection_ms(frozen: bool) -> float:
    """How long one full collection of this process's heap takes (after ``gc.freeze()``)."""
    gc.collect()
    if frozen:
        gc.freeze()
    try:
        started = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - started) * 1000
    finally:
        gc.unfreeze()


def _gc_in_slowest(paced: dict[str, Any]) -> float:
    """The collection time inside the slowest serving callback (whoever owned it)."""
    owners = paced["slowest_by_owner"].values()
    return max(owners, key=lambda figures: figures["wall_ms"])["gc_ms"] if owners else 0.0


def _owners_line(worst: dict[str, dict[str, Any]]) -> str:
    """Each owner's slowest callback as wall / CPU / GC ms (and the kernel's part of the
    CPU, page faults, what ran): wall far beyond CPU + GC is the loop thread not running
    (the host took the vCPU, or another thread held the GIL)."""
    return "; ".join(
        f"{owner} {f['wall_ms']:.1f} / {f['cpu_ms']:.1f} / {f['gc_ms']:.1f} ms "
        f"(kernel {f['sys_ms']:.1f} ms, {f['page_faults']} faults, {f['what']})"
        for owner, f in sorted(worst.items())
    )


def _what(handle: asyncio.events.Handle) -> str:
    """A loop callback's name: the coroutine a task step ran, else the callback's own."""
    name = _task_name(handle)
    if name is not None:
        return name
    callback = handle._callback  # type: ignore[attr-defined]
    return str(getattr(callback, "__qualname__", type(callback).__name__))


def _owner(handle: asyncio.events.Handle) -> str:
    """Whose code a loop callback ran: a session's task, the library's, or the harness."""
    name = _task_name(handle)
    if name is None:
        return "library"  # asyncio's own callbacks (futures, timers) for the library's work
    if name == "_conversation":
        return "session"
    return "harness" if name.startswith("asynchronous.") or name == "_heartbeat" else "library"


def _task_name(handle: asyncio.events.Handle) -> str | None:
    """The coroutine's name if the callback is a step of a task, else None."""
    task = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
    if not isinstance(task, asyncio.Task):
        return None
    return str(task.get_coro().__qualname__)  # type: ignore[union-attr]


def loop_alone(seconds: float = 2.0) -> dict[str, float]:
    """The same 1 ms heartbeat on an event loop with nothing else to do: the stalls this
    machine (its scheduler, timers, virtual CPUs) causes without any library work."""

    beats: list[tuple[float, ...]] = []
    ends = time.perf_counter() + seconds
    asyncio.run(_heartbeat(beats, lambda: time.perf_counter() < ends))
    return _stalls(beats)


def child(kind: str, durability: str, sessions: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    gc.collect()
    idle = loop_alone()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for sub in ("b", "a", "p", "f"):
            (base / sub).mkdir()
        result: dict[str, Any] = {
            "blocking_sessions_s": blocking(kind, durability, base / "b", sessions)
        }
        flat = asynchronous(kind, durability, base / "a", sessions, paced=False)
        result["async_sessions_s"] = flat["sessions_s"]
        result["paced"] = asynchronous(kind, durability, base / "p", sessions, paced=True)
        result["paced_frozen"] = asynchronous(
            kind, durability, base / "f", sessions, paced=True, frozen=True
        )
    result["loop_alone"] = idle
    result["full_collection_ms"] = _full_collection_ms(frozen=False)
    result["full_collection_frozen_ms"] = _full_collection_ms(frozen=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--only", metavar="PATTERN", help="glob over store/durability")
    parser.add_argument("--json", metavar="PATH", default=str(HERE / "results" / "async.json"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.sessions)))
        return 0
    rows = []
    print(
        f"{'store':<8} {'durab.':<6} {'blocking/s':>10} {'asyncio/s':>10} {'ratio':>6}   "
        "paced: loop stall max / p99, slowest callback (GC in it), same without GC, "
        "slowest open/close; with gc.freeze(): stall max, slowest callback; gc.collect(); "
        "the heartbeat on an idle loop: stall max / p99"
    )
    for kind, durability in STORES:
        if args.only and not fnmatch.fnmatch(f"{kind}/{durability}", f"*{args.only}*"):
            continue
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--sessions",
                str(args.sessions),
                "--child",
                kind,
                durability,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        row = {"store": kind, "durability": durability, **json.loads(out.splitlines()[-1])}
        rows.append(row)
        paced, frozen = row["paced"], row["paced_frozen"]
        print(
            f"{kind:<8} {durability:<6} {row['blocking_sessions_s']:>10.0f} "
            f"{row['async_sessions_s']:>10.0f} "
            f"{row['async_sessions_s'] / row['blocking_sessions_s']:>6.2f}   "
            f"{paced['stall_max_ms']:.1f} / {paced['stall_p99_ms']:.2f} ms, "
            f"{paced['slowest_callback_ms']:.1f} ms ({_gc_in_slowest(paced):.1f}), "
            f"{paced['slowest_callback_without_gc_ms']:.1f} ms, "
            f"{paced['slowest_open_close_callback_ms']:.1f} ms; "
            f"{frozen['stall_max_ms']:.1f} ms, {frozen['slowest_callback_ms']:.1f} ms; "
            f"a full collection {row['full_collection_ms']:.1f} ms, "
            f"frozen {row['full_collection_frozen_ms']:.2f} ms; "
            f"idle {row['loop_alone']['stall_max_ms']:.1f} / "
            f"{row['loop_alone']['stall_p99_ms']:.2f} ms",
            flush=True,
        )
        gap = paced["largest_gap"]
        print(
            f"{'':<16} the largest paced gap, {gap['ms']:.1f} ms: {gap['callbacks']} callbacks "
            f"in {gap['in_callbacks_ms']:.1f} ms (the library's {gap['library_less_gc_ms']:.1f} "
            f"ms less GC, GC {gap['gc_ms']:.1f} ms, the longest {gap['longest_callback_ms']:.1f} "
            f"ms), {gap['outside_callbacks_ms']:.1f} ms outside any callback beyond the 1 ms "
            f"sleep; the process's CPU time in it {gap['process_cpu_ms']:.1f} ms (all threads); "
            f"a sidecar process stalled {gap['sidecar_ms']:.1f} ms of it (the largest stall "
            f"not shared with the sidecar: {paced['stall_max_unshared_ms']:.1f} ms); "
            f"VM steal {paced.get('steal_share', float('nan')):.1%} of the CPU time",
            flush=True,
        )
        print(f"{'':<16} the slowest paced callbacks, wall / their thread's CPU / GC in them: "
              + _owners_line(paced["slowest_by_owner"]), flush=True)  # fmt: skip
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sessions": args.sessions, "rows": rows}, indent=1) + "\n")
    print(f"({args.sessions} sessions of 5 operations each; wrote {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
