"""Records to bytes and back: one cattrs converter over orjson, versioned, never pickle.

Every stored record is ``MAGIC + FORMAT_VERSION + JSON``.  Decoding checks the two-byte
prefix first: a foreign payload (a pickle, say) is a :class:`CorruptRecordError` before any
parsing, a newer format is a :class:`SchemaVersionError`.  Timestamps are stored as integer
microseconds since the epoch, so they round-trip exactly.

User values (state, metadata, message content and extras) are checked to be JSON-shaped
before they get here (:mod:`kvsessions.values`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter

from .errors import CorruptRecordError, InvalidValueError, SchemaVersionError
from .model import Message, SessionStatus

__all__ = [
    "FORMAT_VERSION",
    "HeaderRecord",
    "decode_header",
    "decode_message",
    "encode_header",
    "encode_message",
    "from_micros",
    "to_micros",
]

MAGIC = b"K"
FORMAT_VERSION = 1
_PREFIX = MAGIC + bytes([FORMAT_VERSION])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch (exact)."""
    if moment.tzinfo is None:
        raise InvalidValueError(
            f"timestamps must be timezone-aware (got naive {moment!r}); use datetime.now(UTC)"
        )
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros`: an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=micros)


@attrs.define(slots=True)
class HeaderRecord:
    """The small per-session record: everything but the messages."""

    user_id: str
    created_at: int
    updated_at: int
    status: SessionStatus
    version: int
    next_seq: int  # the seq the next appended message gets
    count: int  # messages stored
    metadata: dict[str, Any]
    state: dict[str, Any]


def _make_converter() -> Any:
    converter = make_converter()
    # JSON objects of user values are taken as parsed (orjson already gave fresh dicts);
    # cattrs would otherwise rebuild each one key by key.
    converter.register_structure_hook_func(lambda kind: kind == dict[str, Any], _json_object)
    converter.register_unstructure_hook_func(lambda kind: kind == dict[str, Any], _identity)
    converter.register_unstructure_hook(datetime, to_micros)
    converter.register_structure_hook(datetime, lambda value, _: from_micros(_as_int(value)))
    converter.register_unstructure_hook(
        Message,
        make_dict_unstructure_fn(
            Message,
            converter,
            role=override(rename="r"),
            content=override(rename="c"),
            timestamp=override(rename="t"),
            extras=override(rename="x"),
            seq=override(rename="q"),
        ),
    )
    converter.register_structure_hook(
        Message,
        make_dict_structure_fn(
            Message,
            converter,
            role=override(rename="r"),
            content=override(rename="c"),
            timestamp=override(rename="t"),
            extras=override(rename="x"),
            seq=override(rename="q"),
            _cattrs_forbid_extra_keys=True,
        ),
    )
    return converter


def _json_object(value: Any, _: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _identity(value: Any) -> Any:
    return value  # user values were checked JSON-shaped before they reach the codec


def _as_int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer timestamp, got {type(value).__name__}")
    return value


_converter = _make_converter()
_unstructure_message = _converter.get_unstructure_hook(Message)
_structure_message = _converter.get_structure_hook(Message)
_unstructure_header = _converter.get_unstructure_hook(HeaderRecord)
_structure_header = _converter.get_structure_hook(HeaderRecord)


def encode_message(message: Message, seq: int) -> bytes:
    """A message as the stored record at position ``seq``."""
    record = _unstructure_message(message)
    record["q"] = seq
    return _PREFIX + orjson.dumps(record)


def decode_message(data: bytes) -> Message:
    """A stored message record back to a :class:`Message`."""
    return _decode(data, _structure_message, Message)


def encode_header(header: HeaderRecord) -> bytes:
    """A header as a stored record."""
    return _PREFIX + orjson.dumps(_unstructure_header(header))


def decode_header(data: bytes) -> HeaderRecord:
    """A stored header record back to a :class:`HeaderRecord`."""
    return _decode(data, _structure_header, HeaderRecord)


def _decode(data: bytes, structure: Any, kind: type) -> Any:
    if data[:2] != _PREFIX:
        if data[:1] == MAGIC and len(data) > 1 and data[1] > FORMAT_VERSION:
            raise SchemaVersionError(
                f"this {kind.__name__} record has format version {data[1]}, newer than the "
                f"{FORMAT_VERSION} this kvsessions reads; upgrade kvsessions to read it"
            )
        raise CorruptRecordError(
            f"stored {kind.__name__} record is not a kvsessions record (starts with "
            f"{bytes(data[:8])!r}); run `kvsessions check` on the store to list damaged records"
        )
    try:
        return structure(orjson.loads(data[2:]), kind)
    except Exception as exc:  # orjson or cattrs: damaged or wrongly shaped payload
        raise CorruptRecordError(
            f"stored {kind.__name__} record is damaged ({type(exc).__name__}: {exc}); other "
            "sessions are unaffected; run `kvsessions check` on the store to list damaged records"
        ) from exc
