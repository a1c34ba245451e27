"""Records to bytes and back: one cattrs converter over orjson, versioned, never pickle.

Every stored record is ``MAGIC + FORMAT_VERSION + JSON``.  Decoding checks the two-byte
prefix first: a foreign payload (a pickle, say) is a :class:`CorruptRecordError` before any
parsing, a newer format is a :class:`SchemaVersionError`.  Timestamps are stored as integer
microseconds since the epoch, so they round-trip exactly.

User values (state, metadata, message content and extras) are checked to be JSON-shaped
before they get here (:mod:`kvsessions.values`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import orjson
from cattrs.preconf.orjson import make_converter

from .errors import CorruptRecordError, InvalidValueError, SchemaVersionError
from .model import MESSAGE_SETTERS, Message, SessionStatus, stored_message

_new_message = object.__new__

__all__ = [
    "FORMAT_VERSION",
    "RECENT_TOKENS",
    "converter",
    "HeaderRecord",
    "decode_header",
    "decode_message",
    "decode_messages",
    "encode_header",
    "encode_message",
    "from_micros",
    "to_micros",
]

MAGIC = b"K"
FORMAT_VERSION = 1
_PREFIX = MAGIC + bytes([FORMAT_VERSION])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: ``_EPOCH + _MICROSECOND * micros`` is the exact datetime of ``micros`` (integer
#: arithmetic in C), 40% cheaper than building ``timedelta(0, 0, micros)`` per value.
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch (exact)."""
    try:  # (the aware case first: this runs for every message saved)
        delta = moment - _EPOCH
    except TypeError:
        if isinstance(moment, datetime) and moment.tzinfo is None:
            raise InvalidValueError(
                f"timestamps must be timezone-aware (got naive {moment!r}); use datetime.now(UTC)"
            ) from None
        raise
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros`: an aware UTC datetime."""
    return _EPOCH + _MICROSECOND * micros


#: The microseconds a datetime can hold (years 1 to 9999): a stored timestamp outside
#: them is damage, reported as such rather than as an ``OverflowError`` at use.
MIN_MICROS = to_micros(datetime.min.replace(tzinfo=UTC))
MAX_MICROS = to_micros(datetime.max.replace(tzinfo=UTC))


#: Saves remembered in a header: a retry after this many others may repeat
RECENT_TOKENS = 8


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
    recent: list[str]  # tokens of the latest saves, so a retried save is not applied twice
    parent: str | None = None  # the session this one was forked from (stored only if set)


def _make_converter() -> Any:
    """The cattrs converter for stored records, with every encoding rule in one place.

    - ``Message`` <-> ``{"r": role, "c": content, "t": micros, "x": extras, "q": seq}``
      (short keys: messages are the bulk of a store);
    - ``HeaderRecord`` <-> an object with its field names;
    - ``datetime`` <-> integer microseconds since the epoch, UTC;
    - ``dict[str, Any]`` (user values) passes through: orjson already gives fresh dicts,
      and the values were checked JSON-shaped on the way in.

    The two record hooks are written out by hand rather than generated: they run once
    per message and per save, and the hand-written ones are about 3x faster while
    checking types more strictly than the generated ones (which would coerce with
    ``str()``).  A wrongly shaped record raises, and the caller reports it as corrupt.
    """
    converter = make_converter()
    converter.register_structure_hook_func(lambda kind: kind == dict[str, Any], _json_object)
    converter.register_unstructure_hook_func(lambda kind: kind == dict[str, Any], _identity)
    converter.register_unstructure_hook(datetime, to_micros)
    converter.register_structure_hook(datetime, lambda value, _: from_micros(_as_int(value)))
    converter.register_unstructure_hook(Message, _unstructure_message)
    converter.register_structure_hook(Message, _structure_message)
    converter.register_unstructure_hook(HeaderRecord, _unstructure_header)
    converter.register_structure_hook(HeaderRecord, _structure_header)
    return converter


def _unstructure_message(message: Message) -> dict[str, Any]:
    return _message_record(message, message.seq)


def _message_record(message: Message, seq: int | None) -> dict[str, Any]:
    """The stored form of a message (short keys: messages are the bulk of a store)."""
    return {
        "r": message.role,
        "c": message.content,
        "t": to_micros(message.timestamp),
        "x": message.extras,
        "q": seq,
    }


_MESSAGE_KEYS = frozenset("rctxq")


def _structure_message(record: Any, _: Any) -> Message:
    if type(record) is not dict or record.keys() != _MESSAGE_KEYS:
        raise TypeError(f"a message record has keys r, c, t, x, q; got {_shape(record)}")
    role, extras, seq = record["r"], record["x"], record["q"]
    if type(role) is not str or type(extras) is not dict or type(seq) is not int:
        raise TypeError("a message record's r, x, q must be str, object, integer")
    return stored_message(role, record["c"], from_micros(_as_int(record["t"])), extras, seq)


_HEADER_FIELDS = {
    "user_id": str, "created_at": int, "updated_at": int, "status": str, "version": int,
    "next_seq": int, "count": int, "metadata": dict, "state": dict, "recent": list,
}  # fmt: skip


def _unstructure_header(header: HeaderRecord) -> dict[str, Any]:
    record = {
        "user_id": header.user_id,
        "created_at": header.created_at,
        "updated_at": header.updated_at,
        "status": _STATUS_TEXT[header.status],
        "version": header.version,
        "next_seq": header.next_seq,
        "count": header.count,
        "metadata": header.metadata,
        "state": header.state,
        "recent": header.recent,
    }
    if header.parent is not None:  # (stored only when set)
        record["parent"] = header.parent
    return record


#: Status -> stored text (faster than the enum's ``.value`` property).
_STATUS_TEXT = {status: status.value for status in SessionStatus}


def _structure_header(record: Any, _: Any) -> HeaderRecord:
    # the common case, checked field by field on the values the record is built from
    # (every load and every lost save decodes a header; this is about half the cost of
    # comparing tuples of the names and of the values' types); anything else goes through
    # the checks below, which name what is wrong
    if type(record) is dict:
        try:
            user_id = record["user_id"]
            created_at = record["created_at"]
            updated_at = record["updated_at"]
            status = _STATUS[record["status"]]
            version = record["version"]
            next_seq = record["next_seq"]
            count = record["count"]
            metadata = record["metadata"]
            state = record["state"]
            recent = record["recent"]
        except (KeyError, TypeError):  # a field missing, or a status that is no text
            return _structure_header_checked(record)
        size, parent = len(record), record.get("parent")
        if (
            (size == _HEADER_SIZE or (size == _HEADER_SIZE + 1 and type(parent) is str))
            and type(user_id) is str and type(created_at) is int and type(updated_at) is int
            and type(version) is int and type(next_seq) is int and type(count) is int
            and type(metadata) is dict and type(state) is dict and type(recent) is list
            and MIN_MICROS <= created_at <= MAX_MICROS and MIN_MICROS <= updated_at <= MAX_MICROS
        ):  # fmt: skip
            return HeaderRecord(
                user_id, created_at, updated_at, status, version, next_seq, count,
                metadata, state, recent, parent,
            )  # fmt: skip
    return _structure_header_checked(record)


_HEADER_SIZE = len(_HEADER_FIELDS)


#: Stored status text -> status (a dict lookup; calling the enum is ten times dearer).
_STATUS = {status.value: status for status in SessionStatus}


def _structure_header_checked(record: Any) -> HeaderRecord:
    if type(record) is not dict or record.keys() != _HEADER_FIELDS.keys():
        if type(record) is not dict or record.keys() != _HEADER_FIELDS.keys() | {"parent"}:
            raise TypeError(
                f"a header record has keys {', '.join(_HEADER_FIELDS)} (and optionally "
                f"parent); got {_shape(record)}"
            )
        if type(record["parent"]) is not str:
            raise TypeError("header field parent must be str")
    for name, kind in _HEADER_FIELDS.items():
        if type(record[name]) is not kind:
            raise TypeError(f"header field {name} must be {kind.__name__}")
    for name in ("created_at", "updated_at"):
        if not MIN_MICROS <= record[name] <= MAX_MICROS:
            raise ValueError(f"header field {name} is outside the years 1 to 9999")
    return HeaderRecord(
        record["user_id"],
        record["created_at"],
        record["updated_at"],
        SessionStatus(record["status"]),
        record["version"],
        record["next_seq"],
        record["count"],
        record["metadata"],
        record["state"],
        record["recent"],
        record.get("parent"),
    )


def _shape(record: Any) -> str:
    return sorted(record) if type(record) is dict else type(record).__name__  # type: ignore[return-value]


def _json_object(value: Any, _: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _identity(value: Any) -> Any:
    return value


def _as_int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer timestamp, got {type(value).__name__}")
    return value


#: The converter for stored records (encode/decode below call its record hooks directly).
converter = _make_converter()
_dumps = orjson.dumps
_loads = orjson.loads


def encode_message(message: Message, seq: int) -> bytes:
    """A message as the stored record at position ``seq``."""
    return _PREFIX + _dumps(_message_record(message, seq))


def decode_message(data: bytes) -> Message:
    """A stored message record back to a :class:`Message`."""
    return _decode(data, _structure_message, Message)


def decode_messages(rows: Iterable[tuple[bytes, bytes]]) -> list[Message]:
    """The messages of ``(key, record)`` rows, as :func:`decode_message` would give them.

    Loads decode thousands of records, so this is :func:`decode_message` and its
    structure hook unrolled into one loop (the same checks, a third of the cost); any
    record it does not accept goes through :func:`decode_message`, which says why.
    """
    messages: list[Message] = []
    append = messages.append
    loads, new = _loads, _new_message
    set_role, set_content, set_timestamp, set_extras, set_seq = MESSAGE_SETTERS
    prefix, epoch, microsecond = _PREFIX, _EPOCH, _MICROSECOND
    for _, data in rows:
        try:
            if data[:2] != prefix:
                raise ValueError
            record = loads(data[2:])
            role, content, micros, extras, seq = (
                record["r"], record["c"], record["t"], record["x"], record["q"]
            )  # fmt: skip
            if (
                len(record) != 5
                or type(role) is not str
                or type(micros) is not int
                or type(extras) is not dict
                or type(seq) is not int
            ):
                raise ValueError
            moment = epoch + microsecond * micros  # (OverflowError: out of datetime's range)
        except Exception:  # damaged or not ours: the slow path raises the typed error
            append(decode_message(data))
            continue
        message = new(Message)
        set_role(message, role)
        set_content(message, content)
        set_timestamp(message, moment)
        set_extras(message, extras)
        set_seq(message, seq)
        append(message)
    return messages


def encode_header(header: HeaderRecord) -> bytes:
    """A header as a stored record."""
    return _PREFIX + _dumps(_unstructure_header(header))


def decode_header(data: bytes) -> HeaderRecord:
    """A stored header record back to a :class:`HeaderRecord`."""
    return _decode(data, _structure_header, HeaderRecord)


def _decode(data: bytes, structure: Any, kind: type) -> Any:
    try:
        foreign = data[:2] != _PREFIX
    except TypeError:  # not even a sequence: a SQL INTEGER or REAL another tool stored
        foreign = True
    if foreign:
        if not isinstance(data, bytes | bytearray | memoryview):  # (or TEXT: a str)
            raise CorruptRecordError(
                f"stored {kind.__name__} record is of type {type(data).__name__}, not bytes "
                "(not written by kvsessions); run `kvsessions check` on the store to list "
                "damaged records"
            )
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
        return structure(_loads(data[2:]), kind)
    except Exception as exc:  # orjson or cattrs: damaged or wrongly shaped payload
        raise CorruptRecordError(
            f"stored {kind.__name__} record is damaged ({type(exc).__name__}: {exc}); other "
            "sessions are unaffected; run `kvsessions check` on the store to list damaged records"
        ) from exc
