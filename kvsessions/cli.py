"""The ``kvsessions`` command: a thin layer over the library (no logic of its own).

kvsessions demo [--path DIR]     a scripted multi-user chat on the embedded LMDB store
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from .backends.base import LocalBackend
from .backends.lmdb import LMDBBackend
from .backends.sqlite import SQLiteBackend
from .core import check_records
from .errors import KVSessionsError, StoreConfigError
from .model import Session
from .stores import LMDBSessionStore
from .sync_api import SessionManager

__all__ = ["main"]

_SCRIPT = {
    "alice": ["Hi! Can you help me plan a trip to Lisbon?", "Three days, in May."],
    "bob": ["What's the capital of Australia?"],
    "carol": ["Summarise our last chat, please.", "Thanks!", "One more thing: bullet points."],
}


def _echo_agent(session: Session, text: str) -> str:
    """A stand-in for a model call: answers from the session's own state."""
    turn = session.get_state("turns", 0) + 1
    session.set_state("turns", turn)
    return f"(turn {turn}) You said: {text!r}"


def demo(path: Path) -> int:
    """Run a short scripted chat for three users, then print what is stored and where."""
    with SessionManager(store=LMDBSessionStore(path)) as manager:
        for user, lines in _SCRIPT.items():
            session_id = f"demo-{user}"
            session = manager.get_session(session_id) or manager.create_session(
                user_id=user, session_id=session_id, metadata={"channel": "demo"}
            )
            for text in lines:
                session.add_message("user", text)
                session.add_message("assistant", _echo_agent(session, text))
                manager.save(session)  # one atomic commit: the two new messages + header
        print(f"Stored in LMDB store {Path(path).resolve()} (durability='full'):\n")
        for user in _SCRIPT:
            for session in manager.get_sessions_for_user(user):
                print(
                    f"session {session.session_id}  user={session.user_id}  "
                    f"messages={session.message_count}  version={session.version}  "
                    f"state={session.state}  updated={session.updated_at:%Y-%m-%d %H:%M:%S}Z"
                )
                for message in session.messages[-4:]:
                    print(f"  #{message.seq:<3} {message.role:>9}: {message.content}")
        print("\nRun the demo again: the same sessions are loaded and continued.")
    return 0


def check(path: Path, table: str) -> int:
    """Report damaged records of the store at ``path`` (read-only); the exit status."""
    try:
        backend = _open_existing(path, table)
    except (KVSessionsError, OSError, sqlite3.Error) as exc:
        print(f"kvsessions check: {exc}", file=sys.stderr)
        return 2
    try:
        problems = backend.run(check_records(), write=False)
    finally:
        backend.close()
    for key, problem in problems:
        print(f"{key!r}: {problem}")
    print(f"{path}: {len(problems)} damaged record(s)")
    return 1 if problems else 0


def _open_existing(path: Path, table: str) -> LocalBackend:
    """The backend of an existing store, opened without creating or changing anything."""
    if (path / "data.mdb").is_file():
        return LMDBBackend(path, durability="fast")
    if not path.is_file():
        raise StoreConfigError(f"{path} is neither an LMDB store directory nor a SQLite file")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
    if not found:
        raise StoreConfigError(f"{path} has no table {table!r}; pass --table NAME")
    return SQLiteBackend(path, table_name=table, durability="fast")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvsessions", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_cmd = commands.add_parser("demo", help="run a scripted chat on the embedded store")
    demo_cmd.add_argument(
        "--path",
        type=Path,
        default=Path("kvsessions-demo.lmdb"),
        help="LMDB directory to use (default: ./kvsessions-demo.lmdb)",
    )
    check_cmd = commands.add_parser("check", help="list damaged records (changes nothing)")
    check_cmd.add_argument("path", type=Path, help="LMDB directory or SQLite file")
    check_cmd.add_argument("--table", default="sessions", help="SQLite table (default sessions)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.path, args.table)
    return demo(args.path)


if __name__ == "__main__":
    sys.exit(main())
