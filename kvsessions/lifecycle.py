"""Plans that walk the activity index: archiving, purging, TTL sweeps and layout migration.

Each reads the index of one status up to a cutoff in chunks, checks every entry against
its session's header (the header has the exact time; the index only the minute), and
changes the chosen sessions one chunk per commit.  None of them scans all sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from . import keys
from .backends.base import Batch, Commit, Get, Plan, Scan
from .codec import RECENT_TOKENS, HeaderRecord, decode_header, encode_header
from .core import _new_token, expired, purge
from .errors import SchemaVersionError
from .model import SessionStatus

__all__ = ["MigrationReport", "archive_inactive", "migrate", "purge_before", "sweep"]

CHUNK = 512  # sessions changed per commit


@attrs.define(slots=True)
class _Chunk:
    """The writes of one chunk, collected into a single commit."""

    expect: dict[bytes, bytes | None] = attrs.field(factory=dict)
    put: dict[bytes, bytes] = attrs.field(factory=dict)
    delete: list[bytes] = attrs.field(factory=list)
    ranges: list[tuple[bytes, bytes]] = attrs.field(factory=list)

    def add(self, commit: Commit) -> None:
        self.expect.update(commit.expect)
        self.put.update(commit.put)
        self.delete.extend(commit.delete)
        self.ranges.extend(commit.delete_ranges)

    def commit(self) -> Commit:
        return Commit(self.expect, self.put, self.delete, self.ranges)


#: What to do with a chosen session, given its index entry, id, header key, header and
#: decoded header (its own copy): add to the chunk (``expect`` is already set).
Change = Callable[[bytes, str, bytes, bytes, HeaderRecord, _Chunk], None]
_ARCHIVED_ENTRY = keys.activity_key(SessionStatus.ARCHIVED, 0, "-")[:2]


def archive_inactive(cutoff_us: int, dry_run: bool = False) -> Plan[int]:
    """Archive active sessions last saved before ``cutoff_us``; how many (or would be).

    The headers it writes carry a save token of this call's: no other writer's equal them,
    so a refused commit's answer shows which of them a store committing per slot wrote.
    """
    token = _new_token()

    def archive(
        entry: bytes, sid: str, hkey: bytes, header: bytes, record: HeaderRecord, into: _Chunk
    ) -> None:
        record.status = SessionStatus.ARCHIVED  # (a copy decoded for this plan alone)
        record.version += 1
        record.recent = [*record.recent[1 - RECENT_TOKENS :], token]
        into.put[hkey] = encode_header(record)
        into.put[_ARCHIVED_ENTRY + entry[2:]] = b""
        into.delete.append(entry)

    return (yield from _walk(SessionStatus.ACTIVE, cutoff_us, archive, dry_run))


def _purge(
    entry: bytes, sid: str, hkey: bytes, header: bytes, record: HeaderRecord, into: _Chunk
) -> None:
    into.add(purge(sid, header, record))


def purge_before(status: SessionStatus, cutoff_us: int, dry_run: bool = False) -> Plan[int]:
    """Delete for good the ``status`` sessions last saved before ``cutoff_us``."""
    return (yield from _walk(status, cutoff_us, _purge, dry_run))


def sweep(expiry_us: int | None) -> Plan[int]:
    """Remove every session whose TTL ran out (saved before ``expiry_us``); how many."""
    if expiry_us is None:
        return 0
    removed = 0
    for status in SessionStatus:
        removed += yield from _walk(status, expiry_us, _purge, False)
    return removed


def _walk(status: SessionStatus, cutoff_us: int, change: Change, dry_run: bool) -> Plan[int]:
    done = 0
    start, stop = keys.activity_range(status, cutoff_us)
    while True:
        chunk_start = start
        index = yield Scan(start, stop, limit=CHUNK)
        if not index:
            return done
        hkeys = [b"h" + key[10:] for key, _ in index]  # (an entry ends with the header's id)
        headers = yield Batch(tuple(Get(hkey) for hkey in hkeys))
        chunk = _Chunk()
        chosen: list[bytes] = []
        for (entry, _), hkey, header in zip(index, hkeys, headers, strict=True):
            record = decode_header(header) if header is not None else None
            if record is None or not keys.is_activity_entry(
                entry, record.status, record.updated_at
            ):
                chunk.delete.append(entry)  # a stale entry...
                chunk.expect[hkey] = header  # (...if the header still says so at commit)
                continue
            if not expired(record, cutoff_us):
                continue  # saved in the cutoff's own minute, after the cutoff
            chosen.append(hkey)
            if not dry_run:
                chunk.expect[hkey] = header
                change(entry, keys.parse_index_sid(entry, 10), hkey, header, record, chunk)
        start = index[-1][0] + b"\x00"
        if dry_run:
            done += len(chosen)
            continue
        answer = yield chunk.commit()
        if answer is None:
            done += len(chosen)
        else:  # changed meanwhile: count what it wrote all the same, read the chunk again
            done += _written(chosen, chunk.put, answer.current)
            start = chunk_start


def _written(
    chosen: list[bytes], put: Mapping[bytes, bytes], current: Mapping[bytes, bytes | None]
) -> int:
    """How many chosen sessions a refused commit changed: none, except on a store that
    commits per slot (Redis Cluster), which answers with the headers of the slots it
    applied as this commit put them (archived headers: unique, see ``archive_inactive``).

    Another writer may have changed the others, so they are not counted; nor are deleted
    headers, which look the same whoever deleted them (on Redis Cluster a purge refused in
    one slot may so miss the sessions it deleted in another, never count others').
    """
    return sum(1 for hkey in chosen if hkey in put and current.get(hkey) == put[hkey])


# -- layout migration --------------------------------------------------------------------


@attrs.frozen(slots=True)
class MigrationReport:
    """What ``migrate`` found and did."""

    from_version: int
    to_version: int
    sessions: int  # sessions indexed (or that would be, in a dry run)
    dry_run: bool


def migrate(dry_run: bool = False, chunk: int = CHUNK) -> Plan[MigrationReport]:
    """Upgrade a store's key layout in place to :data:`keys.STORE_FORMAT`.

    Layout 1 -> 2 adds the creation index (``c``), built from the activity index, which
    names every session exactly once.  Progress is committed with each chunk (under
    ``!migrate``), so an interrupted migration resumes where it stopped; the layout
    version is raised only at the end.  Stop writers running an older kvsessions first.
    """
    stored = yield Get(keys.FORMAT_KEY)
    version = keys.STORE_FORMAT if stored is None else int(stored)
    if version > keys.STORE_FORMAT:
        raise SchemaVersionError(
            f"this store has layout {version}, newer than the {keys.STORE_FORMAT} this "
            "kvsessions knows; upgrade kvsessions instead"
        )
    if version == keys.STORE_FORMAT:
        return MigrationReport(version, version, 0, dry_run)
    indexed = 0
    resume = yield Get(keys.MIGRATE_KEY)
    for status in SessionStatus:
        start, stop = keys.activity_range(status)
        if resume is not None:
            if resume >= stop:
                continue
            start = max(start, resume)
        while True:
            index = yield Scan(start, stop, limit=chunk)
            if not index:
                break
            sids = [keys.parse_index_sid(key, 10) for key, _ in index]
            headers = yield Batch(tuple(Get(keys.header_key(sid)) for sid in sids))
            put = {
                keys.created_key(decode_header(header).created_at, sid): b""
                for sid, header in zip(sids, headers, strict=True)
                if header is not None
            }
            indexed += len(put)
            start = index[-1][0] + b"\x00"
            if not dry_run:
                put[keys.MIGRATE_KEY] = start
                yield Commit(put=put)
    if not dry_run:
        yield Commit(
            put={keys.FORMAT_KEY: str(keys.STORE_FORMAT).encode()}, delete=[keys.MIGRATE_KEY]
        )
    return MigrationReport(version, keys.STORE_FORMAT, indexed, dry_run)
