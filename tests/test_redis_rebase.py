"""Redis: a save that only appended and lost a race is re-based by the commit script.

The script edits the header that won as text (``backends/redis.py``, ``_REBASE``); these
tests hold what it writes to exactly what the client's own plan would have written
(``core._successor`` + ``codec.encode_header``) for the same inputs, on the edges of that
text: user ids that need escaping, state holding the text ``,"recent":[``, a full list
of recent save tokens, a forked session's ``parent`` field, a save in a new minute (the
activity index moves), a TTL; and check that anything else still goes to the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import redis

from kvsessions import RedisSessionStore, SessionManager, SessionStatus, keys
from kvsessions.codec import RECENT_TOKENS, decode_header, encode_header
from kvsessions.core import _successor
from kvsessions.model import utcnow

from .redis_servers import RedisCluster, RedisServer
from .test_redis import EvalCounter, client, fresh_prefix


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


class Calls:
    """Script calls over all the nodes (a cluster sends one save to one node)."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self._counters = [EvalCounter(node) for node in nodes]

    def delta(self) -> int:
        return sum(counter.delta() for counter in self._counters)


def header_bytes(nodes: list[RedisServer], prefix: str, sid: str) -> bytes:
    """The stored header, read with plain redis-py (whichever node holds it)."""
    found = []
    for node in nodes:
        for key in client(node).scan_iter(match=f"{prefix}*", count=1000):
            if key.endswith(keys.header_key(sid)):
                found.append(client(node).get(key))
    assert len(found) == 1
    return found[0]  # type: ignore[no-any-return]


def activity_buckets(nodes: list[RedisServer], prefix: str, sid: str) -> list[int]:
    """The activity index entries (their minute, in µs) naming ``sid``."""
    found = []
    for node in nodes:
        conn = client(node)
        for key in conn.scan_iter(match=f"{prefix}*", count=1000):
            if key.endswith(b"}aA"):
                for member in conn.zrange(key, 0, -1):
                    if member[8:] == sid.encode() + b"\x00":
                        found.append(int.from_bytes(member[:8], "big"))
    return found


def expected_header(before: bytes, after: bytes, user_id: str, added: int) -> bytes:
    """What the client's plan writes on ``before`` for a save of ``added`` messages, with
    the time and save token the script used (read back from ``after``)."""
    won, written = decode_header(before), decode_header(after)
    record = _successor(
        won, user_id, won.status, won.metadata, won.state, added, written.updated_at,
        written.recent[-1],
    )  # fmt: skip
    return encode_header(record)


@pytest.fixture(params=["server", "cluster"])
def place(request: pytest.FixtureRequest) -> tuple[str, list[RedisServer]]:
    if request.param == "server":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url, [server]
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return cluster.url, list(cluster.nodes)


def managers(
    url: str, prefix: str, clock: Callable[[], datetime] = utcnow, ttl: float | None = None
) -> tuple[SessionManager, SessionManager]:
    return (
        SessionManager(RedisSessionStore(url, prefix=prefix, ttl=ttl), clock=clock),
        SessionManager(RedisSessionStore(url, prefix=prefix, ttl=ttl), clock=clock),
    )


def test_a_lost_append_is_rebased_in_its_one_round_trip(
    place: tuple[str, list[RedisServer]],
) -> None:
    url, nodes = place
    prefix = fresh_prefix()
    mine_mgr, their_mgr = managers(url, prefix)
    user = 'ü "quoted" \\ user'
    created = mine_mgr.create_session(user, {"m": [1, {"x": None}]})
    created.set_state("recent", ',"recent":["not-a-token"]')  # the script's landmark, as data
    mine_mgr.save(created)
    sid = created.session_id

    mine = mine_mgr.get_session(sid, messages=0)
    theirs = their_mgr.get_session(sid, messages=0)
    assert mine is not None and theirs is not None
    theirs.add_message("user", "theirs")
    their_mgr.save(theirs)
    won = header_bytes(nodes, prefix, sid)

    mine.add_message("assistant", "mine", q=7, note='"q":9}')
    calls = Calls(nodes)
    mine_mgr.save(mine)
    assert calls.delta() == 1  # the lost race cost no extra round trip

    written = header_bytes(nodes, prefix, sid)
    assert written == expected_header(won, written, user, 1)
    assert [(m.seq, m.content) for m in mine.messages] == [(0, "theirs"), (1, "mine")]
    assert mine.messages[1].extras == {"q": 7, "note": '"q":9}'}
    assert (mine.message_count, mine.version) == (2, theirs.version + 1)
    assert mine._base is not None and mine._base.record.user_id is mine.user_id

    mine.add_message("user", "again")  # the session mirrors the store: a plain save now
    mine_mgr.save(mine)
    stored = their_mgr.get_session(sid)
    assert stored is not None
    assert [(m.seq, m.content, m.extras) for m in stored.messages] == [
        (0, "theirs", {}), (1, "mine", {"q": 7, "note": '"q":9}'}), (2, "again", {}),
    ]  # fmt: skip
    assert stored.metadata == {"m": [1, {"x": None}]}
    assert stored.get_state("recent") == ',"recent":["not-a-token"]'
    mine_mgr.close()
    their_mgr.close()


