"""The memory backend's ordered key set against a plain sorted list (hypothesis), and the
cost it exists for: an insert early in a big set does not shift the whole set."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvsessions.backends import sorted_keys
from kvsessions.backends.sorted_keys import SortedKeys

keys = st.binary(max_size=3).map(lambda raw: bytes(b"\x00a\xff"[b % 3] for b in raw))
limits = st.none() | st.integers(min_value=-1, max_value=6)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), keys),
        st.tuples(st.just("remove"), keys),
        st.tuples(st.just("remove_between"), keys, keys),
        st.tuples(st.just("between"), keys, keys, limits, st.booleans()),
    ),
    max_size=60,
)


@contextmanager
def chunks_of(size: int) -> Iterator[None]:
    """Small chunks, so that a few keys already split, merge and empty chunks."""
    saved = sorted_keys.CHUNK
    sorted_keys.CHUNK = size
    try:
        yield
    finally:
        sorted_keys.CHUNK = saved


def expected_between(model: list[bytes], start: bytes, stop: bytes, limit: Any, rev: bool) -> Any:
    """What the memory backend's scan returned when its keys were one sorted list."""
    lo, hi = bisect.bisect_left(model, start), bisect.bisect_left(model, stop)
    if limit is not None:
        if limit <= 0:
            return []
        lo, hi = (max(lo, hi - limit), hi) if rev else (lo, min(hi, lo + limit))
    selected = model[lo:hi]
    return selected[::-1] if rev else selected


@settings(max_examples=300)
@given(steps, st.sampled_from([1, 2, 3]))
def test_sorted_keys_behave_as_one_sorted_list(ops: list[tuple[Any, ...]], chunk: int) -> None:
    model: list[bytes] = []
    with chunks_of(chunk):
        subject = SortedKeys()
        for op, *args in ops:
            if op == "add" and args[0] not in model:  # (the backend adds only new keys)
                bisect.insort(model, args[0])
                subject.add(args[0])
            elif op == "remove" and args[0] in model:
                model.remove(args[0])
                subject.remove(args[0])
            elif op == "remove_between":
                gone = [key for key in model if args[0] <= key < args[1]]
                model = [key for key in model if not args[0] <= key < args[1]]
                assert subject.remove_between(args[0], args[1]) == gone
            elif op == "between":
                assert subject.between(*args) == expected_between(model, *args)
            assert subject.between(b"", b"\xff\xff\xff\xff") == model
            assert len(subject) == len(model)
            assert all(chunk_keys for chunk_keys in subject._chunks)  # no empty chunk kept
            assert subject._firsts == [chunk_keys[0] for chunk_keys in subject._chunks]


def test_a_big_set_keeps_its_chunks_small() -> None:
    subject = SortedKeys()
    for n in range(100_000):
        subject.add(b"m%08d" % n)
    subject.add(b"a-first")  # before every other key: one chunk of them moves
    assert max(map(len, subject._chunks)) <= 2 * sorted_keys.CHUNK
    assert subject.between(b"", b"m00000002") == [b"a-first", b"m00000000", b"m00000001"]
    assert subject.between(b"m", b"n", limit=2, reverse=True) == [b"m00099999", b"m00099998"]
