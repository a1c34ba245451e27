"""What a user value must be to be stored: JSON-shaped, so it comes back identical."""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidValueError

__all__ = ["check_json_value"]

_MAX_DEPTH = 64
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can write
_SCALARS = (bool, type(None))


def check_json_value(value: Any, where: str) -> None:
    """Raise :class:`InvalidValueError` unless ``value`` round-trips exactly through JSON.

    Accepted: ``None``, ``bool``, ``str``, ``int`` (64-bit), finite ``float``, and ``list``
    and ``dict`` (with ``str`` keys) of those.  Subclasses, tuples, sets, bytes, datetimes,
    NaN/inf, text with lone surrogates, cycles and nesting deeper than 64 levels are
    rejected.
    """
    _check(value, where, 0)


def _check(value: Any, where: str, depth: int) -> None:
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _check_text(value, where)
        return
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
            if not key.isascii():
                _check_text(key, where)
            _check(item, f"{where}[{key!r}]", depth + 1)
        return
    raise InvalidValueError(
        f"{where}: a {kind.__name__} would not round-trip through JSON storage; convert it "
        "to str, int, float, bool, None, list or dict first"
    )


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValueError(
            f"{where}: text with a lone surrogate (at {exc.start}) is not valid Unicode and "
            "cannot be stored; decode the source bytes properly or replace it"
        ) from None
