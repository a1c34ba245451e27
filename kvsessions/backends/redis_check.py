"""``kvsessions check`` on Redis: every key of a store's prefix read back and verified.

Redis has no ordered key space to scan, so the check walks each node's keys of the
prefix (``SCAN MATCH P{*``) and reads each one as its name says it is:

- a header (``P{T}h<sid>``) must decode and sit under its session's shard tag ``T``;
- a message set (``P{T}m<sid>``) must belong to a session with a header, and each member
  must be an 8-byte seq followed by a message record of that seq;
- an index shard (``P{T}i<user>``, ``P{T}a<status>``, ``P{T}c``) must name only sessions
  with a header (with a ``ttl``, entries of expired sessions are expected, not damage:
  listings drop them as they meet them);
- anything else under ``P{`` is not a kvsessions key.

It only reads.  Keys are checked ``TOGETHER`` at a time, their reads pipelined, so the
round trips grow with the pages, not the keys.  Sets are read ``CHUNK`` members at a
time; each read is consistent, the whole check is not (run it while nothing writes, as
for the local stores).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

from .. import keys
from ..codec import decode_header, decode_message
from ..errors import CorruptRecordError, SchemaVersionError
from .redis import Exchange, RedisBackend

__all__ = ["check_redis"]

T = TypeVar("T")

CHUNK = 1000  # members per read of a sorted set
TOGETHER = 100  # keys checked side by side, their reads pipelined in shared round trips
_SEQ = struct.Struct(">Q")
_INDEX_FAMILIES = (b"aA", b"aR", keys.CREATED_SPACE)
_DECODE_ERRORS = (CorruptRecordError, SchemaVersionError, UnicodeDecodeError, ValueError)

#: A check of one chunk of a set's members: the first problem, or None.
ChunkCheck = Callable[[list[bytes]], Exchange[str | None]]


def check_redis(backend: RedisBackend) -> list[tuple[bytes, str]]:
    """The damaged keys of the store's prefix as ``(redis key, problem)``, in key order."""
    return sorted(backend._drive(_check(backend)))


def _check(backend: RedisBackend) -> Exchange[list[tuple[bytes, str]]]:
    problems: list[tuple[bytes, str]] = []

    def check_page(node: str, found: list[bytes]) -> Exchange[None]:
        found = sorted(found)
        for at in range(0, len(found), TOGETHER):  # (their reads share round trips)
            group = found[at : at + TOGETHER]
            checks = yield from _together([_check_key(backend, node, k) for k in group])
            problems.extend((k, why) for k, why in zip(group, checks, strict=True) if why)

    yield from backend._scan_prefix(check_page)
    return problems


def _together(exchanges: list[Exchange[T]]) -> Exchange[list[T]]:
    """Run exchanges side by side: each round trip carries every one's next commands
    (per node, in order), and each gets back its own replies.  Their results, in order."""
    results: list[Any] = [None] * len(exchanges)
    asks: dict[int, dict[str, list[tuple[Any, ...]]]] = {}
    for i, exchange in enumerate(exchanges):
        try:
            asks[i] = next(exchange)
        except StopIteration as done:
            results[i] = done.value
    while asks:
        batch: dict[str, list[tuple[Any, ...]]] = {}
        spans: dict[int, dict[str, tuple[int, int]]] = {}
        for i, ask in asks.items():
            for node, commands in ask.items():
                sent = batch.setdefault(node, [])
                spans.setdefault(i, {})[node] = (len(sent), len(sent) + len(commands))
                sent += commands
        replies = yield batch
        following: dict[int, dict[str, list[tuple[Any, ...]]]] = {}
        for i in asks:
            mine = {
                node: got if isinstance(got := replies[node], BaseException) else got[lo:hi]
                for node, (lo, hi) in spans[i].items()
            }
            try:
                following[i] = exchanges[i].send(mine)
            except StopIteration as done:
                results[i] = done.value
        asks = following
    return results


