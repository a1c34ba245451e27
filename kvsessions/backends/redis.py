"""The Redis backend: the key-value protocol over redis-py (blocking) and redis.asyncio.

Every operation a plan yields is answered with one round trip per Redis node: a Lua
script (``EVALSHA``, loaded again after ``NOSCRIPT``) per hash slot, pipelined per node
(a read of headers only, such as a header-only load, is a ``GET``, or an ``MGET`` of
several, instead).
A single Redis is one node, so there every operation is exactly one round trip.

Layout (``P`` = the store's prefix, ``T`` = the session's shard tag, ``sid``/``user`` as in
:mod:`kvsessions.keys`, NUL-terminated)::

    P{T}h<sid>      string    the session header
    P{T}m<sid>      zset      its messages: member = 8-byte seq + the record, score 0
    P{T}i<user>     zset      index shard: member = created_us (8 bytes) + sid, of the
                              user's sessions whose shard is T
    P{T}a<status>   zset      index shard: member = updated_us (8 bytes) + sid
    P{T}c           zset      index shard: member = created_us (8 bytes) + sid
    P!format        string    the store's format version

Sessions are spread over ``shards`` tags (``crc32(sid) % shards``), chosen so their hash
slots are evenly spaced; everything of one session, including the index entries that name
it, lives under its tag, so each save is one atomic script in one slot (Redis Cluster
ready).  A user's listing or the activity scan asks every shard (one script per slot,
pipelined per node) and merges in key order.  ``shards`` is part of the layout: keep it
fixed for a prefix.  Multi-session commits (``archive_inactive``) run one atomic script
per slot; if one conflicts the plan re-reads and retries (the others stay applied, and
were consistent on their own).  Redis does not undo a script's earlier writes when a
command fails, so the commit script checks its ops and the type of every sorted set it
will write before its first write: a foreign key of the wrong type fails the commit
whole (``CorruptRecordError``).

``ttl`` (seconds): each commit re-arms ``PEXPIRE`` on the session's header and messages
and on the index shards holding its entries (user, activity, creation), in the same
script, so a session's keys expire together.  Index shards are shared by the sessions of
one tag and outlive each of them; scans drop (and delete) members whose header has
expired, so a listing never returns an expired session.  The ttl is fixed per prefix,
like ``shards``: with ``ttl=None`` commits send no expiry work (clearing a TTL an earlier
ttl left cost a commit about a sixth of its speed), so keys a ttl armed keep expiring.
Only keys starting with ``P{`` and ``P!format`` are ever written or deleted.
``clear_all`` scans them twice: it unlinks each session's header and messages in one
``UNLINK``, then drops index entries naming no header (at most ``CHUNK`` per script
call), so a session saved meanwhile is deleted whole or kept whole.

Open a cluster with ``url="redis+cluster://host:port"`` (``rediss+cluster://`` for TLS):
the slot map comes from ``CLUSTER SLOTS`` and is refreshed on ``MOVED`` or a lost node;
an ``ASK`` (a slot being migrated) sends that command once more, to the node named,
after ``ASKING``.

redis.asyncio clients are bound to the event loop that made them, so the backend keeps
them per loop (:class:`_LoopClients`): several loops (``asyncio.run`` after
``asyncio.run``, or one loop per thread) each keep their own, and each loop's clients are
closed on that loop when it shuts down (``loop.shutdown_asyncgens()``, which
``asyncio.run`` and ``asyncio.Runner`` call), by :meth:`RedisBackend.close`, or, for a loop
closed without that shutdown, as well as a closed loop allows (``_LoopClients.abandon``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import sys
import threading
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import attrs
import orjson
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.connection
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from .. import keys
from ..codec import _PREFIX as HEADER_PREFIX
from ..codec import RECENT_TOKENS
from ..errors import (
    CorruptRecordError,
    StoreClosedError,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
)
from ..model import SessionStatus
from .base import (
    HEAVY_STEP_ROWS,
    MAX_TTL,
    READ_PLAN_BACKOFF_CAP,
    SAVE_BACKOFF_CAP,
    Batch,
    Commit,
    Conflict,
    Get,
    Op,
    Plan,
    Rebased,
    Scan,
    answer_rows,
    backoff,
    step,
)

__all__ = ["RedisBackend"]

T = TypeVar("T")
SLOTS = 16384
DEFAULT_SHARDS = 16
_ATTEMPTS = 4  # exchanges per operation when the cluster redirects us
_ACTIVE = keys.activity_prefix(SessionStatus.ACTIVE)  # the active sessions' activity zset
_INDEX_KINDS = keys.USER_SPACE + keys.CREATED_SPACE + b"a"  # index shards: P{T}i.., P{T}c, P{T}a.
CHUNK = 1000  # index members clear_all examines per script call

_READ = """
local prune, out = ARGV[1] == '1', {}
for i = 1, #KEYS do
  local b, key = 1 + (i - 1) * 5, KEYS[i]
  local kind, lo, hi = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local rev, limit = ARGV[b + 4] == '1', tonumber(ARGV[b + 5])
  if kind == 'g' then
    out[i] = redis.call('GET', key)
  elseif kind == 's' then
    out[i] = redis.call('ZSCORE', key, lo) and '' or false
  else
    local members, tag = {}, nil
    if kind == 'i' and prune then
      tag = string.sub(key, 1, string.find(key, '}', 1, true)) .. 'h'
    end
    while limit ~= 0 do
      local want = limit < 0 and -1 or limit - #members
      local batch
      if rev then
        batch = redis.call('ZREVRANGEBYLEX', key, hi, lo, 'LIMIT', 0, want)
      else
        batch = redis.call('ZRANGEBYLEX', key, lo, hi, 'LIMIT', 0, want)
      end
      local stale = 0
      for _, m in ipairs(batch) do
        if tag and redis.call('EXISTS', tag .. string.sub(m, 9)) == 0 then
          redis.call('ZREM', key, m)
          stale = stale + 1
        else
          members[#members + 1] = m
        end
      end
      if stale == 0 or limit < 0 or #members >= limit or #batch < want then break end
      if rev then hi = '(' .. batch[#batch] else lo = '(' .. batch[#batch] end
    end
    out[i] = members
  end
end
return out
"""

# ARGV: ttl, n expects (key index, present, value), then the rebase block (its length,
# then REBASE's arguments, see below; length 0 for none), then the ops.  Redis does not
# undo a script's writes when a later command fails, so nothing is written before every
# op is known and every key a sorted-set op needs is a sorted set (or absent): else the
# answer is {3, that key's index} (a GET of a header of another type fails before any
# write too).  ``E`` ops re-arm a key's TTL, ``P`` ops an index shard's that gets an
# entry; the client sends them only with a ttl.
_COMMIT = """
local ttl, n, current, conflict, header = tonumber(ARGV[1]), tonumber(ARGV[2]), {0}, false
local at = 3 + 3 * n
local first = at + 1 + tonumber(ARGV[at])
local sets, i = {}, first
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'A' or op == 'Z' then sets[ARGV[i + 1]] = true; i = i + 3
  elseif op == 'R' then sets[ARGV[i + 1]] = true; i = i + 4
  elseif op == 'S' then i = i + 3
  elseif op == 'D' then i = i + 2
  elseif op == 'E' or op == 'P' then i = i + 2
  else return redis.error_reply('kvsessions: unknown commit op ' .. op) end
end
for k in pairs(sets) do
  local kind = redis.call('TYPE', KEYS[tonumber(k)]).ok
  if kind ~= 'zset' and kind ~= 'none' then return {3, tonumber(k)} end
end
for j = 0, n - 1 do
  local key = KEYS[tonumber(ARGV[3 + 3 * j])]
  local got = redis.call('GET', key)
  if ARGV[4 + 3 * j] == '1' then
    conflict = conflict or got ~= ARGV[5 + 3 * j]
  else
    conflict = conflict or got ~= false
  end
  current[j + 2] = got and ('1' .. got) or '0'
  header = header or got
end
if conflict then
  if first > at + 1 and header then
    local rebased = rebase(header, at + 1, first, ttl)
    if rebased then return rebased end
  end
  return current
end
i = first
while i <= #ARGV do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'S' then redis.call('SET', key, ARGV[i + 2]); i = i + 3
  elseif op == 'A' then redis.call('ZADD', key, 0, ARGV[i + 2]); i = i + 3
  elseif op == 'Z' then redis.call('ZREM', key, ARGV[i + 2]); i = i + 3
  elseif op == 'R' then redis.call('ZREMRANGEBYLEX', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'D' then redis.call('DEL', key); i = i + 2
  else arm(key, ttl); i = i + 2 end
end
return {1}
"""

# An append-only save that lost a race, re-based here on the header that won, when that
# header differs from the expected one only in what appends and saves change: the time,
# version, next_seq, count and recent save tokens (same user and creation, still active,
# same metadata and state, our token not among the recent ones: else the client's plan
# decides).  Headers are edited as text, in the field order codec.encode_header writes
# (any other shape goes to the plan).  The commit's own ops say the rest: the header it
# writes (its time and token), its message records (numbered from the expected
# next_seq), the TTLs to re-arm.  ARGV from ``at``: the KEYS indexes of the messages and
# of the active-sessions activity shard, and the session's part of an activity member.
# Answers {2, the header written, the members others added since the expected header}.
_REBASE = """
local shape = '^(%d+),"status":"active","version":(%d+),"next_seq":(%d+),"count":(%d+),()'

local function arm(key, ttl)  -- an E or P op (see COMMIT): sent only with a ttl
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end

local function rebase(got, at, first, ttl)
  local hi, mi, ai = tonumber(ARGV[3]), tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local expected, sid, written, records, i = ARGV[5], ARGV[at + 2], nil, {}, first
  while i <= #ARGV do
    local op, ki = ARGV[i], tonumber(ARGV[i + 1])
    if op == 'S' and ki == hi then written = ARGV[i + 2]; i = i + 3
    elseif op == 'A' and ki == mi then records[#records + 1] = string.sub(ARGV[i + 2], 9); i = i + 3
    elseif op == 'R' and ki == mi then i = i + 4
    elseif (op == 'A' or op == 'Z') and ki == ai then i = i + 3
    elseif op == 'E' or op == 'P' then i = i + 2
    else return nil end
  end
  local fixed = string.find(expected, '"updated_at":', 1, true)
  if not written or #records == 0 or not fixed then return nil end
  fixed = fixed + 12
  local prefix = string.sub(expected, 1, fixed)
  if string.sub(got, 1, fixed) ~= prefix or string.sub(written, 1, fixed) ~= prefix then
    return nil
  end
  local _, _, known, _, body = string.match(expected, shape, fixed + 1)
  local now, _, after = string.match(written, shape, fixed + 1)
  local upd, ver, nxt, cnt, pos = string.match(got, shape, fixed + 1)
  if not (body and now and pos) or tonumber(after) - tonumber(known) ~= #records then
    return nil
  end
  local ends = string.match(expected, '^.*(),"recent":%[', body)
  local mark = string.match(written, '^.*(),"recent":%[', fixed + 1)
  if not (ends and mark) then return nil end
  body = string.sub(expected, body, ends - 1)
  local token = string.match(written, '("[^"]*")%]', mark + 11)
  if not token or string.sub(got, pos, pos + #body + 10) ~= body .. ',"recent":[' then
    return nil
  end
  pos = pos + #body + 11
  local close = string.find(got, ']', pos, true)
  if not close then return nil end
  local tokens = string.sub(got, pos, close - 1)
  if string.find(tokens, token, 1, true) then return nil end
  for j = 1, #records do
    records[j] = string.match(records[j], '^(.*"q":)%d+}$')
    if not records[j] then return nil end
  end
  local count = 0
  for _ in string.gmatch(tokens, '"[^"]*"') do count = count + 1 end
  while count >= RECENT do
    tokens = string.sub(tokens, (string.find(tokens, ',', 1, true) or #tokens) + 1)
    count = count - 1
  end
  tokens = tokens == '' and token or (tokens .. ',' .. token)
  local seq, k = tonumber(nxt), #records
  local header = prefix .. now .. ',"status":"active","version":'
    .. string.format('%d', tonumber(ver) + 1) .. ',"next_seq":' .. string.format('%d', seq + k)
    .. ',"count":' .. string.format('%d', tonumber(cnt) + k) .. ',' .. body .. ',"recent":['
    .. tokens .. ']' .. string.sub(got, close + 1)
  local mkey, akey = KEYS[mi], KEYS[ai]
  local bucket, old, new = BUCKET, tonumber(upd), tonumber(now)
  local moved = old - old % bucket ~= new - new % bucket
  if moved then
    local kind = redis.call('TYPE', akey).ok
    if kind ~= 'zset' and kind ~= 'none' then return nil end
  end
  redis.call('SET', KEYS[hi], header)
  for j = 1, k do
    local s = seq + j - 1
    local member = struct.pack('>I8', s) .. records[j] .. string.format('%d', s) .. '}'
    redis.call('ZADD', mkey, 0, member)
  end
  if moved then
    redis.call('ZREM', akey, struct.pack('>I8', old - old % bucket) .. sid)
    redis.call('ZADD', akey, 0, struct.pack('>I8', new - new % bucket) .. sid)
  end
  i = first
  while i <= #ARGV do
    local op = ARGV[i]
    if op == 'E' or op == 'P' then arm(KEYS[tonumber(ARGV[i + 1])], ttl); i = i + 2
    elseif op == 'R' then i = i + 4
    else i = i + 3 end
  end
  local missed, from = {}, tonumber(known)
  if seq > from then
    missed = redis.call('ZRANGEBYLEX', mkey, '[' .. struct.pack('>I8', from),
      '(' .. struct.pack('>I8', seq))
  end
  return {2, header, missed}
end
"""

# clear_all's second pass over one index shard (KEYS[1]): from member ARGV[1] on, at most
# ARGV[2] members; drops those whose session has no header.  Answers where to go on
# from ('' when done).  A key of another type is not ours: it goes.
_PRUNE = """
local key, count = KEYS[1], tonumber(ARGV[2])
if redis.call('TYPE', key).ok ~= 'zset' then redis.call('UNLINK', key); return '' end
local heads = string.sub(key, 1, string.find(key, '}', 1, true)) .. 'h'
local batch = redis.call('ZRANGEBYLEX', key, ARGV[1], '+', 'LIMIT', 0, count)
for _, m in ipairs(batch) do
  if redis.call('EXISTS', heads .. string.sub(m, 9)) == 0 then redis.call('ZREM', key, m) end
end
if #batch < count then return '' end
return '(' .. batch[#batch]
"""

_SCRIPTS = {
    "read": _READ,
    "prune": _PRUNE,
    "commit": _REBASE.replace("BUCKET", str(keys.ACTIVITY_BUCKET_US)).replace(
        "RECENT", str(RECENT_TOKENS)
    )
    + _COMMIT,
}
_SHAS = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in _SCRIPTS.items()}


def shard_tags(shards: int) -> list[bytes]:
    """Hash tags whose slots are evenly spaced over the slot space, one per shard."""
    tags = []
    for shard in range(shards):
        low, high = shard * SLOTS // shards, (shard + 1) * SLOTS // shards
        n = 0
        while not low <= key_slot(f"{shard}.{n}".encode()) < high:
            n += 1
        tags.append(f"{shard}.{n}".encode())
    return tags


def _inc(value: bytes) -> bytes | None:
    """The next byte string of the same length (big-endian), or None after all 0xff."""
    number = int.from_bytes(value, "big") + 1
    return None if number >> (8 * len(value)) else number.to_bytes(len(value), "big")


def _check_prefix(prefix: object) -> bytes:
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise StoreConfigError(
            f"prefix must be a non-empty str without '{{' or '}}', got {prefix!r}"
        )
    try:
        return prefix.encode()
    except UnicodeEncodeError:
        raise StoreConfigError(
            f"prefix must be valid unicode text (no lone surrogates), got {prefix!r}"
        ) from None


def _ttl_ms(ttl: object) -> int | None:
    """The ttl in milliseconds (NaN, infinities and huge values fail the range check)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0.001 <= ttl <= MAX_TTL:
        raise StoreConfigError(
            f"ttl must be a number of seconds from 0.001 to {MAX_TTL:,} (100 years), or None "
            f"for no expiry; got {ttl!r}"
        )
    return max(1, round(ttl * 1000))


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1e9:
        raise StoreConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _join(host: str, port: int) -> str:
    """A node's address as URLs write it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _node_url(url: str, addr: str) -> str:
    """``url`` (a cluster's) pointed at node ``addr``, credentials and options kept."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{auth}@{addr}" if auth else addr, path=""))


def _owner(header: bytes) -> tuple[str, SessionStatus]:
    """The user and status of a header this commit writes (encoded by core a moment
    ago): plain JSON fields, a fifth of ``decode_header``'s cost on every save."""
    fields = orjson.loads(header[len(HEADER_PREFIX) :])
    return fields["user_id"], SessionStatus(fields["status"])


def check_tls(scheme: str, options: Iterable[str]) -> None:
    """Refuse ``ssl_*`` options on a URL without TLS (redis-py would fail on them later)."""
    if scheme.startswith("rediss"):
        return
    for name in options:
        if name.startswith("ssl_"):
            raise StoreConfigError(
                f"option {name!r} is for TLS connections, which {scheme}:// does not make; "
                "write rediss:// (or rediss+cluster://), or leave it out"
            )


def _parse_url(url: object) -> tuple[str, bool, str]:
    """The URL redis-py opens (``+cluster`` removed), whether it names a cluster, and
    the address it names (``host:port``, ``[v6 host]:port``, or a socket's path)."""
    if not isinstance(url, str):
        raise StoreConfigError(f"url must be a str such as 'redis://host:6379/0', got {url!r:.80}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        raise StoreConfigError(
            f"unsupported Redis URL scheme {parts.scheme!r}: use redis://, rediss://, "
            "unix://, or redis+cluster:// (rediss+cluster://) for Redis Cluster"
        )
    check_tls(scheme, (name for name, _ in parse_qsl(parts.query)))
    cluster = scheme.endswith("+cluster")
    text = scheme.removesuffix("+cluster") + ":" + url.partition(":")[2]
    try:
        if scheme == "unix":
            address = parts.path
        elif parts.hostname:
            address = _join(parts.hostname, parts.port or 6379)
        else:
            raise ValueError("it names no host")
        if not address:
            raise ValueError("it names no socket path")
        redis.connection.parse_url(_node_url(text, address) if cluster else text)
    except ValueError as exc:
        raise StoreConfigError(
            f"the Redis URL is not valid ({exc}); write redis://[:password@]host:port/db, "
            "unix:///path/to/redis.sock, or redis+cluster://host:port"
        ) from None
    return text, cluster, address


@attrs.define(slots=True)
class _Call:
    """One command for one slot (or for a named node)."""

    args: tuple[Any, ...]
    slot: int = 0
    script: str | None = None
    node: str | None = None


@attrs.define(slots=True)
class _Read:
    kind: str  # g: GET, s: zset member exists, m: message range, i: index range
    rkey: bytes
    slot: int
    lo: bytes = b""
    hi: bytes = b""
    reverse: bool = False
    limit: int = -1


@attrs.define(slots=True)
class _Group:
    """The part of a commit that lands in one slot: one atomic script."""

    slot: int
    keys: list[bytes] = attrs.field(factory=list)
    index: dict[bytes, int] = attrs.field(factory=dict)
    expect: list[tuple[bytes, int, bytes | None]] = attrs.field(factory=list)
    ops: list[Any] = attrs.field(factory=list)
    expire: dict[bytes, bytes] = attrs.field(factory=dict)  # key -> its E or P op

    def key(self, rkey: bytes) -> int:
        position = self.index.get(rkey)
        if position is None:
            self.keys.append(rkey)
            position = self.index[rkey] = len(self.keys)
        return position


Exchange = Generator[dict[str, list[tuple[Any, ...]]], dict[str, Any], T]


class RedisBackend:
    """Answers plans' operations against one Redis server or a Redis Cluster."""

    durability = "server"  # whatever the server's persistence settings give
    blocking = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl: float | None,
        shards: int = DEFAULT_SHARDS,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._prefix = _check_prefix(prefix)
        self._ttl_ms = _ttl_ms(ttl)
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 1024:
            raise StoreConfigError(f"shards must be an int from 1 to 1024, got {shards!r}")
        self._timeouts = (
            _seconds("timeout", timeout),
            _seconds("connect_timeout", connect_timeout),
        )
        self._url_text, self.cluster, self.address = _parse_url(url)
        self._password = urlsplit(self._url_text).password
        self._shards = shards
        tags = shard_tags(shards)
        self._bases = [self._prefix + b"{" + tag + b"}" for tag in tags]
        self._slots = [key_slot(tag) for tag in tags]
        self._slot_nodes: list[str] | None = None
        self._known: dict[str, None] = {self.address: None}
        self._clients: dict[str, redis.Redis] = {}
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
        self._loops_lock = threading.Lock()  # loops in other threads adopt concurrently
        self._closed = False

    # -- driving plans -------------------------------------------------------------------

    def run(self, plan: Plan[T], *, write: bool) -> T:
        """Drive ``plan`` with blocking calls, one round trip per operation and node."""
        self._check_open(plan)
        answer: Any = None
        conflicts = 0
        cap = SAVE_BACKOFF_CAP if write else READ_PLAN_BACKOFF_CAP  # (update() waits longer)
        try:
            while True:
                answer = self._drive(self._answer(plan.send(answer)))
                if type(answer) is Conflict:  # lost a race: let the winners clear the way
                    conflicts += 1
                    time.sleep(backoff(conflicts, cap))
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    async def run_async(
        self, plan: Plan[T], *, write: bool, executor: Any = None, heavy: bool = False
    ) -> T:
        """Drive ``plan`` with redis.asyncio (nodes of a cluster are asked concurrently).

        A plan step that decodes many records runs in ``executor``, off the event loop,
        and so does the first with ``heavy`` (a save that encodes many messages).
        """
        self._check_open(plan)
        loop = asyncio.get_running_loop()
        answer: Any = None
        conflicts = 0
        cap = SAVE_BACKOFF_CAP if write else READ_PLAN_BACKOFF_CAP  # (update() waits longer)
        try:
            while True:
                if executor is not None and (heavy or answer_rows(answer) > HEAVY_STEP_ROWS):
                    heavy = False
                    finished, op = await loop.run_in_executor(executor, step, plan, answer)
                else:
                    finished, op = step(plan, answer)
                if finished:
                    return op
                answer = await self._drive_async(self._answer(op))
                if type(answer) is Conflict:  # lost a race: let the winners clear the way
                    conflicts += 1
                    await asyncio.sleep(backoff(conflicts, cap))
        finally:
            plan.close()

    def _check_open(self, plan: Plan[Any]) -> None:
        if self._closed:
            plan.close()
            raise StoreClosedError("this store was closed; open a new store object to use it")

    def _drive(self, exchange: Exchange[T]) -> T:
        replies: Any = None
        while True:
            try:
                batch = exchange.send(replies)
            except StopIteration as stop:
                return stop.value
            replies = {addr: self._send(addr, commands) for addr, commands in batch.items()}

    async def _drive_async(self, exchange: Exchange[T]) -> T:
        replies: Any = None
        while True:
            try:
                batch = exchange.send(replies)
            except StopIteration as stop:
                return stop.value
            addrs = list(batch)
            results = await asyncio.gather(*(self._send_async(a, batch[a]) for a in addrs))
            replies = dict(zip(addrs, results, strict=True))

    def _send(self, addr: str, commands: list[tuple[Any, ...]]) -> Any:
        """Replies (errors as values) for ``commands`` on one node, or the connection error."""
        client = self._clients.get(addr)
        if client is None:
            client = self._clients[addr] = redis.Redis.from_url(
                self._url(addr), **self._options(Retry(NoBackoff(), 0))
            )
        try:
            if len(commands) == 1:
                try:
                    return [client.execute_command(*commands[0])]
                except ResponseError as exc:
                    return [exc]
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            return exc

    async def _send_async(self, addr: str, commands: list[tuple[Any, ...]]) -> Any:
        client = await self._aclient(addr)
        try:
            if len(commands) == 1:
                try:
                    return [await client.execute_command(*commands[0])]
                except ResponseError as exc:
                    return [exc]
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            return exc

    async def _aclient(self, addr: str) -> redis.asyncio.Redis:
        """This event loop's client for node ``addr`` (clients are bound to their loop)."""
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None or entry.done:
            entry = await self._adopt(loop)
        client = entry.clients.get(addr)
        if client is None:
            retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
            client = entry.clients[addr] = redis.asyncio.Redis.from_url(
                self._url(addr), **self._options(retry)
            )
        return client

    async def _adopt(self, loop: asyncio.AbstractEventLoop) -> _LoopClients:
        """Start keeping clients for ``loop``, closed when it shuts down; release the
        clients of loops that were closed meanwhile."""
        entry = _LoopClients()
        with self._loops_lock:
            dead = [(old, e) for old, e in self._loops.items() if old.is_closed()]
            for old, _ in dead:
                del self._loops[old]
            self._loops[loop] = entry
        for _, old_entry in dead:
            old_entry.abandon()
        if sys.get_asyncgen_hooks().firstiter is None:
            return entry  # a loop that tracks no async generators: close() closes them
        guard = _close_at_shutdown(self._loops, self._loops_lock, loop, entry)
        try:
            await guard.__anext__()  # now the loop tracks it; shutdown_asyncgens closes it
        except Warning:  # the loop already shut its generators down (warnings as errors)
            return entry
        entry.guard = guard
        return entry

    def _url(self, addr: str) -> str:
        return _node_url(self._url_text, addr) if self.cluster else self._url_text

    def _options(self, retry: Any) -> dict[str, Any]:
        timeout, connect_timeout = self._timeouts
        return {
            "socket_timeout": timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": retry,
            "health_check_interval": 0,
        }

    def close(self) -> Coroutine[Any, Any, None] | None:
        """Close the connections; inside an event loop that used asyncio clients, returns
        a coroutine that closes that loop's clients (the asyncio manager awaits it).

        The clients of an idle loop of this thread are closed by running that loop; those
        of a loop running elsewhere are closed when it shuts down (``asyncio.run`` does);
        those of a closed loop are released as far as a closed loop allows.
        """
        self._closed = True
        for client in self._clients.values():
            client.close()
        self._clients = {}
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with self._loops_lock:
            entries = list(self._loops.items())
        here = threading.get_ident()
        closing = None
        for loop, entry in entries:
            if loop.is_closed():
                with self._loops_lock:
                    if self._loops.get(loop) is entry:
                        del self._loops[loop]
                entry.abandon()
            elif loop is running:
                closing = self._shut(loop, entry)
            elif running is None and entry.thread == here and not loop.is_running():
                loop.run_until_complete(self._shut(loop, entry))
        return closing

    async def _shut(self, loop: asyncio.AbstractEventLoop, entry: _LoopClients) -> None:
        """Close one loop's clients, on that loop."""
        if entry.guard is not None:
            await entry.guard.aclose()  # runs its ``finally``: forget the entry, close
            return
        with self._loops_lock:
            if self._loops.get(loop) is entry:
                del self._loops[loop]
        await _aclose(entry.take())

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the exchange with the server(s) -------------------------------------------------

    def _exchange(self, calls: list[_Call]) -> Exchange[list[Any]]:
        """Send ``calls`` (one batch per node); reload scripts and follow redirects."""
        if not calls:
            return []
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        asking: dict[int, str] = {}  # call -> the node its migrating slot sent it to
        for _ in range(_ATTEMPTS):
            if self.cluster and self._slot_nodes is None:
                yield from self._refresh()
            by_node: dict[str, list[int]] = {}
            for i in todo:
                by_node.setdefault(asking.get(i) or self._node(calls[i]), []).append(i)
            replies = yield {
                addr: [c for i in idxs for c in self._commands(calls[i], i in asking)]
                for addr, idxs in by_node.items()
            }
            again: list[int] = []
            reload: list[str] = []
            for addr, idxs in by_node.items():
                got = replies[addr]
                if isinstance(got, BaseException):
                    self._slot_nodes = None  # a node may be gone: re-learn the map next time
                    raise self._error(addr, got)
                answers = iter(got)
                for i in idxs:
                    if i in asking:
                        next(answers)  # ASKING's own reply
                    reply = next(answers)
                    if isinstance(reply, NoScriptError):
                        again.append(i)
                        if addr not in reload:
                            reload.append(addr)
                    elif isinstance(reply, MovedError):  # the slot moved: re-learn the map
                        self._slot_nodes = None
                        asking.pop(i, None)
                        again.append(i)
                    elif isinstance(reply, AskError):  # the slot is migrating: this once
                        asking[i] = _join(
                            reply.host or addr.rpartition(":")[0].strip("[]"), reply.port
                        )
                        again.append(i)
                    elif isinstance(reply, TryAgainError):
                        again.append(i)
                    elif isinstance(reply, BaseException):
                        raise self._error(addr, reply)
                    else:
                        results[i] = reply
            if not again:
                return results
            if reload:
                loaded = yield {
                    addr: [("SCRIPT", "LOAD", src) for src in _SCRIPTS.values()] for addr in reload
                }
                for addr in reload:
                    failed = [r for r in _as_list(loaded[addr]) if isinstance(r, BaseException)]
                    if failed:
                        raise self._error(addr, failed[0])
            todo = again
        raise StoreUnavailableError(
            f"Redis Cluster at {self.address} kept redirecting this operation (resharding or "
            "failover in progress?); retry later"
        )

    def _refresh(self) -> Exchange[None]:
        """Learn the slot map from any node that answers ``CLUSTER SLOTS``."""
        known = list(self._known)
        replies = yield {addr: [("CLUSTER", "SLOTS")] for addr in known}
        error: BaseException | None = None
        for addr in known:
            got = replies[addr]
            reply = got if isinstance(got, BaseException) else got[0]
            if isinstance(reply, BaseException):
                error = error or reply
                continue
            table = [""] * SLOTS
            for entry in reply:
                host = entry[2][0].decode() or addr.rpartition(":")[0].strip("[]")
                node = _join(host, entry[2][1])
                self._known[node] = None
                table[entry[0] : entry[1] + 1] = [node] * (entry[1] + 1 - entry[0])
            if "" in table:
                raise StoreUnavailableError(
                    f"Redis Cluster at {addr} does not cover every hash slot; fix the cluster"
                )
            self._slot_nodes = table
            return
        assert error is not None
        raise self._error(known[0], error)

    def _node(self, call: _Call) -> str:
        if call.node is not None:
            return call.node
        if self._slot_nodes is None:
            return self.address
        return self._slot_nodes[call.slot]

    @staticmethod
    def _commands(call: _Call, asking: bool) -> list[tuple[Any, ...]]:
        """The command(s) to send for ``call``; after an ``ASK`` redirection, ``ASKING``
        first (it lets the importing node answer the next command of the connection)."""
        command = call.args if call.script is None else ("EVALSHA", _SHAS[call.script], *call.args)
        return [("ASKING",), command] if asking else [command]

    def _error(self, addr: str, exc: BaseException) -> StoreError | CorruptRecordError:
        reason = str(exc)
        if self._password:
            reason = reason.replace(self._password, "***")
        if isinstance(exc, ResponseError) and "WRONGTYPE" in reason:
            return CorruptRecordError(
                f"a key of this store's prefix on Redis at {addr} holds the wrong kind of value "
                f"(not a kvsessions record): {reason}; run `kvsessions check` to list such keys, "
                "and delete them"
            )
        if isinstance(exc, ResponseError) and not isinstance(exc, ClusterDownError):
            return StoreError(f"Redis at {addr} refused a kvsessions command: {reason}")
        where = "Redis Cluster node" if self.cluster else "Redis"
        return StoreUnavailableError(
            f"{where} at {addr} is unavailable ({type(exc).__name__}: {reason}); check that "
            "it runs and that the URL's host, port, password and TLS setting are right"
        )

    # -- operations ----------------------------------------------------------------------

    def _answer(self, op: Op) -> Exchange[Any]:
        if type(op) is Commit:
            return (yield from self._commit(op))
        ops = op.ops if type(op) is Batch else (op,)
        plans = [self._reads(inner) for inner in ops]  # type: ignore[arg-type]
        values = yield from self._read([read for reads, _ in plans for read in reads])
        answers, at = [], 0
        for reads, finish in plans:
            answers.append(finish(values[at : at + len(reads)]))
            at += len(reads)
        return tuple(answers) if type(op) is Batch else answers[0]

    def _group_slot(self, slot: int) -> int:
        return slot if self.cluster else 0

    def _read(self, reads: list[_Read]) -> Exchange[list[Any]]:
        """One read script per slot (an ``MGET`` where all are plain keys); the answers in
        the order of ``reads``."""
        groups: dict[int, list[int]] = {}
        for i, read in enumerate(reads):
            groups.setdefault(self._group_slot(read.slot), []).append(i)
        prune = b"1" if self._ttl_ms is not None else b"0"
        calls = []
        for slot, idxs in groups.items():
            if all(reads[i].kind == "g" for i in idxs):  # only headers (e.g. messages=0)
                # a plain GET or MGET: atomic too, and no script to run or pack (GET refuses
                # a key of another type; MGET reads it as absent)
                rkeys = [reads[i].rkey for i in idxs]
                calls.append(_Call(("GET", *rkeys) if len(idxs) == 1 else ("MGET", *rkeys), slot))
                continue
            argv: list[Any] = [prune]
            for i in idxs:
                r = reads[i]
                argv += (r.kind, r.lo, r.hi, b"1" if r.reverse else b"0", r.limit)
            calls.append(
                _Call((len(idxs), *(reads[i].rkey for i in idxs), *argv), slot, script="read")
            )
        replies = yield from self._exchange(calls)
        values: list[Any] = [None] * len(reads)
        for idxs, reply in zip(groups.values(), replies, strict=True):
            if len(idxs) == 1 and reads[idxs[0]].kind == "g":  # (a GET)
                values[idxs[0]] = reply
                continue
            for i, value in zip(idxs, reply, strict=True):
                values[i] = value
        return values

    def _reads(self, op: Get | Scan) -> tuple[list[_Read], Any]:
        if type(op) is Get:
            kind, rkey, slot, member = self._locate(op.key)
            if kind == "str":
                return [_Read("g", rkey, slot)], _first
            if kind == "idx":
                return [_Read("s", rkey, slot, lo=member)], _first
            read = _Read("m", rkey, slot, *_seq_bounds(member), limit=1)
            return [read], lambda values: values[0][0][8:] if values[0] else None
        assert type(op) is Scan
        family_range = keys.family_range(op.start, op.stop)
        if family_range is None:
            raise StoreConfigError(f"the Redis backend cannot scan {op.start!r}..{op.stop!r}")
        family, lo, hi = family_range
        # (Lua reads a number as a double and prints 1e17 as "1e+17", which LIMIT refuses;
        # a sorted set holds fewer than 2**32 members, so a larger limit means all)
        limit = -1 if op.limit is None or op.limit >= 2**32 else op.limit
        if family[:1] == b"m":
            bounds = _message_bounds(lo, hi)
            if bounds is None or limit == 0:
                return [], lambda values: []
            base, slot = self._tag(family[1:-1])
            read = _Read("m", base + family, slot, *bounds, op.reverse, limit)
            return [read], lambda values: [(family + m[:8], m[8:]) for m in values[0]]
        bounds = _index_bounds(lo, hi)
        if bounds is None or limit == 0:
            return [], lambda values: []
        reads = [
            _Read("i", base + family, slot, *bounds, op.reverse, limit)
            for base, slot in zip(self._bases, self._slots, strict=True)
        ]

        def merge(values: list[list[bytes]]) -> list[tuple[bytes, bytes]]:
            members = sorted((m for ms in values for m in ms), reverse=op.reverse)
            return [(family + m, b"") for m in (members if limit < 0 else members[:limit])]

        return reads, merge

    def _tag(self, sid: bytes) -> tuple[bytes, int]:
        shard = zlib.crc32(sid) % self._shards
        return self._bases[shard], self._slots[shard]

    def _locate(self, key: bytes) -> tuple[str, bytes, int, bytes]:
        """Where a logical key lives: ``(kind, redis key, slot, zset member)``."""
        if key[:1] == b"h":
            base, slot = self._tag(key[1:-1])
            return "str", base + key, slot, b""
        if key[:1] == b"!":
            rkey = self._prefix + key
            return "str", rkey, key_slot(rkey), b""
        split = keys.family_of(key)
        sid = keys.session_of(key)
        if split is None or sid is None:
            raise StoreConfigError(f"the Redis backend has no place for key {key[:40]!r}")
        base, slot = self._tag(sid)
        return ("msg" if key[:1] == b"m" else "idx"), base + split[0], slot, split[1]

    # -- commits -------------------------------------------------------------------------

    def _commit(self, op: Commit) -> Exchange[Conflict | Rebased | None]:
        groups, clear = self._stage(op)
        if clear:
            yield from self._clear()
        ordered = [g for g in groups.values() if g.expect or g.ops]
        calls = []
        for g in ordered:
            argv: list[Any] = [self._ttl_ms or 0, len(g.expect)]
            for _, position, value in g.expect:
                argv += (position, b"0" if value is None else b"1", value or b"")
            rebase = self._rebase_args(op, g) if op.append_only and len(ordered) == 1 else []
            argv.append(len(rebase))
            argv += rebase
            for op_args in g.ops:
                argv += op_args
            for rkey, code in g.expire.items() if self._ttl_ms is not None else ():
                argv += (code, g.key(rkey))
            calls.append(_Call((len(g.keys), *g.keys, *argv), g.slot, script="commit"))
        replies = yield from self._exchange(calls)
        if all(reply[0] == 1 for reply in replies):
            return None
        for g, reply in zip(ordered, replies, strict=True):
            if reply[0] == 3:  # nothing written: a key of the wrong type was in the way
                raise _wrong_type(g.keys[reply[1] - 1])
        if replies[0][0] == 2:  # (an append_only commit, re-based by the script)
            family = b"m" + next(iter(op.expect))[1:]
            return Rebased(replies[0][1], [(family + m[:8], m[8:]) for m in replies[0][2]])
        current: dict[bytes, bytes | None] = {}
        deleted = set(op.delete)
        for g, reply in zip(ordered, replies, strict=True):
            for position, (key, _, value) in enumerate(g.expect):
                if reply[0] == 1:  # applied: what this commit left there
                    current[key] = op.put.get(key, None if key in deleted else value)
                else:
                    got = reply[position + 1]
                    current[key] = None if got == b"0" else got[1:]
        return Conflict(current)

    def _rebase_args(self, op: Commit, g: _Group) -> list[Any]:
        """The commit script's arguments for re-basing an append-only save (see _REBASE):
        where the session's messages and activity entry live (the script reads the rest
        from the commit itself)."""
        if len(op.expect) != 1 or len(g.expect) != 1:
            return []
        hkey, position, expected = g.expect[0]
        if expected is None or hkey[:1] != b"h":
            return []
        rkey = g.keys[position - 1]
        base, part = rkey[: len(rkey) - len(hkey)], hkey[1:]
        return [g.key(base + b"m" + part), g.key(base + _ACTIVE), part]

    def _stage(self, op: Commit) -> tuple[dict[int, _Group], bool]:
        """Split a commit into per-slot groups of script ops (and whether it clears all)."""
        groups: dict[int, _Group] = {}

        def group(slot: int) -> _Group:
            slot = self._group_slot(slot)
            found = groups.get(slot)
            if found is None:
                found = groups[slot] = _Group(slot)
            return found

        for key, value in op.expect.items():
            kind, rkey, slot, _ = self._locate(key)
            if kind != "str":
                raise StoreConfigError(f"the Redis backend can only expect headers, not {key!r}")
            g = group(slot)
            g.expect.append((key, g.key(rkey), value))
        for key in op.delete:
            kind, rkey, slot, member = self._locate(key)
            g = group(slot)
            if kind == "str":
                g.ops.append((b"D", g.key(rkey)))
            elif kind == "idx":
                g.ops.append((b"Z", g.key(rkey), member))
            else:
                g.ops.append((b"R", g.key(rkey), *_seq_bounds(member)))
        clear = False
        for start, stop in op.delete_ranges:
            family_range = keys.family_range(start, stop)
            if family_range is None:
                if start == b"" and stop >= b"\xff":
                    clear = True
                    continue
                raise StoreConfigError(f"the Redis backend cannot delete {start!r}..{stop!r}")
            family, lo, hi = family_range
            if family[:1] == b"m":
                bounds = _message_bounds(lo, hi)
                targets = [self._tag(family[1:-1])]
            else:
                bounds = _index_bounds(lo, hi)
                targets = list(zip(self._bases, self._slots, strict=True))
            if bounds is None:
                continue
            for base, slot in targets:
                g = group(slot)
                g.ops.append((b"R", g.key(base + family), *bounds))
        for key, value in op.put.items():
            kind, rkey, slot, member = self._locate(key)
            g = group(slot)
            if kind == "str":
                g.ops.append((b"S", g.key(rkey), value))
            elif kind == "idx":
                if value:
                    raise StoreConfigError("the Redis backend stores index entries without values")
                g.ops.append((b"A", g.key(rkey), member))
                g.expire[rkey] = b"P"  # (an index shard gets an entry: see _COMMIT)
            else:
                g.ops.append((b"R", g.key(rkey), *_seq_bounds(member)))
                g.ops.append((b"A", g.key(rkey), member + value))
        if self._ttl_ms is not None:
            self._stage_expiry(op, group)
        return groups, clear

    def _stage_expiry(self, op: Commit, group: Any) -> None:
        """Re-arm the TTL of every session the commit touches, and of its index shards
        (with no ttl, clear one an earlier ttl left, see _COMMIT)."""
        for key in dict.fromkeys((*op.expect, *op.put, *op.delete)):
            sid = keys.session_of(key)
            if sid is None:
                continue
            base, slot = self._tag(sid)
            arm = group(slot).expire.setdefault
            arm(base + b"h" + sid + b"\x00", b"E")
            arm(base + b"m" + sid + b"\x00", b"E")
            if key[:1] == b"h" and key in op.put:  # the header names its index entries
                user_id, status = _owner(op.put[key])
                arm(base + keys.USER_SPACE + user_id.encode() + b"\x00", b"E")
                arm(base + keys.activity_key(status, 0, "-")[:2], b"E")
                arm(base + keys.CREATED_SPACE, b"E")

    def _clear(self) -> Exchange[None]:
        """Delete every key of this prefix, each session whole, so that one saved while
        this runs is deleted whole or kept whole: a SCAN that unlinks each header found
        with its messages (one ``UNLINK``), then a SCAN that drops the index entries left
        naming no header (``_PRUNE``, ``CHUNK`` members per script call)."""

        def sessions(node: str, found: list[bytes]) -> Exchange[None]:
            calls = [_Call(("UNLINK", *self._session_keys(k)), key_slot(k)) for k in found]
            yield from self._exchange([c for c in calls if len(c.args) > 1])

        def indexes(node: str, found: list[bytes]) -> Exchange[None]:
            todo = {k: b"-" for k in found if not self._session_keys(k)}
            while todo:
                calls = [_Call((1, k, lo, CHUNK), key_slot(k), "prune") for k, lo in todo.items()]
                replies = yield from self._exchange(calls)
                todo = {k: lo for k, lo in zip(todo, replies, strict=True) if lo}

        yield from self._scan_prefix(sessions)
        yield from self._scan_prefix(indexes)

    def _session_keys(self, rkey: bytes) -> tuple[bytes, ...]:
        """What clear_all unlinks together with ``rkey``: a header or message set and its
        partner, any key not ours alone, nothing for an index shard."""
        close = rkey.find(b"}", len(self._prefix))
        kind = rkey[close + 1 : close + 2] if close > 0 else b""
        if kind in (b"h", b"m"):
            partner = rkey[: close + 1] + (b"m" if kind == b"h" else b"h") + rkey[close + 2 :]
            return rkey, partner
        if kind and kind in _INDEX_KINDS:
            return ()
        return (rkey,)

    def _scan_prefix(self, visit: Callable[[str, list[bytes]], Exchange[Any]]) -> Exchange[None]:
        """SCAN every node for the keys of this prefix, handing each page (node, keys) to
        ``visit``."""
        if self.cluster and self._slot_nodes is None:
            yield from self._refresh()
        nodes = list(dict.fromkeys(self._slot_nodes)) if self._slot_nodes else [self.address]
        pattern = _glob_escape(self._prefix) + b"{*"
        for node in nodes:
            cursor: Any = 0
            while True:
                (page,) = yield from self._ask(
                    node, [("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)]
                )
                cursor, found = page
                yield from visit(node, found)
                if int(cursor) == 0:
                    break

    def _ask(
        self, node: str, commands: list[tuple[Any, ...]], *, errors_as_values: bool = False
    ) -> Exchange[list[Any]]:
        """The replies to ``commands`` on ``node`` (no redirects followed); a refused
        command raises unless ``errors_as_values`` (a lost connection always does)."""
        if not commands:
            return []
        replies = (yield {node: commands})[node]
        if isinstance(replies, BaseException):
            raise self._error(node, replies)
        for reply in replies:
            if isinstance(reply, BaseException) and not errors_as_values:
                raise self._error(node, reply)
        return list(replies)


def _wrong_type(rkey: bytes) -> CorruptRecordError:
    return CorruptRecordError(
        f"Redis key {rkey!r} of this store's prefix holds the wrong kind of value (not a "
        "kvsessions record), so nothing was written; run `kvsessions check` to list such "
        "keys, and delete them"
    )


def _first(values: list[Any]) -> Any:
    return values[0]


def _as_list(reply: Any) -> list[Any]:
    return [reply] if isinstance(reply, BaseException) else list(reply)


def _seq_bounds(seq: bytes) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds of the ``seq + record`` member(s) of one message seq."""
    nxt = _inc(seq)
    return b"[" + seq, b"+" if nxt is None else b"(" + nxt


def _message_bounds(lo: bytes, hi: bytes | None) -> tuple[bytes, bytes] | None:
    """ZRANGEBYLEX bounds over ``seq + record`` members for seq keys in ``[lo, hi)``."""
    if len(lo) > 8:  # a key longer than a seq: only larger seqs follow it
        nxt = _inc(lo[:8])
        if nxt is None:
            return None
        lo = nxt
    low = b"[" + lo if lo else b"-"
    if hi is None:
        return low, b"+"
    if len(hi) > 8:
        nxt = _inc(hi[:8])
        return low, b"+" if nxt is None else b"(" + nxt
    return (low, b"(" + hi) if hi else None


def _index_bounds(lo: bytes, hi: bytes | None) -> tuple[bytes, bytes] | None:
    if hi is not None and hi <= lo:
        return None
    return (b"[" + lo if lo else b"-"), (b"+" if hi is None else b"(" + hi)


def _glob_escape(raw: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in raw)


class _LoopClients:
    """The redis.asyncio clients of one event loop (one per node), and their closer.

    ``guard`` is an async generator started on the loop, so the loop tracks it:
    ``loop.shutdown_asyncgens()`` closes it, which closes these clients on their own loop
    before it is closed.  Were the backend dropped unclosed, the loop's finalizer hook
    does the same.
    """

    __slots__ = ("clients", "done", "guard", "thread")

    def __init__(self) -> None:
        self.clients: dict[str, redis.asyncio.Redis] = {}
        self.guard: AsyncGenerator[None, None] | None = None
        self.thread = threading.get_ident()
        self.done = False

    def take(self) -> list[redis.asyncio.Redis]:
        """Hand over the clients to close; the entry is finished."""
        self.done = True
        clients, self.clients = list(self.clients.values()), {}
        return clients

    def abandon(self) -> None:
        """Release the clients of a loop that was closed without shutting them down.

        Nothing runs on a closed loop any more, and every way to close a connection
        (redis-py's ``disconnect``, asyncio's ``transport.close``/``abort``) schedules a
        callback on it and fails.  So shut each socket down (the transport's public
        ``socket`` extra): the server drops the connection at once; the file descriptor
        goes with the transport at the next garbage collection, with asyncio's
        "unclosed transport" warning.  redis-py lists a pool's connections only in
        private attributes: read defensively, so another redis-py only skips this.
        """
        for client in self.take():
            pool = client.connection_pool
            connections = [
                *getattr(pool, "_available_connections", ()),
                *getattr(pool, "_in_use_connections", ()),
            ]
            for connection in connections:
                writer = getattr(connection, "_writer", None)
                if writer is None:
                    continue
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(RuntimeError, OSError):  # "Event loop is closed"
                    writer.close()  # marks the transport closing, as far as it gets
        if self.guard is not None:  # finish it here rather than leave it to the GC
            guard, self.guard = self.guard, None
            with contextlib.suppress(StopIteration, RuntimeError):
                guard.aclose().send(None)  # its finally has nothing left to await


async def _close_at_shutdown(
    registry: dict[asyncio.AbstractEventLoop, _LoopClients],
    lock: threading.Lock,
    loop: asyncio.AbstractEventLoop,
    entry: _LoopClients,
) -> AsyncGenerator[None, None]:
    """Wait, suspended, until the loop shuts its async generators down; then forget
    ``entry`` and close its clients (still on their loop)."""
    try:
        yield
    finally:
        with lock:
            if registry.get(loop) is entry:
                del registry[loop]
        await _aclose(entry.take())


async def _aclose(clients: Iterable[redis.asyncio.Redis]) -> None:
    """Close clients and their pools; a broken connection does not stop the others."""
    clients = list(clients)
    if clients:
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
