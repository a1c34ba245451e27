"""``kvsessions.rebase``: re-basing an append-only commit as text equals the plan's re-base.

For any header the codec writes (any user id, metadata, state, parent, token list, times)
and any saves by others in between, the writes :func:`rebase_append` makes on the header
that won are exactly the ones ``core`` builds when it re-bases on that header itself
(``_append_commit``); anything it must not decide is ``None``.  (The Redis script is
held to the same in ``test_redis_rebase.py``.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsessions import Message, keys
from kvsessions.backends.base import Commit
from kvsessions.codec import RECENT_TOKENS, HeaderRecord, decode_header, encode_header
from kvsessions.core import _append_commit, _successor
from kvsessions.model import SessionStatus
from kvsessions.rebase import rebase_append, recent_tokens

from .test_properties import ids, json_values

MINUTE = keys.ACTIVITY_BUCKET_US
times = st.integers(min_value=0, max_value=2**52)
tokens = st.lists(st.text("0123456789abcdef", min_size=8, max_size=16), max_size=RECENT_TOKENS)
dicts = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
messages = st.lists(
    st.builds(
        Message,
        role=st.sampled_from(["user", "assistant", "tool"]),
        content=st.text(max_size=30),
        timestamp=st.just(datetime(2026, 1, 2, tzinfo=UTC)),
        extras=st.dictionaries(st.sampled_from(["q", "x", "name"]), json_values, max_size=2),
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def headers(draw: Any) -> HeaderRecord:
    created = draw(times)
    next_seq = draw(st.integers(0, 10**6))
    return HeaderRecord(
        draw(ids), created, created + draw(st.integers(0, 10 * MINUTE)), SessionStatus.ACTIVE,
        draw(st.integers(1, 10**6)), next_seq, draw(st.integers(0, next_seq)), draw(dicts),
        draw(dicts), draw(tokens), draw(st.none() | ids),
    )  # fmt: skip


def commit_on(
    sid: str, header: HeaderRecord, pending: list[Message], now_us: int, token: str
) -> Commit:
    """The commit of an append-only save on ``header``, as core builds it."""
    snapshot = orjson.dumps(header.metadata), orjson.dumps(header.state)
    _, _, commit = _append_commit(
        keys.SessionKeys(sid), header, encode_header(header), header.user_id, pending, now_us,
        token, snapshot,
    )  # fmt: skip
    return commit


@settings(max_examples=300, deadline=None)
@given(
    ids, headers(), st.integers(0, 3), messages, st.integers(0, 3 * MINUTE),
    st.integers(0, 3 * MINUTE), st.text("0123456789abcdef", min_size=32, max_size=32),
)  # fmt: skip
def test_rebase_writes_what_the_plan_writes_on_the_header_that_won(
    sid: str,
    base: HeaderRecord,
    others: int,
    pending: list[Message],
    their_delay: int,
    our_delay: int,
    token: str,
) -> None:
    their_us, our_us = base.updated_at + their_delay, base.updated_at + our_delay
    won = _successor(
        base, base.user_id, base.status, base.metadata, base.state, others, their_us, "f" * 32
    )
    hkey = keys.header_key(sid)
    commit = commit_on(sid, base, pending, our_us, token)
    edit = rebase_append(encode_header(base), encode_header(won), commit.put, commit.hint)
    assert edit is not None
    want = commit_on(sid, won, pending, our_us, token)
    assert edit.put == want.put
    assert sorted(edit.delete) == sorted(want.delete)
    assert edit.header == want.put[hkey]
    assert edit.missed == (keys.message_range(sid, base.next_seq, won.next_seq) if others else None)
    written = decode_header(edit.header)
    if won.parent is not None:
        assert edit.counters is None  # (the caller decodes the header then)
    else:
        assert edit.counters is not None
        updated_at, version, next_seq, count, kept = edit.counters
        recent = recent_tokens(kept)
        if recent is None:  # (a token with a JSON escape: the caller decodes the header)
            assert b"\\" in kept
            recent = written.recent
        assert written == HeaderRecord(
            won.user_id, won.created_at, updated_at, SessionStatus.ACTIVE, version, next_seq,
            count, won.metadata, won.state, recent,
        )  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(ids, headers(), messages, st.sampled_from(["state", "metadata", "archived", "user",
                                                  "created", "token"]))  # fmt: skip
def test_anything_but_saves_of_appends_is_left_to_the_plan(
    sid: str, base: HeaderRecord, pending: list[Message], change: str
) -> None:
    token = "e" * 32
    won = _successor(
        base, base.user_id, base.status, base.metadata, base.state, 1, base.updated_at + 1,
        "f" * 32,
    )  # fmt: skip
    if change == "state":
        won.state = {**won.state, "changed": True}
    elif change == "metadata":
        won.metadata = {**won.metadata, "changed": True}
    elif change == "archived":
        won.status = SessionStatus.ARCHIVED
    elif change == "user":
        won.user_id = won.user_id + "x"
    elif change == "created":
        won.created_at += 1
    else:
        won.recent = [*won.recent[1 - RECENT_TOKENS :], token]  # this save already landed
    commit = commit_on(sid, base, pending, base.updated_at + 2, token)
    assert rebase_append(encode_header(base), encode_header(won), commit.put, commit.hint) is None