def test_full_token_list_parent_new_minute_and_ttl(place: tuple[str, list[RedisServer]]) -> None:
    url, nodes = place
    prefix = fresh_prefix()
    clock = Clock()
    mine_mgr, their_mgr = managers(url, prefix, clock, ttl=300)
    origin = mine_mgr.create_session("u")
    origin.add_message("user", "first")
    mine_mgr.save(origin)
    fork = mine_mgr.fork(origin.session_id)
    sid = fork.session_id
    for n in range(RECENT_TOKENS + 1):  # the header's token list is full
        fork.add_message("user", f"n{n}")
        mine_mgr.save(fork)

    mine = mine_mgr.get_session(sid, messages=2)
    theirs = their_mgr.get_session(sid, messages=0)
    assert mine is not None and theirs is not None
    theirs.add_message("user", "theirs-1")
    theirs.add_message("user", "theirs-2")
    their_mgr.save(theirs)
    won = header_bytes(nodes, prefix, sid)
    assert len(decode_header(won).recent) == RECENT_TOKENS
    assert decode_header(won).parent == origin.session_id

    session_keys = [
        (conn, key)
        for conn in map(client, nodes)
        for key in conn.scan_iter(match=f"{prefix}*", count=1000)
        if key.endswith((keys.header_key(sid), b"m" + keys.header_key(sid)[1:]))
    ]
    assert len(session_keys) == 2
    for conn, key in session_keys:  # our save must arm their TTL again
        conn.persist(key)
    clock.now += timedelta(minutes=2)  # our save lands in a later minute
    mine.add_message("assistant", "mine-1")
    mine.add_message("assistant", "mine-2")
    calls = Calls(nodes)
    mine_mgr.save(mine)
    assert calls.delta() == 1

    written = header_bytes(nodes, prefix, sid)
    assert written == expected_header(won, written, "u", 2)
    record = decode_header(written)
    assert len(record.recent) == RECENT_TOKENS and record.parent == origin.session_id
    assert [(m.seq, m.content) for m in mine.messages] == [
        (8, "n7"),
        (9, "n8"),
        (10, "theirs-1"),
        (11, "theirs-2"),
        (12, "mine-1"),
        (13, "mine-2"),
    ]  # fmt: skip (the window of 2 it loaded, what it missed, its own)
    minute = keys.activity_bucket(record.updated_at)
    assert activity_buckets(nodes, prefix, sid) == [minute]  # moved, not duplicated
    page = their_mgr.list_sessions("u", order="activity")
    assert page.sessions[0].session_id == sid
    for conn, key in session_keys:
        assert 0 < conn.pttl(key) <= 300_000
    mine_mgr.close()
    their_mgr.close()


@pytest.mark.parametrize("change", ["state", "metadata", "archive", "delete"])
def test_anything_but_appends_goes_back_to_the_plan(redis_server: RedisServer, change: str) -> None:
    prefix = fresh_prefix()
    mine_mgr, their_mgr = managers(redis_server.url, prefix)
    sid = mine_mgr.create_session("u").session_id
    mine = mine_mgr.get_session(sid, messages=0)
    theirs = their_mgr.get_session(sid)
    assert mine is not None and theirs is not None
    if change == "state":
        theirs.set_state("k", 1)
    elif change == "metadata":
        theirs.metadata["k"] = 1
    if change in ("state", "metadata"):
        theirs.add_message("user", "theirs")
        their_mgr.save(theirs)
    elif change == "archive":
        their_mgr.archive(sid)
    else:
        their_mgr.delete(sid)
    mine.add_message("user", "mine")
    outcome: Any
    try:
        mine_mgr.save(mine)
        outcome = "saved"
    except Exception as exc:  # the plan's own, typed answer
        outcome = type(exc).__name__
    expected = {
        "state": "saved", "metadata": "saved", "archive": "SessionArchivedError",
        "delete": "SessionNotFoundError",
    }  # fmt: skip
    assert outcome == expected[change]
    if outcome == "saved":
        stored = their_mgr.get_session(sid)
        assert stored is not None
        assert [m.content for m in stored.messages] == ["theirs", "mine"]
        assert (stored.state, stored.metadata) == (mine.state, mine.metadata)
        assert {"state": stored.state, "metadata": stored.metadata}[change] == {"k": 1}
    elif change == "archive":
        stored = their_mgr.get_session(sid)
        assert stored is not None and stored.status is SessionStatus.ARCHIVED
        assert stored.message_count == 0
    else:
        assert their_mgr.get_session(sid) is None
    mine_mgr.close()
    their_mgr.close()


def test_a_header_in_another_field_order_is_left_to_the_plan(redis_server: RedisServer) -> None:
    """The script only edits headers shaped as this codec writes them; one written in
    another (valid) field order is re-based by the plan, which rewrites it in order."""
    prefix = fresh_prefix()
    mine_mgr, their_mgr = managers(redis_server.url, prefix)
    sid = mine_mgr.create_session("u").session_id
    mine = mine_mgr.get_session(sid, messages=0)
    theirs = their_mgr.get_session(sid, messages=0)
    assert mine is not None and theirs is not None
    theirs.add_message("user", "theirs")
    their_mgr.save(theirs)
    conn = redis.Redis.from_url(redis_server.url)
    (hkey,) = [k for k in conn.scan_iter(match=f"{prefix}*") if k.endswith(keys.header_key(sid))]
    record = orjson.loads(conn.get(hkey)[2:])
    reordered = dict(reversed(list(record.items())))
    conn.set(hkey, conn.get(hkey)[:2] + orjson.dumps(reordered))
    mine.add_message("user", "mine")
    mine_mgr.save(mine)
    stored = their_mgr.get_session(sid)
    assert stored is not None and [m.content for m in stored.messages] == ["theirs", "mine"]
    assert conn.get(hkey) == encode_header(decode_header(conn.get(hkey)))  # in order again
    mine_mgr.close()
    their_mgr.close()
