"""Property tests (hypothesis): the key layout never collides, the codec never changes data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvsessions import (
    CorruptRecordError,
    InvalidIdError,
    InvalidValueError,
    Message,
    SchemaVersionError,
    keys,
)
from kvsessions.codec import (
    MAX_MICROS,
    MIN_MICROS,
    HeaderRecord,
    _structure_header_checked,
    decode_header,
    decode_message,
    decode_messages,
    encode_header,
    encode_message,
    from_micros,
    to_micros,
)
from kvsessions.model import SessionStatus
from kvsessions.values import check_json_value

ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)
seqs = st.integers(min_value=0, max_value=2**63)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(ids, ids)
def test_distinct_ids_give_distinct_keys(a: str, b: str) -> None:
    if a != b:
        assert keys.header_key(a) != keys.header_key(b)
        assert keys.message_key(a, 0) != keys.message_key(b, 0)
        assert keys.user_key(a, 1, "s") != keys.user_key(b, 1, "s")


@given(ids, ids, seqs)
def test_ranges_hold_exactly_their_own_keys(a: str, b: str, seq: int) -> None:
    start, stop = keys.message_range(a)
    assert start <= keys.message_key(a, seq) < stop
    if a != b:
        assert not start <= keys.message_key(b, seq) < stop
    ustart, ustop = keys.user_range(a)
    assert ustart <= keys.user_key(a, seq, b) < ustop
    if a != b:
        assert not ustart <= keys.user_key(b, seq, a) < ustop


@given(ids, seqs, seqs)
def test_message_keys_sort_by_seq(sid: str, x: int, y: int) -> None:
    assert (keys.message_key(sid, x) < keys.message_key(sid, y)) == (x < y)
    assert keys.seq_of_message_key(keys.message_key(sid, x)) == x


@given(ids, seqs, seqs, seqs)
def test_session_keys_from_a_header_key_are_the_session_keys(
    sid: str, x: int, y: int, moment: int
) -> None:
    made, rebuilt = keys.SessionKeys(sid), keys.SessionKeys.of_header(keys.header_key(sid))
    assert (rebuilt.sid, rebuilt.header) == (sid, keys.header_key(sid))
    assert rebuilt.message(x) == made.message(x) == keys.message_key(sid, x)
    assert rebuilt.message_span(x, y) == keys.message_range(sid, x, y)
    for status in SessionStatus:
        assert rebuilt.activity(status, moment) == keys.activity_key(status, moment, sid)


@given(ids, ids, seqs)
def test_index_keys_give_back_the_session_id(user: str, sid: str, moment: int) -> None:
    prefix, _ = keys.user_range(user)
    assert keys.parse_index_sid(keys.user_key(user, moment, sid), len(prefix) + 8) == sid
    assert keys.parse_index_sid(keys.activity_key(SessionStatus.ACTIVE, moment, sid), 10) == sid


@given(st.text(max_size=300))
def test_check_id_accepts_or_refuses_typed(value: str) -> None:
    try:
        encoded = keys.check_id(value, "id")
    except InvalidIdError:
        return
    assert encoded[:-1].decode("utf-8") == value


@given(json_values, st.dictionaries(st.text(), json_values, max_size=3), seqs)
def test_codec_round_trips_json_values_exactly(content: Any, extras: Any, seq: int) -> None:
    check_json_value(content, "content")
    message = Message(role="user", content=content, extras=extras)
    decoded = decode_message(encode_message(message, seq))
    assert decoded.seq == seq
    assert _typed(decoded.content) == _typed(content)
    assert _typed(decoded.extras) == _typed(extras)
    assert decoded.timestamp == message.timestamp


#: Any aware moment a datetime can hold, in UTC or another fixed offset.
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))]
    ),
)  # fmt: skip


@given(moments, seqs)
def test_timestamps_round_trip_exactly(moment: datetime, seq: int) -> None:
    micros = to_micros(moment)
    assert from_micros(micros) == moment and from_micros(micros).tzinfo is UTC
    assert to_micros(from_micros(micros)) == micros
    record = encode_message(Message("user", "hi", moment), seq)
    assert decode_message(record).timestamp == moment
    assert decode_messages([(b"k", record)])[0].timestamp == moment


damage = st.sampled_from(
    [
        lambda r: r[:-3],  # truncated
        lambda r: r[:5] + bytes([r[5] ^ 0x20]) + r[6:],  # a flipped bit
        lambda r: b"K\x01" + b'{"r": "user"}',  # valid JSON, wrong shape
        lambda r: b"K\x01" + b'{"r":1,"c":"x","t":0,"x":{},"q":0}',  # a wrong type
        lambda r: b"K\x01" + b'{"r":"u","c":"x","t":1000000000000000000,"x":{},"q":0}',  # past 9999
        lambda r: b"K\x09" + r[2:],  # a newer record format
        lambda r: b"\x80\x04\x95" + r,  # a pickle header
    ]
)


@given(st.lists(st.tuples(json_values, seqs), max_size=8), st.integers(0, 8), damage)
def test_batch_decoder_matches_the_single_decoder(
    items: list[tuple[Any, int]], where: int, broken: Any
) -> None:
    records = [encode_message(Message("user", content), seq) for content, seq in items]
    rows = [(b"k", record) for record in records]
    singles = [decode_message(record) for record in records]
    assert [(_typed(m.content), m.seq, m.timestamp) for m in decode_messages(rows)] == [
        (_typed(m.content), m.seq, m.timestamp) for m in singles
    ]
    assert decode_messages(rows) == singles
    if records:
        bad = broken(records[where % len(records)])
        rows[where % len(records)] = (b"k", bad)
        try:
            decode_message(bad)
        except (CorruptRecordError, SchemaVersionError) as exc:
            expected: type[Exception] = type(exc)
        else:  # (a flipped bit inside a string can leave a valid record)
            decode_messages(rows)
            return
        with pytest.raises(expected):
            decode_messages(rows)


header_fields = st.fixed_dictionaries(
    {
        "user_id": ids,
        "created_at": st.integers(MIN_MICROS, MAX_MICROS),
        "updated_at": st.integers(MIN_MICROS, MAX_MICROS),
        "status": st.sampled_from(list(SessionStatus)),
        "version": seqs,
        "next_seq": seqs,
        "count": seqs,
        "metadata": st.dictionaries(st.text(), json_values, max_size=3),
        "state": st.dictionaries(st.text(), json_values, max_size=3),
        "recent": st.lists(st.text(max_size=20), max_size=8),
        "parent": st.none() | ids,
    }
)
header_damage = st.sampled_from(
    [
        lambda d: d,  # intact
        lambda d: {k: v for k, v in d.items() if k != "state"},  # a field missing
        lambda d: {**d, "extra": 1},  # a field too many
        lambda d: {**d, "version": str(d["version"])},  # a wrong type
        lambda d: {**d, "status": "deleted"},  # an unknown status
        lambda d: {**d, "parent": 7},  # a parent that is not text
        lambda d: {**d, "count": True},  # bool is not int
        lambda d: dict(reversed(list(d.items()))),  # fields in another order
        lambda d: {**d, "metadata": [1]},  # metadata not an object
        lambda d: {**d, "status": ["active"]},  # a status that is no text (unhashable)
        lambda d: {**d, "recent": {}},  # recent not a list
        lambda d: {**d, "created_at": 10**18},  # past the year 9999
        lambda d: {**d, "updated_at": -(10**17)},  # before the year 1
        lambda d: [d],  # not an object at all
    ]
)


@given(header_fields, header_damage)
def test_header_decoder_fast_path_matches_the_checked_one(fields: Any, broken: Any) -> None:
    record = HeaderRecord(**fields)
    assert decode_header(encode_header(record)) == record
    stored = orjson.loads(encode_header(record)[2:])
    payload = b"K\x01" + orjson.dumps(broken(stored))
    try:
        expected = _structure_header_checked(orjson.loads(payload[2:]))
    except Exception:
        with pytest.raises(CorruptRecordError):
            decode_header(payload)
    else:
        assert decode_header(payload) == expected


def _typed(value: Any) -> Any:
    """Equality that also compares types (1 vs 1.0 vs True)."""
    if isinstance(value, dict):
        return ("dict", {k: _typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


@pytest.mark.parametrize(
    "value",
    [{1}, (1,), b"x", 2**64, -(2**63) - 1, float("nan"), {"a": [1, {2: 3}]}, bytearray(b"x")],
)
def test_check_json_value_refuses(value: Any) -> None:
    with pytest.raises(InvalidValueError):
        check_json_value(value, "v")
