"""Re-basing an append-only save where the data lives: the header edited as text.

A save that only appended messages (``Commit.append_only``, built by ``core._append``)
expects the header it loaded.  When another save got there first and changed only what
saves of appends change -- the time, version, ``next_seq``, ``count`` and the recent save
tokens -- the commit can still go through on the header that won: its messages take the
seqs after the others', the header's counters move on from the winner's.  Done inside the
engine's transaction this needs no decode, merge or second commit: a few byte slices, the
work a raw engine would do.  Local backends call :func:`rebase_append` from their commit
(``backends.base``); the Redis commit script does the same in Lua (``backends.redis``).
Tests hold both byte for byte to what ``core._successor`` + ``codec.encode_header`` write.

Headers are edited only in the shape ``codec.encode_header`` writes (field order, compact
JSON); anything else -- another shape, another user or creation time, a status other than
active, changed metadata or state, this very save already among the recent tokens -- is
left to the plan (``None``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from . import keys
from .codec import RECENT_TOKENS
from .model import SessionStatus

__all__ = ["AppendRebase", "rebase_append"]

_LANDMARK = b'"updated_at":'
_RECENT = b',"recent":['
_COUNTERS = re.compile(rb'(\d+),"status":"active","version":(\d+),"next_seq":(\d+),"count":(\d+),')
_ACTIVE = keys.activity_prefix(SessionStatus.ACTIVE)


class AppendRebase(NamedTuple):
    """The writes that apply the commit on the header that won, and what others added."""

    put: dict[bytes, bytes]
    delete: list[bytes]
    header: bytes  # the header written
    missed: tuple[bytes, bytes] | None  # key range of the messages others added


def rebase_append(
    header_key: bytes,
    expected: bytes,
    current: bytes,
    put: Mapping[bytes, bytes],
    delete: Sequence[bytes],
) -> AppendRebase | None:
    """The writes that apply an append-only commit on the ``current`` header instead of
    the ``expected`` one, or ``None`` if only the plan may decide.

    ``put``/``delete`` are the commit's (header, message records numbered from the
    expected ``next_seq``, and the activity entry's move).
    """
    written = put.get(header_key)
    fixed = expected.find(_LANDMARK) + len(_LANDMARK)
    if written is None or fixed < len(_LANDMARK):
        return None
    prefix = expected[:fixed]
    if current[:fixed] != prefix or written[:fixed] != prefix:
        return None
    match = _COUNTERS.match
    ours, base, won = match(written, fixed), match(expected, fixed), match(current, fixed)
    body_end = expected.rfind(_RECENT)
    if ours is None or base is None or won is None or body_end < base.end():
        return None
    body = expected[base.end() : body_end]
    at = won.end()
    if current[at : at + len(body) + len(_RECENT)] != body + _RECENT:
        return None
    at += len(body) + len(_RECENT)
    close = current.find(b"]", at)
    mark = written.rfind(_RECENT) + len(_RECENT)
    token = written[mark : written.find(b"]", mark)].rpartition(b",")[2]
    tokens = current[at:close].split(b",") if close > at else []
    if close < 0 or not token or token in tokens:
        return None
    our_time, _, our_next, _ = ours.groups()
    won_time, won_version, won_next, won_count = won.groups()
    known, first = int(base.group(3)), int(won_next)
    added = int(our_next) - known
    session_keys = keys.SessionKeys.of_header(header_key)
    message_key = session_keys.message
    records = [put.get(message_key(known + n)) for n in range(added)]
    if added <= 0 or None in records:
        return None
    if len(put) + len(delete) != added + 1:  # (the header and the records, unless it moved)
        moves = [k for k in put if k[:2] == _ACTIVE] + [k for k in delete if k[:2] == _ACTIVE]
        if len(put) + len(delete) != added + 1 + len(moves):
            return None
    out: dict[bytes, bytes] = {}
    for n, record in enumerate(records):
        seq = first + n
        q = record.rfind(b'"q":') + 4  # type: ignore[union-attr]  # (None ruled out above)
        out[message_key(seq)] = record[:q] + b"%d}" % seq  # type: ignore[index]
    kept = [*tokens[1 - RECENT_TOKENS :], token]
    header = b"%s%s,\"status\":\"active\",\"version\":%d,\"next_seq\":%d,\"count\":%d,%s%s%s]%s" % (
        prefix, our_time, int(won_version) + 1, first + added, int(won_count) + added,
        body, _RECENT, b",".join(kept), current[close + 1 :],
    )  # fmt: skip
    out[header_key] = header
    removed: list[bytes] = []
    old, new = int(won_time), int(our_time)
    if old // keys.ACTIVITY_BUCKET_US != new // keys.ACTIVITY_BUCKET_US:  # another minute
        removed.append(session_keys.activity(SessionStatus.ACTIVE, old))
        out[session_keys.activity(SessionStatus.ACTIVE, new)] = b""
    missed = session_keys.message_span(known, first) if first > known else None
    return AppendRebase(out, removed, header, missed)
