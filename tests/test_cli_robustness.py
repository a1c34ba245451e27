"""The ``kvsessions`` command at its edges: days past the calendar, output that cannot be
written, Redis URL options that do not fit the scheme, passwords with ``@``, and import
lines whose numbers or times a store cannot keep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pytest

from kvsessions import InvalidSessionError, RedisSessionStore, StoreConfigError
from kvsessions.transfer import FORMAT, parse_line
from kvsessions.urls import parse_store_url

from .test_cli import fill, old_sessions, one_line_error, run

DEV_FULL = Path("/dev/full")


def popen(*args: str, stdout: int | IO[Any]) -> subprocess.CompletedProcess[str]:
    """``python -m kvsessions ARGS`` with stdout where the test says."""
    return subprocess.run(
        [sys.executable, "-m", "kvsessions", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )


def line(**changes: object) -> bytes:
    """One export line of a small valid session, with ``changes`` applied."""
    data: dict[str, object] = {
        "format": FORMAT,
        "session_id": "s1",
        "user_id": "u",
        "status": "active",
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "parent_id": None,
        "metadata": {},
        "state": {},
        "messages": [],
    }
    data.update(changes)
    return json.dumps(data).encode() + b"\n"


# -- ls --inactive -------------------------------------------------------------------------


@pytest.mark.parametrize("days", ["1000000", "inf", "1e300"])
def test_ls_inactive_past_the_calendar_lists_nothing(tmp_path: Path, days: str) -> None:
    url = f"lmdb://{tmp_path}/s.lmdb"
    assert run("import", "-", "-s", url, stdin=old_sessions(3, days_ago=40)).exit_code == 0
    text = run("ls", "-s", url, "--inactive", days)
    assert text.exit_code == 0, text.output
    assert text.stdout == "" and "no sessions" in text.stderr
    data = run("ls", "-s", url, "--inactive", days, "--all", "--json")
    assert data.exit_code == 0, data.output
    assert json.loads(data.stdout) == {"sessions": [], "cursor": None}
    month = json.loads(run("ls", "-s", url, "--inactive", "30", "--json").stdout)
    assert len(month["sessions"]) == 3  # those are listed


# -- output that cannot be written ---------------------------------------------------------

needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full")


@needs_dev_full
def test_export_to_a_full_disk_is_one_line_and_exit_3(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/s.lmdb"
    fill(url)
    for args in (("--json",), ()):
        done = popen("export", str(DEV_FULL), "-s", url, *args, stdout=subprocess.PIPE)
        assert done.returncode == 3, done.stderr
        assert "No space left" in one_line_error(done.stderr, "export")
        assert done.stdout == "" and "exported" not in done.stderr  # no success claimed


@needs_dev_full
@pytest.mark.parametrize(
    "args", [("export",), ("ls",), ("ls", "--json"), ("stats",), ("show", "sid-b1", "--json")]
)
def test_stdout_on_a_full_disk_is_one_line_and_exit_3(tmp_path: Path, args: tuple[str]) -> None:
    url = f"lmdb://{tmp_path}/s.lmdb"
    fill(url)
    with DEV_FULL.open("w") as full:
        done = popen(*args, "-s", url, stdout=full)
    assert done.returncode == 3, done.stderr
    assert "No space left" in one_line_error(done.stderr, args[0])  # nothing more at exit


def test_a_closed_pipe_still_ends_quietly(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/s.lmdb"
    fill(url)
    read, write = os.pipe()
    os.close(read)  # `kvsessions export | head -c 0`
    with os.fdopen(write, "w") as pipe:
        done = popen("export", "-s", url, stdout=pipe)
    assert "Traceback" not in done.stderr and "kvsessions export:" not in done.stderr
    assert done.returncode != 3


# -- Redis URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:1/0?ssl_cert_reqs=required",
        "redis+cluster://127.0.0.1:1?ssl_check_hostname=true",
        "unix:///run/redis.sock?ssl_ca_certs=/etc/ca.pem",
    ],
)
def test_ssl_options_need_a_tls_url(url: str) -> None:
    with pytest.raises(StoreConfigError, match="rediss://"):
        parse_store_url(url)
    result = run("stats", "-s", url)
    assert result.exit_code == 2, result.output
    assert "ssl_" in one_line_error(result.stderr, "stats")
    with pytest.raises(StoreConfigError, match="rediss://"):  # (the store itself, directly)
        RedisSessionStore(url)


def test_ssl_options_pass_through_on_tls_urls() -> None:
    spec = parse_store_url("rediss+cluster://h:7000?ssl_cert_reqs=none&prefix=p:")
    assert spec.target == "rediss+cluster://h:7000?ssl_cert_reqs=none"
    assert parse_store_url("rediss://h:1/0?ssl_check_hostname=false").options == {}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pa@ss@127.0.0.1:1/0", "redis://u:***@127.0.0.1:1/0"),
        ("redis://:p@s@s@h:1", "redis://:***@h:1"),
        ("redis://us@er:secret@h:1/0", "redis://us@er:***@h:1/0"),
        ("rediss+cluster://u:a@b@h:7000?prefix=x", "rediss+cluster://u:***@h:7000?prefix=x"),
    ],
)
def test_a_password_with_at_signs_is_hidden_whole(url: str, shown: str) -> None:
    assert parse_store_url(url).display == shown
    password = urlsplit(url).password  # (urllib reads the password as redis-py does)
    assert password
    bad = url + ("&" if "?" in url else "?") + "prefix="  # an option without a value
    with pytest.raises(StoreConfigError) as caught:
        parse_store_url(bad)
    assert password not in str(caught.value) and shown.partition("?")[0] in str(caught.value)
    result = run("stats", "-s", bad)
    assert result.exit_code == 2, result.output
    assert password not in result.stderr and "***@" in one_line_error(result.stderr, "stats")


# -- import lines a store cannot keep --------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"state": {"turns": 123456789012345678901234567890}},
        {"metadata": {"n": [1, {"deep": 2**64}]}},
        {"state": {"low": -(2**63) - 1}},
    ],
)
def test_import_refuses_integers_beyond_64_bits(tmp_path: Path, changes: dict[str, object]) -> None:
    url = f"lmdb://{tmp_path}/s.lmdb"
    fine = line(session_id="first")
    result = run("import", "-", "-s", url, stdin=fine + line(**changes))
    assert result.exit_code == 2, result.output
    message = one_line_error(result.stderr, "import")
    assert "line 2" in message and "64" in message
    listed = json.loads(run("ls", "-s", url, "--json").stdout)["sessions"]
    assert [s["session_id"] for s in listed] == ["first"]  # the lines before it are imported


def test_a_big_integer_is_refused_in_text_lines_and_deep_ones_are_one_error() -> None:
    big = line(state={"turns": 2**70}).decode()  # (a text file gives str lines)
    with pytest.raises(InvalidSessionError, match=r"line 4: state\['turns'\]: integer"):
        parse_line(big, "line 4")
    deep = line(state={"n": 10**18, "deep": "X"}).replace(b'"X"', b"[" * 1000 + b"]" * 1000)
    with pytest.raises(InvalidSessionError, match="line 5: nested too deeply"):
        parse_line(deep, "line 5")  # (orjson reads 1,024 levels, the json module fewer)


def test_import_keeps_long_numbers_that_fit(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/s.lmdb"
    values = {"max": 2**64 - 1, "min": -(2**63), "text": "12345678901234567890123", "f": 1.5e300}
    result = run("import", "-", "-s", url, stdin=line(state=values))
    assert result.exit_code == 0, result.output
    shown = json.loads(run("show", "s1", "-s", url, "--json").stdout)
    assert shown["state"] == values


@pytest.mark.parametrize(
    ("moment", "message"),
    [
        ("9999-12-31T23:59:59-12:00", "after the year 9999 in UTC"),
        ("0001-01-01T00:00:00+01:00", "before the year 1 in UTC"),
    ],
)
def test_import_says_which_end_of_the_calendar_a_time_is_past(
    tmp_path: Path, moment: str, message: str
) -> None:
    result = run("import", "-", "-s", f"lmdb://{tmp_path}/s.lmdb", stdin=line(created_at=moment))
    assert result.exit_code == 2, result.output
    assert message in one_line_error(result.stderr, "import")
