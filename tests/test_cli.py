"""The ``kvsessions`` command, run for real: click's runner in-process for most cases, and
subprocesses of ``python -m kvsessions`` and of the installed ``kvsessions`` script."""

from __future__ import annotations

import inspect
import json
import os
import pty
import select
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import redis.cluster
from click.testing import CliRunner, Result

from kvsessions import (
    LMDBSessionStore,
    Message,
    RedisSessionStore,
    Session,
    SessionManager,
    SQLiteSessionStore,
    codec,
    keys,
    lifecycle,
    open_store,
)
from kvsessions.backends.base import Commit, Get, Scan
from kvsessions.cli import cli
from kvsessions.transfer import session_line

from .redis_servers import RedisCluster, RedisServer, free_port

SCRIPT = Path(sys.executable).with_name("kvsessions")  # the installed entry point


def kvsessions(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m kvsessions ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "kvsessions", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def installed(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``kvsessions`` script pip installed, in a subprocess."""
    if not SCRIPT.is_file():
        pytest.fail(f"{SCRIPT} is missing: install the package (pip install -e .)")
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    """The command in-process through click's runner (stdout and stderr kept apart)."""
    split = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    return CliRunner(**split).invoke(cli, list(args), input=stdin, env=env)


def as_json(result: Result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(stderr: str, command: str) -> str:
    """The error contract: one line, ``kvsessions COMMAND: ...``, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kvsessions {command}: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- stores with known content -----------------------------------------------------------


@pytest.fixture(params=["lmdb", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new local store's URL (the store itself is made by ``fill``)."""
    if request.param == "lmdb":
        return f"lmdb://{tmp_path}/s.lmdb"
    return f"sqlite://{tmp_path}/s.db?table=chat"


def fill(url: str) -> dict[str, Session]:
    """alice: two sessions (one archived), bob: one with 5 messages; closed afterwards."""
    with SessionManager(store=open_store(url)) as manager:
        made = {}
        for name, user, texts in (
            ("a1", "alice", ["hi", "plan a trip"]),
            ("a2", "alice", ["old chat"]),
            ("b1", "bob", ["one", "two", "three", "four", "five"]),
        ):
            session = manager.create_session(user, {"name": name}, session_id=f"sid-{name}")
            for text in texts:
                session.add_message("user", text, lang="en")
            session.set_state("n", len(texts))
            made[name] = manager.save(session)
        manager.archive("sid-a2")
    return made


def old_sessions(count: int, days_ago: float, user: str = "olduser") -> bytes:
    """Export lines of ``count`` sessions last saved ``days_ago`` days ago."""
    when = datetime.now(UTC) - timedelta(days=days_ago)
    lines = []
    for i in range(count):
        session = Session(
            session_id=f"old-{user}-{i}",
            user_id=user,
            messages=[Message("user", f"long ago {i}", when, {}, 0)],
            created_at=when,
            updated_at=when,
        )
        lines.append(session_line(session))
    return b"".join(lines)


# -- every command on LMDB and SQLite ------------------------------------------------------


def test_stats(url: str) -> None:
    fill(url)
    text = run("stats", "--store", url)
    assert text.exit_code == 0, text.output
    assert "3 (2 active, 1 archived)" in text.stdout and "messages  8" in text.stdout
    data = as_json(run("stats", "-s", url, "--json"))
    assert data == {
        "store": url,
        "sessions": 3,
        "active": 2,
        "archived": 1,
        "messages": 8,
        "users": 2,
    }


def test_ls_filters_orders_and_pages(url: str) -> None:
    fill(url)
    every = as_json(run("ls", "-s", url, "--json"))
    assert {s["session_id"] for s in every["sessions"]} == {"sid-a1", "sid-a2", "sid-b1"}
    assert every["cursor"] is None
    alice = as_json(run("ls", "-s", url, "--user", "alice", "--json"))
    assert {s["session_id"] for s in alice["sessions"]} == {"sid-a1", "sid-a2"}
    archived = as_json(run("ls", "-s", url, "--status", "archived", "--json"))
    assert [s["session_id"] for s in archived["sessions"]] == ["sid-a2"]
    created = as_json(run("ls", "-s", url, "--order", "created", "--json"))
    assert [s["session_id"] for s in created["sessions"]] == ["sid-b1", "sid-a2", "sid-a1"]
    bob = created["sessions"][0]
    assert bob["messages"] == 5 and bob["user_id"] == "bob" and bob["metadata"] == {"name": "b1"}
    # pages of one, by cursor, give the same sessions as --all
    seen, cursor = [], None
    for _ in range(5):
        args = ["ls", "-s", url, "--order", "created", "--limit", "1", "--json"]
        page = as_json(run(*args, *(["--cursor", cursor] if cursor else [])))
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == ["sid-b1", "sid-a2", "sid-a1"]
    paged = as_json(run("ls", "-s", url, "--order", "created", "--limit", "1", "--all", "--json"))
    assert [s["session_id"] for s in paged["sessions"]] == seen and paged["cursor"] is None
    text = run("ls", "-s", url, "--order", "created", "--limit", "2")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "USER", "STATUS", "MESSAGES", "UPDATED"]
    assert lines[1].split()[:4] == ["sid-b1", "bob", "active", "5"] and len(lines) == 3
    assert "--cursor" in text.stderr  # where the next page starts
    bad = run("ls", "-s", url, "--cursor", "not-a-cursor")
    assert bad.exit_code == 2 and "does not belong" in one_line_error(bad.stderr, "ls")


def test_show(url: str) -> None:
    fill(url)
    text = run("show", "sid-b1", "-s", url)
    assert text.exit_code == 0, text.output
    assert "user=bob" in text.stdout and "messages=5" in text.stdout
    assert [line.strip() for line in text.stdout.splitlines() if line.startswith("    ")][:2] == [
        "one",
        'extras: {"lang":"en"}',
    ]
    assert 'state: {"n":5}' in text.stdout
    last = run("show", "sid-b1", "-s", url, "--last", "2")
    assert "(the last 2 of 5 messages)" in last.stdout
    assert "three" not in last.stdout and "five" in last.stdout
    data = as_json(run("show", "sid-b1", "-s", url, "--last", "2", "--json"))
    assert data["message_count"] == 5 and data["state"] == {"n": 5}
    assert [(m["seq"], m["content"], m["extras"]) for m in data["messages"]] == [
        (3, "four", {"lang": "en"}),
        (4, "five", {"lang": "en"}),
    ]
    missing = run("show", "nope", "-s", url)
    assert missing.exit_code == 1 and "no session 'nope'" in one_line_error(missing.stderr, "show")


def test_export_import_round_trip(url: str, tmp_path: Path) -> None:
    fill(url)
    exported = run("export", "-s", url)  # to stdout
    assert exported.exit_code == 0 and "exported 3 session(s)" in exported.stderr
    lines = exported.stdout_bytes.splitlines()
    assert len(lines) == 3 and all(
        json.loads(line)["format"] == "kvsessions.session/1" for line in lines
    )
    bob_only = run("export", "-s", url, "--user", "bob")
    assert [json.loads(line)["session_id"] for line in bob_only.stdout_bytes.splitlines()] == [
        "sid-b1"
    ]
    file = tmp_path / "dump.jsonl"
    summary = as_json(run("export", str(file), "-s", url, "--json"))
    assert summary == {"exported": 3, "file": str(file)}
    assert file.read_bytes() == exported.stdout_bytes
    # into the other kind of store, from a file and from stdin
    other = f"sqlite://{tmp_path}/other.db" if url.startswith("lmdb") else f"{tmp_path}/o.lmdb"
    report = as_json(run("import", str(file), "-s", other, "--json"))
    assert report == {"created": 3, "unchanged": 0, "conflicts": []}
    again = run("import", "-", "-s", other, stdin=file.read_bytes())
    assert again.exit_code == 0 and "created 0, unchanged 3, conflicts 0" in again.stdout
    assert run("export", "-s", other).stdout_bytes == exported.stdout_bytes  # identical
    # a conflicting session is left alone and reported: exit status 1
    record = json.loads(lines[0])
    record["metadata"] = {"edited": True}
    changed = json.dumps(record).encode() + b"\n"
    conflict = run("import", "-", "-s", other, "--json", stdin=changed)
    assert conflict.exit_code == 1
    assert json.loads(conflict.stdout)["conflicts"] == [record["session_id"]]
    # a file that is not an export: exit status 2, one line naming the line
    bad = run("import", "-", "-s", other, stdin=b'{"format": "kvsessions.session/1"}\n')
    assert bad.exit_code == 2 and "line 1" in one_line_error(bad.stderr, "import")
    assert run("import", str(tmp_path / "absent.jsonl"), "-s", other).exit_code == 2


def test_archive_purge_and_inactive_listing(url: str) -> None:
    fill(url)
    imported = run("import", "-", "-s", url, stdin=old_sessions(3, days_ago=40))
    assert imported.exit_code == 0, imported.output
    inactive = as_json(run("ls", "-s", url, "--inactive", "30", "--json"))
    assert sorted(s["session_id"] for s in inactive["sessions"]) == [
        "old-olduser-0",
        "old-olduser-1",
        "old-olduser-2",
    ]
    limited = as_json(run("ls", "-s", url, "--inactive", "30", "--limit", "2", "--json"))
    assert len(limited["sessions"]) == 2 and limited["cursor"] is not None
    rest = as_json(
        run("ls", "-s", url, "--inactive", "30", "--cursor", limited["cursor"], "--json")
    )
    assert len(rest["sessions"]) == 1
    assert as_json(run("ls", "-s", url, "--inactive", "50", "--json"))["sessions"] == []
    dry = as_json(run("archive-inactive", "--days", "30", "--dry-run", "-s", url, "--json"))
    assert dry == {"archived": 3, "days": 30.0, "dry_run": True}
    assert as_json(run("stats", "-s", url, "--json"))["archived"] == 1  # nothing changed
    done = run("archive-inactive", "--days", "30", "-s", url)
    assert done.exit_code == 0 and "archived 3 session(s)" in done.stdout
    assert as_json(run("stats", "-s", url, "--json"))["archived"] == 4
    assert as_json(run("ls", "-s", url, "--inactive", "30", "--json"))["sessions"] == []
    would = as_json(run("purge-archived", "--days", "30", "--dry-run", "-s", url, "--json"))
    assert would == {"purged": 3, "days": 30.0, "dry_run": True}
    purged = run("purge-archived", "--days", "30", "-s", url)
    assert purged.exit_code == 0 and "deleted 3 archived session(s)" in purged.stdout
    stats = as_json(run("stats", "-s", url, "--json"))
    assert stats["sessions"] == 3 and stats["archived"] == 1  # sid-a2 was saved today
    assert run("archive-inactive", "-s", url).exit_code == 2  # --days is required


def test_sweep_removes_expired_sessions(url: str) -> None:
    fill(url)
    assert run("import", "-", "-s", url, stdin=old_sessions(2, days_ago=3)).exit_code == 0
    with_ttl = url + ("&" if "?" in url else "?") + "ttl=1d"
    assert as_json(run("stats", "-s", with_ttl, "--json"))["sessions"] == 3  # expired: unseen
    assert as_json(run("stats", "-s", url, "--json"))["sessions"] == 5  # still stored
    assert as_json(run("sweep", "-s", with_ttl, "--json")) == {"removed": 2}
    assert as_json(run("stats", "-s", url, "--json"))["sessions"] == 3  # gone for good
    text = run("sweep", "-s", with_ttl)
    assert text.exit_code == 0 and "removed 0 expired session(s)" in text.stdout


def test_copy_between_local_stores(url: str, tmp_path: Path) -> None:
    fill(url)
    target = f"lmdb:{tmp_path}/copy.lmdb"
    report = as_json(run("copy", url, target, "--json"))
    assert report == {"created": 3, "unchanged": 0, "conflicts": []}
    assert run("export", "-s", target).stdout_bytes == run("export", "-s", url).stdout_bytes
    again = run("copy", url, target)
    assert again.exit_code == 0 and "unchanged 3" in again.stdout
    alice = as_json(run("copy", url, "memory://", "--user", "alice", "--json"))
    assert alice["created"] == 2


# -- copy through Redis, through the installed script ------------------------------------------


def test_copy_lmdb_to_redis_and_back_is_exact(tmp_path: Path, redis_server: RedisServer) -> None:
    source = f"lmdb://{tmp_path}/src.lmdb"
    fill(source)
    assert run("import", "-", "-s", source, stdin=old_sessions(250, days_ago=2)).exit_code == 0
    redis_url = f"{redis_server.url}?prefix=cli-{uuid.uuid4().hex[:8]}:"
    back = f"sqlite://{tmp_path}/back.db"
    there = installed("copy", source, redis_url, "--json")
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout) == {"created": 253, "unchanged": 0, "conflicts": []}
    home = installed("copy", redis_url, back)
    assert home.returncode == 0 and "created 253" in home.stdout, home.stderr
    exports = [installed("export", "-s", where).stdout for where in (source, redis_url, back)]
    assert len(exports[0].splitlines()) == 253
    assert exports[0] == exports[1] == exports[2]  # ids, seqs, times, status: all exact
    stats = json.loads(installed("stats", "-s", redis_url, "--json").stdout)
    assert stats["sessions"] == 253 and stats["archived"] == 1 and stats["users"] == 3


def test_redis_down_is_a_store_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?connect_timeout=0.5&timeout=0.5"
    down = run("stats", "-s", url)
    assert down.exit_code == 3
    assert "127.0.0.1" in one_line_error(down.stderr, "stats")


# -- migrate ---------------------------------------------------------------------------------


def make_layout_1(url: str, sessions: int) -> None:
    """A store as an older kvsessions left it: no creation index, ``!format`` 1."""
    with SessionManager(store=open_store(url)) as manager:
        for i in range(sessions):
            manager.create_session(f"user{i % 2}", session_id=f"s{i}")
        backend = manager.store._backend
        backend.execute(Commit(put={keys.FORMAT_KEY: b"1"}, delete_ranges=[keys.created_range()]))
        assert backend.execute(Scan(*keys.created_range())) == []


def created_index(url: str) -> int:
    store = open_store(url)
    try:
        return len(store._backend.execute(Scan(*keys.created_range())))
    finally:
        store.close()


def test_migrate_upgrades_a_layout_1_store(url: str) -> None:
    make_layout_1(url, 5)
    refused = run("ls", "-s", url)
    assert refused.exit_code == 3 and "kvsessions migrate" in one_line_error(refused.stderr, "ls")
    dry = as_json(run("migrate", url, "--dry-run", "--json"))
    assert dry == {"from_version": 1, "to_version": 2, "sessions": 5, "dry_run": True}
    assert created_index(url) == 0 and run("ls", "-s", url).exit_code == 3  # nothing written
    text = run("migrate", url)
    assert text.exit_code == 0 and "upgraded layout 1 -> 2: 5 session(s)" in text.stdout
    listed = as_json(run("ls", "-s", url, "--order", "created", "--json"))
    assert sorted(s["session_id"] for s in listed["sessions"]) == [f"s{i}" for i in range(5)]
    again = run("migrate", "--store", url)
    assert again.exit_code == 0 and "nothing to do" in again.stdout


def test_an_interrupted_migration_is_finished_by_the_cli(url: str) -> None:
    make_layout_1(url, 5)
    store = open_store(url)
    backend = store._backend
    plan = lifecycle.migrate(chunk=2)  # drive it by hand and stop after the first chunk
    answer = None
    while True:
        op = plan.send(answer)
        answer = backend.execute(op)
        if isinstance(op, Commit):
            break
    plan.close()
    assert backend.execute(Get(keys.MIGRATE_KEY)) is not None  # progress recorded
    assert backend.execute(Get(keys.FORMAT_KEY)) == b"1"  # not yet upgraded
    store.close()
    assert created_index(url) == 2
    finished = as_json(run("migrate", url, "--json"))
    assert finished == {"from_version": 1, "to_version": 2, "sessions": 3, "dry_run": False}
    assert created_index(url) == 5  # resumed where it stopped, not started over
    listed = as_json(run("ls", "-s", url, "--order", "created", "--json"))
    assert len(listed["sessions"]) == 5
    assert as_json(run("check", url, "--json"))["count"] == 0
    reopened = open_store(url, create=False)
    assert reopened.layout == keys.STORE_FORMAT
    assert reopened._backend.execute(Get(keys.MIGRATE_KEY)) is None
    reopened.close()


# -- check (its contract predates the URLs) -----------------------------------------------------


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
    as_url = f"{kind}://{path}"
    data = json.loads(kvsessions("check", as_url, "--json").stdout)
    assert data["count"] == 1 and data["store"] == as_url
    assert data["damaged"][0]["key"] == repr(damaged_key)
    assert bytes.fromhex(data["damaged"][0]["key_hex"]) == damaged_key
    assert kvsessions("check", "--store", as_url).returncode == 1
    assert _snapshot(path) == before  # read-only


def _snapshot(path: Path) -> dict[str, bytes]:
    files = [path] if path.is_file() else sorted(path.iterdir())
    return {f.name: f.read_bytes() for f in files if not f.name.endswith(("-shm", "lock.mdb"))}


@pytest.mark.parametrize("where", ["server", "cluster"])
def test_check_reports_damage_on_redis(where: str, request: pytest.FixtureRequest) -> None:
    if where == "server":
        server: RedisServer = request.getfixturevalue("redis_server")
        url, client = server.url, redis.Redis(host="127.0.0.1", port=server.port)
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        url = cluster.url
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    prefix = f"chk{uuid.uuid4().hex[:8]}:"
    as_url = f"{url}?prefix={prefix}"
    untouched = f"{url}?prefix=none{uuid.uuid4().hex[:8]}:"  # never written to
    assert as_json(run("check", untouched, "--json"))["count"] == 0
    assert not list(client.scan_iter(match=untouched.rpartition("=")[2] + "*"))  # read-only
    store = RedisSessionStore(url, prefix=prefix)
    manager = SessionManager(store)
    good, bad = manager.create_session("u"), manager.create_session("u")
    for session in (good, bad):
        session.add_message("user", "hello")
        manager.save(session)
    assert as_json(run("check", as_url, "--json"))["count"] == 0

    def key(sid: str, family: bytes) -> bytes:  # a key under the shard tag of ``sid``
        return store._backend._tag(sid.encode())[0] + family

    bad_messages = key(bad.session_id, b"m" + bad.session_id.encode() + b"\x00")
    client.zadd(bad_messages, {struct.pack(">Q", 1) + b"\x80\x04pickle": 0})
    ghost_index = key(good.session_id, b"iu\x00")  # the user's index shard of good's tag
    client.zadd(ghost_index, {struct.pack(">Q", 1) + b"ghost\x00": 0})
    orphan = key("orphan", b"morphan\x00")  # messages of a session without a header
    client.zadd(orphan, {struct.pack(">Q", 0) + codec.encode_message(good.messages[0], 0): 0})
    foreign = key(good.session_id, b"zzz")
    client.set(foreign, b"not ours")
    untagged = prefix.encode() + b"{nope}h" + good.session_id.encode() + b"\x00"
    client.set(untagged, b"?")
    manager.close()
    before = {k: client.dump(k) for k in client.scan_iter(match=prefix + "*")}
    report = run("check", as_url, "--json")
    assert report.exit_code == 1, report.output
    data = json.loads(report.stdout)
    problems = {item["key"]: item["problem"] for item in data["damaged"]}
    damaged = (bad_messages, ghost_index, orphan, foreign, untagged)
    assert set(problems) == {repr(k) for k in damaged}
    assert "pickle" in problems[repr(bad_messages)]
    assert "ghost" in problems[repr(ghost_index)] and "no header" in problems[repr(ghost_index)]
    assert "no header" in problems[repr(orphan)]
    assert problems[repr(foreign)] == "not a kvsessions key"
    assert "shard tags" in problems[repr(untagged)]
    assert data["count"] == 5 and bytes.fromhex(data["damaged"][0]["key_hex"]) in before
    assert "5 damaged" in run("check", as_url).stdout
    assert {k: client.dump(k) for k in client.scan_iter(match=prefix + "*")} == before
    client.close()


def test_check_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    missing = kvsessions("check", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "neither" in missing.stderr
    assert not (tmp_path / "nothing").exists()
    SQLiteSessionStore(tmp_path / "x.db", table_name="chat").close()
    wrong_table = kvsessions("check", str(tmp_path / "x.db"))
    assert wrong_table.returncode == 2 and "--table" in wrong_table.stderr
    assert kvsessions("check", str(tmp_path / "x.db"), "--table", "chat").returncode == 0
    assert kvsessions("check", f"sqlite://{tmp_path}/x.db?table=chat").returncode == 0
    not_local = run("check", "memory://")
    assert not_local.exit_code == 2 and "LMDB, SQLite and Redis" in not_local.stderr
    two = run("check", str(tmp_path / "x.db"), "--store", f"{tmp_path}/y.lmdb")
    assert two.exit_code == 2 and "two stores given" in two.stderr
    env = {"KVSESSIONS_STORE": "memory://"}  # the argument wins over the environment
    assert run("check", f"sqlite://{tmp_path}/x.db?table=chat", env=env).exit_code == 0
    assert run("check", env=env).exit_code == 2  # ... which is used without one


# -- errors, exit codes, the store by default and from the environment -----------------------------


def test_errors_are_one_line_with_their_exit_status(tmp_path: Path) -> None:
    cases = [
        (("ls", "-s", "mongodb://h/db"), 2, "unknown store URL scheme 'mongodb'"),
        (("ls", "-s", "lmdb:///x.lmdb?colour=red"), 2, "unknown option 'colour'"),
        (("stats", "-s", f"{tmp_path}/none.lmdb"), 2, "no LMDB store at"),
        (("sweep", "-s", f"sqlite://{tmp_path}/none.db"), 2, "no SQLite database at"),
    ]
    for args, status, message in cases:
        result = run(*args)
        assert result.exit_code == status, (args, result.output)
        assert message in one_line_error(result.stderr, args[0])
    assert not list(tmp_path.iterdir())  # looking never creates a store
    usage = run("ls", "--limit", "0")
    assert usage.exit_code == 2 and "Usage:" in usage.stderr  # click's own usage errors
    assert run("frobnicate").exit_code == 2
    not_ours = tmp_path / "other.lmdb"
    LMDBSessionStore(not_ours).close()
    damaged_marker = open_store(not_ours)
    damaged_marker._backend.execute(Commit(put={keys.FORMAT_KEY: b"99"}))
    damaged_marker.close()
    newer = run("stats", "-s", str(not_ours))
    assert newer.exit_code == 3 and "newer kvsessions" in one_line_error(newer.stderr, "stats")


def test_default_store_and_environment(tmp_path: Path) -> None:
    nothing = kvsessions("ls", cwd=tmp_path)
    assert nothing.returncode == 2
    assert "sessions.lmdb" in nothing.stderr and "KVSESSIONS_STORE" in nothing.stderr
    fill(f"lmdb://{tmp_path}/sessions.lmdb")
    default = kvsessions("stats", "--json", cwd=tmp_path)
    assert json.loads(default.stdout)["sessions"] == 3, default.stderr
    elsewhere = f"sqlite://{tmp_path}/env.db"
    fill(elsewhere)
    run("archive-inactive", "--days", "0", "-s", elsewhere)
    env = {**os.environ, "KVSESSIONS_STORE": elsewhere}
    from_env = kvsessions("stats", "--json", cwd=tmp_path, env=env)
    assert json.loads(from_env.stdout)["archived"] == 3, from_env.stderr
    flag_wins = kvsessions("stats", "--json", "-s", "sessions.lmdb", cwd=tmp_path, env=env)
    assert json.loads(flag_wins.stdout)["archived"] == 1


def test_installed_script_help_and_version() -> None:
    helped = installed("--help")
    assert helped.returncode == 0
    for command in ("stats", "ls", "show", "export", "import", "copy", "archive-inactive",
                    "purge-archived", "sweep", "check", "migrate", "demo"):  # fmt: skip
        assert f"\n  {command} " in helped.stdout
    assert "Exit status:" in helped.stdout and "3  the store failed" in helped.stdout
    version = installed("--version")
    assert version.returncode == 0 and "kvsessions, version" in version.stdout


def test_demo_runs_and_continues(tmp_path: Path) -> None:
    first = kvsessions("demo", "--path", str(tmp_path / "demo.lmdb"))
    assert first.returncode == 0, first.stderr
    assert "demo-alice" in first.stdout and "messages=4" in first.stdout
    second = installed("demo", "--path", str(tmp_path / "demo.lmdb"))
    assert "messages=8" in second.stdout  # the same sessions, continued
    listed = kvsessions("ls", "-s", str(tmp_path / "demo.lmdb"), "--json")
    assert len(json.loads(listed.stdout)["sessions"]) == 3


# -- the progress bar --------------------------------------------------------------------------


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    leader, follower = pty.openpty()
    yield leader, follower
    for fd in (leader, follower):
        os.close(fd)


def test_progress_bar_on_a_terminal_only(tmp_path: Path, terminal: tuple[int, int]) -> None:
    source = f"lmdb://{tmp_path}/src.lmdb"
    fill(source)
    leader, follower = terminal
    process = subprocess.Popen(
        [sys.executable, "-m", "kvsessions", "copy", source, f"lmdb://{tmp_path}/dst.lmdb"],
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    stdout, _ = process.communicate(timeout=120)
    shown = b""
    while select.select([leader], [], [], 0.5)[0]:
        chunk = os.read(leader, 4096)
        if not chunk:
            break
        shown += chunk
    assert process.returncode == 0 and "created 3" in stdout
    assert b"copying sessions" in shown and b"3" in shown  # the bar, with its count
    quiet = kvsessions("copy", source, f"lmdb://{tmp_path}/dst2.lmdb")
    assert quiet.returncode == 0 and quiet.stderr == ""  # not a terminal: no bar
