"""The ``kvsessions`` command, run for real as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvsessions import LMDBSessionStore, SessionManager, SQLiteSessionStore, keys
from kvsessions.backends.base import Commit


def kvsessions(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvsessions", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_demo_runs_and_continues(tmp_path: Path) -> None:
    first = kvsessions("demo", "--path", str(tmp_path / "demo.lmdb"))
    assert first.returncode == 0, first.stderr
    assert "demo-alice" in first.stdout and "messages=4" in first.stdout
    second = kvsessions("demo", "--path", str(tmp_path / "demo.lmdb"))
    assert "messages=8" in second.stdout  # the same sessions, continued


@pytest.mark.parametrize("kind", ["lmdb", "sqlite"])
def test_check_reports_damage_without_changing_anything(kind: str, tmp_path: Path) -> None:
    path = tmp_path / ("s.lmdb" if kind == "lmdb" else "s.db")
    store = LMDBSessionStore(path) if kind == "lmdb" else SQLiteSessionStore(path)
    manager = SessionManager(store=store)
    good, bad = manager.create_session("u"), manager.create_session("u")
    for session in (good, bad):
        session.add_message("user", "hello")
        manager.save(session)
    clean = kvsessions("check", str(path))
    assert clean.returncode == 0 and "0 damaged" in clean.stdout, clean.stdout + clean.stderr
    damaged_key = keys.message_key(bad.session_id, 0)
    store._backend.execute(Commit(put={damaged_key: b"\x80\x04pickle"}))
    store.close()
    before = _snapshot(path)
    report = kvsessions("check", str(path))
    assert report.returncode == 1
    assert "1 damaged" in report.stdout and repr(damaged_key) in report.stdout
    assert _snapshot(path) == before  # read-only


def _snapshot(path: Path) -> dict[str, bytes]:
    files = [path] if path.is_file() else sorted(path.iterdir())
    return {f.name: f.read_bytes() for f in files if not f.name.endswith(("-shm", "lock.mdb"))}


def test_check_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    missing = kvsessions("check", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "neither" in missing.stderr
    assert not (tmp_path / "nothing").exists()
    SQLiteSessionStore(tmp_path / "x.db", table_name="chat").close()
    wrong_table = kvsessions("check", str(tmp_path / "x.db"))
    assert wrong_table.returncode == 2 and "--table" in wrong_table.stderr
    assert kvsessions("check", str(tmp_path / "x.db"), "--table", "chat").returncode == 0
