"""The plot of a run: append + save throughput versus history size (``run.py`` draws it).

One panel per durability class: "full" (an acknowledged save survives power loss: fsync per
commit) and "fast" (survives a process crash).  Lines: kvsessions and the raw engine on
LMDB and SQLite, and the peers in the panel of their default durability.  Both axes are
logarithmic: the blob stores fall by orders of magnitude as the history grows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: (label, store, impl, colour, line style) per line; the raw engines dashed.
LINES = [
    ("kvsessions LMDB", "lmdb", "kvs", "tab:blue", "-"),
    ("raw LMDB", "lmdb", "raw", "tab:blue", "--"),
    ("kvsessions SQLite", "sqlite", "kvs", "tab:green", "-"),
    ("raw SQLite", "sqlite", "raw", "tab:green", "--"),
    ("OpenAI Agents SQLiteSession", "peer-agents", "peer-agents", "tab:purple", ":"),
    ("JSON blob in SQLite", "peer-blob", "peer-blob", "tab:red", ":"),
    ("diskcache blob", "peer-diskcache", "peer-diskcache", "tab:orange", ":"),
    ("kvsessions memory", "memory", "kvs", "tab:gray", "-."),
]
PANELS = [("full", "durability full (fsync per commit)"), ("fast", "durability fast (no fsync)")]


def plot(report: dict[str, Any], path: Path) -> None:
    """Draw append + save ops/s vs history from ``report["results"]`` into ``path`` (PNG)."""
    rows = [r for r in report["results"] if r["op"] == "append" and r.get("ops_s")]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 5), sharey=True)
    for ax, (durability, title) in zip(axes, PANELS, strict=True):
        for label, store, impl, colour, style in LINES:
            points = sorted(
                (r["history"], r["ops_s"][impl])
                for r in rows
                if r["store"] == store
                and r["ops_s"].get(impl)
                and (r["durability"] == durability or (store == "memory" and durability == "fast"))
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, color=colour, marker="o", markersize=4, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("messages already in the session")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("append 1 message + save, ops/s")
    machine = report.get("machine", {})
    fig.suptitle(
        f"append + save vs history — {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"Python {machine.get('python', '?')}, {machine.get('date', '')[:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