def _check_key(backend: RedisBackend, node: str, key: bytes) -> Exchange[str | None]:
    """The problem with one key of the prefix, or None."""
    close = key.find(b"}", len(backend._prefix) + 1)
    if close < 0 or key[: close + 1] not in backend._bases:
        return (
            f"not under one of this store's {backend._shards} shard tags (a store made with "
            "another shards count: pass ?shards=N in the URL)"
        )
    family = key[close + 1 :]
    named = family[:1] in (b"h", b"m", keys.USER_SPACE) and family.endswith(b"\x00")
    if named and family[:1] == b"h":
        return (yield from _check_header(backend, node, key, family[1:-1]))
    if named and family[:1] == b"m":
        sid = family[1:-1]
        (has_header,) = yield from backend._ask(node, [("EXISTS", _header_key(key, sid))])
        if not has_header:
            return f"messages of session {_text(sid)!r}, which has no header"
        return (yield from _check_set(backend, node, key, _message_problems))
    if named or family in _INDEX_FAMILIES:
        return (yield from _check_set(backend, node, key, _index_problems(backend, node, key)))
    return "not a kvsessions key"


def _check_header(backend: RedisBackend, node: str, key: bytes, sid: bytes) -> Exchange[str | None]:
    (value,) = yield from backend._ask(node, [("GET", key)], errors_as_values=True)
    if isinstance(value, BaseException):
        return f"not a string: {value}"
    if value is None:
        return None  # (deleted or expired since the SCAN)
    try:
        decode_header(value)
    except _DECODE_ERRORS as exc:
        return str(exc)
    if key[: key.index(b"}") + 1] != backend._tag(sid)[0]:
        return f"header of session {_text(sid)!r} under another shard's tag than its id's"
    return None


def _check_set(
    backend: RedisBackend, node: str, key: bytes, check_chunk: ChunkCheck
) -> Exchange[str | None]:
    """The first problem among a sorted set's members, read ``CHUNK`` at a time."""
    start = 0
    while True:
        command = ("ZRANGE", key, start, start + CHUNK - 1)
        (members,) = yield from backend._ask(node, [command], errors_as_values=True)
        if isinstance(members, BaseException):
            return f"not a sorted set: {members}"
        problem = yield from check_chunk(members)
        if problem or len(members) < CHUNK:
            return problem
        start += CHUNK


def _message_problems(members: list[bytes]) -> Exchange[str | None]:
    for member in members:
        problem = _message_problem(member)
        if problem:
            return f"member {member[:40]!r}: {problem}"
    return None
    yield  # (an exchange that asks for nothing)


def _message_problem(member: bytes) -> str | None:
    if len(member) < 9:
        return "too short to hold a seq and a record"
    try:
        seq = decode_message(member[8:]).seq
    except _DECODE_ERRORS as exc:
        return str(exc)
    stored = _SEQ.unpack_from(member)[0]
    return None if seq == stored else f"message record says seq {seq}, its member says {stored}"


def _index_problems(backend: RedisBackend, node: str, key: bytes) -> ChunkCheck:
    """For an index shard: each member names a session of this shard that has a header."""

    def check(members: list[bytes]) -> Exchange[str | None]:
        for member in members:
            if len(member) < 10 or not member.endswith(b"\x00"):
                return f"member {member[:40]!r}: not a time and a session id"
        if backend._ttl_ms is not None:  # entries of expired sessions are expected there
            return None
        sids = [member[8:-1] for member in members]
        found = yield from backend._ask(node, [("EXISTS", _header_key(key, s)) for s in sids])
        for sid, exists in zip(sids, found, strict=True):
            if not exists:
                return f"index entry for session {_text(sid)!r}, which has no header"
        return None

    return check


def _header_key(key: bytes, sid: bytes) -> bytes:
    """The header key of session ``sid`` under the same shard tag as ``key``."""
    return key[: key.index(b"}") + 1] + b"h" + sid + b"\x00"


def _text(sid: bytes) -> str:
    return sid.decode("utf-8", "backslashreplace")
