"""Records to bytes and back: one cattrs converter over orjson, versioned, never pickle.

Every stored record is ``MAGIC + FORMAT_VERSION + JSON``.  Decoding checks the two-byte
prefix first: a foreign payload (a pickle, say) is a :class:`CorruptRecordError` before any
parsing, a newer format is a :class:`SchemaVersionError`.  Timestamps are stored as integer
microseconds since the epoch, so they round-trip exactly.

User values (state, metadata, message content and extras) must be JSON-shaped;
:func:`check_json_value` rejects anything that would not come back identical.
"""

from __future__ import annotations

import math
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
    "check_json_value",
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
_MAX_DEPTH = 64
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can write


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


_SCALARS = (str, bool, type(None))


def check_json_value(value: Any, where: str) -> None:
    """Raise :class:`InvalidValueError` unless ``value`` round-trips exactly through JSON.

    Accepted: ``None``, ``bool``, ``str``, ``int`` (64-bit), finite ``float``, and ``list``
    and ``dict`` (with ``str`` keys) of those.  Subclasses, tuples, sets, bytes, datetimes,
    NaN/inf, cycles and nesting deeper than 64 levels are rejected.
    """
    _check(value, where, 0)


def _check(value: Any, where: str, depth: int) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidValueError(
                f"{where}: integer {value} is out of the 64-bit range JSON "
                "storage keeps; store it as a string"
            )
        return
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValueError(
                f"{where}: {value!r} does not round-trip through JSON; "
                "store None or a string instead"
            )
        return
    if depth >= _MAX_DEPTH:
        raise InvalidValueError(f"{where}: nested deeper than {_MAX_DEPTH} levels (or cyclic)")
    if kind is list:
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidValueError(
                    f"{where}: key {key!r} is a {type(key).__name__}; JSON "
                    "keys must be str, so convert it with str() first"
                )
            _check(item, f"{where}[{key!r}]", depth + 1)
        return
    raise InvalidValueError(
        f"{where}: a {kind.__name__} would not round-trip through JSON storage; convert it "
        "to str, int, float, bool, None, list or dict first"
    )
