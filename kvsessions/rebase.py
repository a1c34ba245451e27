"""Re-basing an append-only save where the data lives: the header edited as text.

A save that only appended messages (``Commit.append_only``, built by ``core._append``)
expects the header it loaded.  When another save got there first and changed only what
saves of appends change -- the time, version, ``next_seq``, ``count`` and the recent save
tokens -- the commit can still go through on the header that won: its messages take the
seqs after the others', the header's counters move on from the winner's.  Done inside the
engine's transaction this needs no decode, merge or second commit: a few byte slices, the
work a raw engine would do.  Local backends call :func:`rebase_append` from their commit
(``backends.base``); LMDB's ``write_if`` calls it between two write transactions, outside
the write lock the other writer waits for, and writes the edit only if the header it was
made on is still the stored one.  The Redis commit script does the same in Lua
(``backends.redis``).
Tests hold both byte for byte to what ``core._successor`` + ``codec.encode_header`` write.

Headers are edited only in the shape ``codec.encode_header`` writes (field order, compact
JSON); anything else -- another shape, another user or creation time, a status other than
active, changed metadata or state, this very save already among the recent tokens -- is
left to the plan (``None``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import islice
from typing import NamedTuple

from . import keys
from .codec import RECENT_TOKENS
from .model import SessionStatus

__all__ = ["AppendHint", "AppendRebase", "RebasedCounters", "rebase_append", "recent_tokens"]

_LANDMARK = b'"updated_at":'
_RECENT = b',"recent":['
_COUNTERS = re.compile(rb'(\d+),"status":"active","version":(\d+),"next_seq":(\d+),"count":(\d+),')


#: What the plan knows of an append-only commit (``Commit.hint``, built by
#: ``core._append_commit``): the session's keys, the expected header's ``next_seq``, how
#: many messages the commit adds (its ``put`` holds their records first, in seq order from
#: that ``next_seq``), this save's token, its time, and the expected header's metadata and
#: state as the header holds them (JSON).
AppendHint = tuple[keys.SessionKeys, int, int, str, int, tuple[bytes, bytes]]


#: ``AppendRebase.counters``: the written header's fields that differ from the expected
#: one's, the recent tokens as the header holds them (``recent_tokens`` reads them: after
#: the commit, not under the engine's write lock).
RebasedCounters = tuple[int, int, int, int, bytes]


class AppendRebase(NamedTuple):
    """The writes that apply the commit on the header that won, and what others added."""

    put: dict[bytes, bytes]
    delete: list[bytes]
    header: bytes  # the header written
    missed: tuple[bytes, bytes] | None  # key range of the messages others added
    #: what changed in ``header`` against the expected one, for the session to take without
    #: decoding it: ``(updated_at, version, next_seq, count, recent)``; ``None`` where the
    #: header has a parent (the caller decodes it then)
    counters: RebasedCounters | None


def rebase_append(
    expected: bytes, current: bytes, put: Mapping[bytes, bytes], hint: AppendHint
) -> AppendRebase | None:
    """The writes that apply an append-only commit (its ``put`` and ``hint``) on the
    ``current`` header instead of the ``expected`` one, or ``None`` if only the plan may
    decide.

    Only ``current`` is parsed: the hint says what the commit is (this runs under the
    engine's write lock, so the less it does the better).
    """
    session_keys, known, added, token, updated_us, (metadata, state) = hint
    fixed = current.find(_LANDMARK) + len(_LANDMARK)
    if fixed < len(_LANDMARK) or current[:fixed] != expected[:fixed] or added <= 0:
        return None  # (another user or creation time, or not this codec's shape)
    won = _COUNTERS.match(current, fixed)
    if won is None:
        return None
    at = won.end()
    body = b'"metadata":%s,"state":%s' % (metadata, state)
    if not current.startswith(body, at) or not current.startswith(_RECENT, at + len(body)):
        return None  # metadata or state changed (or a shape this codec does not write)
    at += len(body) + len(_RECENT)
    close = current.find(b"]", at)
    tokens = current[at:close].split(b",") if close > at else []
    ours = b'"%s"' % token.encode()
    if close < 0 or ours in tokens:
        return None  # (this very save is already in)
    won_time, won_version, won_next, won_count = won.groups()
    first = int(won_next)
    message_key = session_keys.message
    out: dict[bytes, bytes] = {}
    seq = first
    for record in islice(put.values(), added):
        q = record.rfind(b'"q":') + 4
        out[message_key(seq)] = record[:q] + b"%d}" % seq
        seq += 1
    recent = [*tokens[1 - RECENT_TOKENS :], ours]
    kept = b",".join(recent)
    version, next_seq, count = int(won_version) + 1, first + added, int(won_count) + added
    tail = current[close + 1 :]
    header = b"%s%d,\"status\":\"active\",\"version\":%d,\"next_seq\":%d,\"count\":%d,%s%s%s]%s" % (
        current[:fixed], updated_us, version, next_seq, count, body, _RECENT, kept, tail,
    )  # fmt: skip
    counters = (updated_us, version, next_seq, count, kept) if tail == b"}" else None
    out[session_keys.header] = header
    removed: list[bytes] = []
    old = int(won_time)
    if old // keys.ACTIVITY_BUCKET_US != updated_us // keys.ACTIVITY_BUCKET_US:
        removed.append(session_keys.activity(SessionStatus.ACTIVE, old))
        out[session_keys.activity(SessionStatus.ACTIVE, updated_us)] = b""
    missed = session_keys.message_span(known, first) if first > known else None
    return AppendRebase(out, removed, header, missed, counters)


def recent_tokens(kept: bytes) -> list[str] | None:
    """The tokens of a header's ``recent`` list as the edit wrote it (``b'"a","b"'``), or
    ``None`` if one holds a JSON escape (the caller decodes the header then)."""
    if b"\\" in kept:  # (no escapes: '"' appears only as the quotes)
        return None
    return kept[1:-1].decode().split('","')
