"""``open_store(url)``: a store from one string, as the ``kvsessions`` command takes it.

URLs (options go in the query string, ``?name=value&...``)::

    memory://                               MemorySessionStore           ttl
    lmdb:///abs/path/sessions.lmdb          LMDBSessionStore             durability, map_size, ttl
    lmdb:relative/sessions.lmdb             (or lmdb://relative/..., lmdb://./..., lmdb://~/...)
    sqlite:///abs/path/app.db?table=chat    SQLiteSessionStore           table, durability, ttl,
    sqlite:app.db                                                        timeout
    redis://[:password@]host:port/db        RedisSessionStore            prefix, ttl, shards,
    rediss://... (TLS), unix:///path/redis.sock                          timeout, connect_timeout
    redis+cluster://host:port (rediss+cluster://): a Redis Cluster, through any node

**Paths in lmdb/sqlite URLs** are everything after ``scheme://`` (or ``scheme:``) up to
``?``, percent-escapes decoded (``%3F`` is ``?``, ``%25`` is ``%``): three slashes make
an absolute path (``lmdb:///srv/s.lmdb`` is ``/srv/s.lmdb``), anything else is relative
to the working directory (``lmdb://data/s.lmdb``, ``lmdb:data/s.lmdb``); ``~`` expands.

**A plain path** (no scheme) is taken literally: SQLite if it ends in ``.db``,
``.sqlite`` or ``.sqlite3`` or is an existing SQLite file; LMDB if it ends in ``.lmdb``
or is an existing directory.  Anything else is refused (say which with a URL).  A string
starting with ``name:`` (two or more letters) is read as a URL, so a relative path with
a colon in its first part is written ``./data:1.db``.

**Options**: ``durability`` ``full`` | ``fast``; ``ttl`` seconds, or with a unit
``30m``, ``12h``, ``7d``; ``map_size`` bytes, or ``512MiB``, ``64GiB``, ``1TiB``;
``table`` a SQL identifier (default ``sessions``); ``prefix`` Redis key prefix (default
``kvsessions:``); ``shards``, ``timeout``, ``connect_timeout`` as ``RedisSessionStore``
takes them.  Redis URLs also pass redis-py's ``db`` (``unix://`` only), ``client_name``
and ``ssl_*`` (``rediss://`` and ``rediss+cluster://`` only) options through.  An unknown
scheme or option raises ``StoreConfigError`` naming what is accepted; a password is
never repeated in a message.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import attrs

from .backends.redis import check_tls
from .errors import StoreConfigError
from .stores import (
    KVSessionStore,
    LMDBSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SQLiteSessionStore,
)

__all__ = ["SCHEMES", "StoreSpec", "open_store", "parse_store_url", "require_existing"]

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
#: Every scheme ``open_store`` accepts, and the options each takes.
SCHEMES: dict[str, tuple[str, ...]] = {
    "memory": ("ttl",),
    "lmdb": ("durability", "map_size", "ttl"),
    "sqlite": ("table", "durability", "ttl", "timeout"),
    **dict.fromkeys(_REDIS_SCHEMES, ("prefix", "ttl", "shards", "timeout", "connect_timeout")),
}
#: redis-py's own URL options, passed through to it untouched.
_REDIS_PASSTHROUGH = (
    "client_name",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {"": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@attrs.frozen(slots=True)
class StoreSpec:
    """A parsed store URL: what ``open_store`` will open."""

    kind: str  # "memory", "lmdb", "sqlite" or "redis"
    #: the filesystem path (lmdb, sqlite), or the URL handed to redis-py (redis)
    target: str
    #: keyword arguments for the store class, already converted
    options: dict[str, Any]
    #: the URL as given, with any password replaced by ``***`` (for messages)
    display: str


def open_store(url: str | os.PathLike[str], *, create: bool = True) -> KVSessionStore:
    """Open the store a URL or plain path names (see the module docstring for the forms).

    ``memory://``, ``lmdb:///abs/path``, ``lmdb:rel/path``, ``sqlite:///path.db?table=chat``,
    ``redis://host:port/0?prefix=app:&ttl=7d``, ``redis+cluster://host:port``, or a path
    ending in ``.lmdb`` / ``.db``.  ``create=False`` refuses a local store that does not
    exist yet (``StoreConfigError``) instead of creating an empty one.
    """
    spec = parse_store_url(url)
    if not create:
        require_existing(spec)
    opts = dict(spec.options)
    if spec.kind == "memory":
        return MemorySessionStore(**opts)
    if spec.kind == "lmdb":
        return LMDBSessionStore(spec.target, **opts)
    if spec.kind == "sqlite":
        return SQLiteSessionStore(spec.target, opts.pop("table", "sessions"), **opts)
    return RedisSessionStore(spec.target, **opts)


def parse_store_url(url: str | os.PathLike[str]) -> StoreSpec:
    """Parse a store URL or plain path without opening anything; ``StoreConfigError`` if bad."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise StoreConfigError(
            f"a store URL is a non-empty str such as lmdb:///path or sqlite:///path.db, "
            f"got {url!r:.60}"
        )
    match = _URL.match(url)
    if match is None:
        return _plain_path(url)
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise StoreConfigError(
            f"unknown store URL scheme {match.group(1)!r} in {_redact(url)!r}; use one of "
            f"{', '.join(s + '://' for s in SCHEMES)}, or a path ending in .lmdb or .db"
        )
    if scheme in _REDIS_SCHEMES:
        return _redis(url, scheme)
    rest, _, query = url[match.end() :].partition("?")
    options = _options(scheme, query, url)
    path = unquote(rest.removeprefix("//"))
    if scheme == "memory":
        if path:
            raise StoreConfigError(f"memory:// takes no path, got {url!r}; write memory://")
        return StoreSpec("memory", "", options, url)
    if not path:
        raise StoreConfigError(
            f"{url!r} names no path: write {scheme}:///absolute/path or {scheme}:relative/path"
        )
    return StoreSpec(scheme, os.path.expanduser(path), options, url)


