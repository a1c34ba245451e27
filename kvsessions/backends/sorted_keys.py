"""An ordered set of byte keys for the in-memory backend: sorted chunks, not one list.

One sorted list costs a shift of every later key per insert, so an append to a session
whose keys sort early in a big store cost time in proportion to the whole store (3x an
append at the end in a store of 100,000 messages).  Here the keys live in sorted chunks
of at most ``2 * CHUNK`` keys, found by bisecting the chunks' first keys: an insert or a
delete shifts one chunk, a range read bisects once and then walks the chunks in order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

__all__ = ["SortedKeys"]

#: A chunk is split in two when it grows past twice this many keys.
CHUNK = 512


class SortedKeys:
    """Distinct byte keys in byte order (the caller keeps them distinct)."""

    __slots__ = ("_chunks", "_firsts")

    def __init__(self) -> None:
        self._chunks: list[list[bytes]] = []
        self._firsts: list[bytes] = []  # each chunk's first (smallest) key

    def __len__(self) -> int:
        return sum(map(len, self._chunks))

    def clear(self) -> None:
        self._chunks.clear()
        self._firsts.clear()

    def add(self, key: bytes) -> None:
        """Insert ``key``, which must not be present."""
        chunks, firsts = self._chunks, self._firsts
        if not chunks:
            chunks.append([key])
            firsts.append(key)
            return
        at = max(bisect_right(firsts, key) - 1, 0)
        chunk = chunks[at]
        insort(chunk, key)
        if key < firsts[at]:
            firsts[at] = key
        if len(chunk) > 2 * CHUNK:
            tail = chunk[CHUNK:]
            del chunk[CHUNK:]
            chunks.insert(at + 1, tail)
            firsts.insert(at + 1, tail[0])

    def remove(self, key: bytes) -> None:
        """Remove ``key``, which must be present."""
        at = bisect_right(self._firsts, key) - 1
        chunk = self._chunks[at]
        del chunk[bisect_left(chunk, key)]
        self._settle(at)

    def between(
        self, start: bytes, stop: bytes, limit: int | None = None, reverse: bool = False
    ) -> list[bytes]:
        """Keys with ``start <= key < stop``: ascending, or the last ones descending with
        ``reverse``; at most ``limit`` of them."""
        if limit is not None and limit <= 0:
            return []
        if reverse:
            return self._between_reversed(start, stop, limit)
        found: list[bytes] = []
        for _, chunk, lo, hi in self._spans(start, stop):
            found += chunk[lo:hi]
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    def _between_reversed(self, start: bytes, stop: bytes, limit: int | None) -> list[bytes]:
        chunks = self._chunks
        found: list[bytes] = []
        at = bisect_left(self._firsts, stop) - 1  # the last chunk with a key below ``stop``
        while at >= 0:
            chunk = chunks[at]
            hi = bisect_left(chunk, stop)
            if chunk[0] < start:  # the range starts in this chunk
                found += reversed(chunk[bisect_left(chunk, start) : hi])
                break
            found += reversed(chunk[:hi])
            if limit is not None and len(found) >= limit:
                break
            at -= 1
        return found if limit is None else found[:limit]

    def remove_between(self, start: bytes, stop: bytes) -> list[bytes]:
        """Remove and return the keys with ``start <= key < stop`` (ascending)."""
        spans = list(self._spans(start, stop))
        removed = [key for _, chunk, lo, hi in spans for key in chunk[lo:hi]]
        for at, chunk, lo, hi in reversed(spans):  # (from the end: dropping keeps ``at`` valid)
            del chunk[lo:hi]
            self._settle(at)
        return removed

    def _spans(self, start: bytes, stop: bytes) -> Iterator[tuple[int, list[bytes], int, int]]:
        """``(index, chunk, lo, hi)`` for each chunk holding keys ``start <= key < stop``
        (its ``chunk[lo:hi]``), ascending."""
        chunks = self._chunks
        at = max(bisect_right(self._firsts, start) - 1, 0)
        while at < len(chunks):
            chunk = chunks[at]
            if chunk[0] >= stop:
                return
            lo = bisect_left(chunk, start)
            if chunk[-1] >= stop:  # the range ends in this chunk
                yield at, chunk, lo, bisect_left(chunk, stop)
                return
            yield at, chunk, lo, len(chunk)
            at += 1

    def _settle(self, at: int) -> None:
        """After removals from chunk ``at``: drop it if empty, else fix its first key."""
        chunk = self._chunks[at]
        if not chunk:
            del self._chunks[at]
            del self._firsts[at]
        else:
            self._firsts[at] = chunk[0]