def require_existing(spec: StoreSpec, table_hint: str = "?table=NAME") -> None:
    """Refuse a local store that is not there yet (``StoreConfigError``); read-only.

    ``table_hint`` is how the message tells the user to pick another SQLite table.
    """
    path = Path(spec.target)
    if spec.kind == "lmdb" and not (path / "data.mdb").is_file():
        what = "a directory without data.mdb" if path.is_dir() else "not there"
        raise StoreConfigError(f"no LMDB store at {path} ({what}); check the path")
    if spec.kind != "sqlite":
        return
    if not path.is_file():
        raise StoreConfigError(f"no SQLite database at {path} (not a file); check the path")
    table = spec.options.get("table", "sessions")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreConfigError(f"{path} is not a readable SQLite database ({exc})") from None
    if table.lower() not in {name.lower() for name in tables}:  # (SQLite ignores case)
        found = ", ".join(repr(t) for t in tables) or "none"
        raise StoreConfigError(
            f"{path} has no table {table!r} (its tables: {found}); pass {table_hint}"
        )


# -- the parts ---------------------------------------------------------------------------


def _plain_path(text: str) -> StoreSpec:
    path = Path(os.path.expanduser(text))
    name = path.name.lower()
    if name.endswith(_SQLITE_SUFFIXES) or (path.is_file() and _is_sqlite(path)):
        return StoreSpec("sqlite", str(path), {}, text)
    if name.endswith(".lmdb") or path.is_dir():
        return StoreSpec("lmdb", str(path), {}, text)
    raise StoreConfigError(
        f"{text} is neither an LMDB store directory nor a SQLite file, and its name does not "
        "say which to create: name it *.lmdb (LMDB) or *.db (SQLite), or give a URL "
        "(lmdb:PATH, sqlite:PATH, redis://HOST:PORT, memory://)"
    )


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _redis(url: str, scheme: str) -> StoreSpec:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise StoreConfigError(f"{_redact(url)!r} is not a valid Redis URL ({exc})") from None
    cluster = scheme.endswith("+cluster")
    if scheme != "unix" and not parts.hostname:
        raise StoreConfigError(f"{_redact(url)!r} names no host: write {scheme}://HOST:PORT")
    if scheme != "unix" and not re.fullmatch(r"/?(\d+)?", parts.path):
        raise StoreConfigError(
            f"{_redact(url)!r}: the path of a Redis URL is the database number (/0), "
            f"not {parts.path!r}"
        )
    if cluster and parts.path.strip("/") not in ("", "0"):
        raise StoreConfigError(f"{_redact(url)!r}: a Redis Cluster has only database 0")
    if parts.fragment:
        raise StoreConfigError(f"{_redact(url)!r}: a Redis URL has no #fragment")
    passthrough = _REDIS_PASSTHROUGH + (("db",) if scheme == "unix" else ())
    options = _options(scheme, parts.query, url, passthrough)
    check_tls(scheme, options)
    kept = {name: options.pop(name) for name in list(options) if name in passthrough}
    target = url.partition("?")[0] + (f"?{urlencode(kept)}" if kept else "")
    return StoreSpec("redis", target, options, _redact(url))


def _options(
    scheme: str, query: str, url: str, passthrough: tuple[str, ...] = ()
) -> dict[str, Any]:
    accepted = SCHEMES[scheme]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreConfigError(
            f"cannot read the options of {_redact(url)!r}: write ?name=value&name=value"
        ) from None
    options: dict[str, Any] = {}
    for name, value in pairs:
        if name not in accepted and name not in passthrough:
            raise StoreConfigError(
                f"unknown option {name!r} for {scheme}:// stores; they take "
                f"{', '.join(accepted + passthrough)}"
            )
        if name in options:
            raise StoreConfigError(f"option {name!r} is given twice in {_redact(url)!r}")
        if not value:
            raise StoreConfigError(f"option {name!r} has no value in {_redact(url)!r}")
        try:
            options[name] = _CONVERT.get(name, str)(value)
        except ValueError as exc:
            raise StoreConfigError(f"{scheme}:// option {name}={value!r}: {exc}") from None
    return options


def _durability(value: str) -> str:
    if value not in ("full", "fast"):
        raise ValueError("durability is full (survives power loss) or fast (survives a crash)")
    return value


def _ttl(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", value.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError("ttl is a positive number of seconds, or with a unit: 30m, 12h, 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return int(seconds) if seconds.is_integer() else seconds


def _map_size(value: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMGT]iB)?", value.strip(), flags=re.I)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError("map_size is a number of bytes, or with a unit: 512MiB, 64GiB, 1TiB")
    return int(match.group(1)) * _SIZES[(match.group(2) or "").lower()]


def _number(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if not number > 0:
            what = "a positive whole number" if kind is int else "a positive number of seconds"
            raise ValueError(f"expected {what}")
        return number

    return convert


_CONVERT: dict[str, Callable[[str], Any]] = {
    "durability": _durability,
    "ttl": _ttl,
    "map_size": _map_size,
    "shards": _number(int),
    "timeout": _number(float),
    "connect_timeout": _number(float),
}


def _redact(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``.

    The password runs from the first ``:`` after ``//`` to the last ``@`` before the
    path, query or fragment, as urllib and redis-py read it (it may hold ``@``).
    """
    return _PASSWORD.sub(r"\1***@", url, count=1)


_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#:]*:)[^/?#]*@")
