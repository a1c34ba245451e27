"""The key-value protocol every backend speaks, and the one loop that drives a plan over it.

Session logic (``kvsessions.core``) is written as *plans*: generators that yield the
operations below and receive their answers, never touching I/O themselves.  A backend only
has to answer four operations:

``Get(key)``
    -> the value, or ``None``.
``Scan(start, stop, limit, reverse)``
    -> ``[(key, value), ...]`` for ``start <= key < stop`` in key order (or reversed).
``Batch(ops)``
    -> a tuple with the answer of each ``Get``/``Scan``, all read from one snapshot.
``Commit(expect, put, delete, delete_ranges, append_only, hint)``
    -> ``None`` once applied atomically, or :class:`Conflict` with the current values of the
    ``expect`` keys when one of them differs (``None`` expected = key absent); then nothing
    was written.  Deletes apply before puts.  ``append_only`` marks a save that only
    appends messages to one session (its header expected, state and metadata untouched):
    a backend that can re-base such a commit where the data lives may, when only the
    header moved compatibly, apply it on the current header and answer :class:`Rebased`
    (Redis does, in its commit script, saving the round trips of a lost race; the local
    engines do it with :func:`kvsessions.rebase.rebase_append` and the commit's ``hint``);
    any backend may ignore the mark and answer ``Conflict``.

A local backend (memory, LMDB, SQLite) can drive a plan two ways, and plans are written
to be correct under both:

``run(plan, write=...)``
    the whole plan inside one transaction, in the calling thread: a write plan holds the
    engine's write lock from its first read to its commit, so its expectations hold and
    the commit never conflicts; after a commit the next operation starts a new
    transaction.  A read plan that yields a ``Commit`` (one that runs user code between
    its reads and its write, like ``update``) gets a fresh write transaction for it, where
    the expectations are checked.  The blocking manager uses this.
``execute(op)``
    one operation in its own transaction; between operations nothing is held, so a
    ``Commit`` may answer ``Conflict`` and the plan re-bases and retries.  The asyncio
    manager uses this: plan logic runs on the event loop, each engine call in a worker
    thread, and no transaction stays open across an ``await``.

A remote backend (Redis) answers each operation with a round trip and checks ``expect``
server-side, like ``execute``.
"""

from __future__ import annotations

import abc
import os
import random
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ..errors import KVSessionsError, StoreClosedError, StoreConfigError
from ..rebase import AppendHint, AppendRebase, RebasedCounters, rebase_append

__all__ = [
    "HEAVY_STEP_ROWS",
    "Batch",
    "Commit",
    "Conflict",
    "Get",
    "LocalBackend",
    "Op",
    "Plan",
    "Rebased",
    "Scan",
    "Transaction",
    "answer_rows",
    "step",
]

T = TypeVar("T")


def store_path(path: str | os.PathLike[str], engine: str) -> Path:
    """``path`` as a ``Path``, refused if it holds a NUL (no file name can; the engine
    would raise a bare ``ValueError``)."""
    checked = Path(path)
    if "\0" in str(checked):
        raise StoreConfigError(
            f"the {engine} path {str(checked)!r} contains a NUL character, which no file "
            "name can hold; check the path (in a store URL, %00 is a NUL)"
        )
    return checked


#: The longest ``ttl`` a store takes, in seconds (100 years): a longer one is no expiry.
MAX_TTL = 100 * 365 * 86_400


@attrs.define(slots=True)
class Get:
    key: bytes


@attrs.define(slots=True)
class Scan:
    start: bytes
    stop: bytes
    limit: int | None = None
    reverse: bool = False


@attrs.define(slots=True)
class Batch:
    ops: tuple[Get | Scan, ...]


@attrs.define(slots=True)
class Commit:
    expect: Mapping[bytes, bytes | None] = attrs.field(factory=dict)
    put: Mapping[bytes, bytes] = attrs.field(factory=dict)
    delete: Sequence[bytes] = ()
    delete_ranges: Sequence[tuple[bytes, bytes]] = ()
    append_only: bool = False
    #: With ``append_only``: what the plan knows of it, so a local engine can re-base it
    #: without parsing it back; other backends ignore it.
    hint: AppendHint | None = None


@attrs.define(slots=True)
class Conflict:
    current: Mapping[bytes, bytes | None]


@attrs.define(slots=True)
class Rebased:
    """An ``append_only`` commit applied on a header that had moved: the header it wrote
    and the ``(key, record)`` rows of the messages others had added since the expected
    header (which the commit's messages now follow); ``counters``, where the backend
    edited the header itself, are its fields that moved (``rebase.AppendRebase``)."""

    header: bytes
    missed: list[tuple[bytes, bytes]]
    counters: RebasedCounters | None = None


Op = Get | Scan | Batch | Commit
Plan = Generator[Op, Any, T]


class Transaction(abc.ABC):
    """One engine transaction, used by a single thread, never across an ``await``."""

    __slots__ = ()

    @abc.abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    def scan(
        self, start: bytes, stop: bytes, limit: int | None, reverse: bool
    ) -> list[tuple[bytes, bytes]]: ...

    @abc.abstractmethod
    def write(
        self,
        put: Mapping[bytes, bytes],
        delete: Sequence[bytes],
        delete_ranges: Sequence[tuple[bytes, bytes]],
    ) -> None:
        """Apply deletes, then range deletes, then puts (not yet durable)."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def answer(self, op: Get | Scan) -> Any:
        if type(op) is Get:
            return self.get(op.key)
        return self.scan(op.start, op.stop, op.limit, op.reverse)  # type: ignore[union-attr]

    def answer_batch(self, ops: tuple[Get | Scan, ...]) -> tuple[Any, ...]:
        """The answers of several reads, from one snapshot."""
        return tuple(self.answer(op) for op in ops)


class LocalBackend(abc.ABC):
    """An embedded engine: runs each plan in its own transaction(s), in the calling thread."""

    #: What ``durability`` means for this engine, for docs and ``repr``.
    durability: str = "full"
    #: Whether an operation may wait on I/O (then asyncio code runs it in a worker thread).
    blocking: bool = True

    def __init__(self) -> None:
        self._closed = False
        self._forks = _forks[0]
        # one entry per engine call under way, in any thread (a list's append and pop are
        # atomic under the GIL): close() releases the engine only once this is empty
        self._busy: list[None] = []
        self._release_lock = threading.Lock()
        self._released = False

    @abc.abstractmethod
    def _begin(self, write: bool) -> Transaction: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    def _after_fork(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Drop engine handles inherited from the parent process (reopened lazily)."""

    def close(self) -> None:
        """Release the engine; later use raises :class:`StoreClosedError`.

        Calls already under way in other threads finish first (or fail with
        :class:`StoreClosedError`): the engine is released when the last of them returns,
        never under one.
        """
        self._closed = True
        if self._forks != _forks[0]:  # no call since a fork: those under way were the parent's
            self._busy.clear()
        self._release_when_idle()

    def _release_when_idle(self) -> None:
        """Release the engine once closed and no call is under way (once)."""
        if not self._busy:
            with self._release_lock:
                if not self._released and not self._busy:
                    self._released = True
                    self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, plan: Plan[T], *, write: bool, answer: Any = None) -> T:
        """Drive ``plan`` to completion; ``write`` plans hold the write lock while they run.

        ``answer`` resumes a plan that another driver started: it is the answer to the
        plan's last operation (the asyncio manager hands over a save that lost a race).
        """
        busy = self._busy
        busy.append(None)  # (before the closed check: see close)
        txn: Transaction | None = None
        try:
            if self._closed or self._forks != _forks[0]:
                self._check_usable(plan)
            conflicts = 0
            send = plan.send
            while True:
                op = send(answer)
                kind = type(op)
                if kind is Commit:
                    if txn is None:
                        txn = self._begin(True)
                    elif not write:  # a read plan that decides to write: optimistic from here
                        txn.abort()
                        txn = self._begin(True)
                    answer = _apply(txn, op)  # type: ignore[arg-type]
                    if answer is None or type(answer) is Rebased:
                        txn.commit()
                        txn = None
                    elif not write:  # lost to another writer: let it clear the way
                        txn.abort()
                        txn = None
                        conflicts += 1
                        time.sleep(backoff(conflicts, READ_PLAN_BACKOFF_CAP))
                else:
                    if txn is None:
                        txn = self._begin(write)
                    answer = (
                        txn.answer_batch(op.ops)  # type: ignore[union-attr]
                        if kind is Batch
                        else txn.answer(op)  # type: ignore[arg-type]
                    )
        except StopIteration as stop:
            return stop.value
        finally:
            try:
                if txn is not None:
                    txn.abort()
            finally:
                busy.pop()
                if self._closed:
                    self._release_when_idle()

    def read(self, op: Get | Scan | Batch) -> Any:
        """Answer reads from one snapshot, without a plan (the blocking manager's loads,
        ``core.load_directly``)."""
        busy = self._busy
        busy.append(None)
        try:
            self._ensure_usable()
            txn = self._begin(False)
            try:
                return txn.answer_batch(op.ops) if type(op) is Batch else txn.answer(op)  # type: ignore[arg-type]
            finally:
                txn.abort()
        finally:
            busy.pop()
            if self._closed:
                self._release_when_idle()

    def execute(self, op: Op) -> Any:
        """Answer one operation in a transaction of its own."""
        return self.run(_single(op), write=type(op) is Commit)

    def write_if(
        self,
        key: bytes,
        expected: bytes | None,
        put: Mapping[bytes, bytes],
        delete: Sequence[bytes],
        hint: AppendHint | None,
    ) -> bool | Rebased:
        """A save as one write transaction, without a plan.

        If ``key`` holds ``expected`` (``None``: is absent): apply ``delete`` then ``put``
        atomically and durably, and answer True.  For an append (``hint`` given, as for an
        ``append_only`` commit) whose header others' appends moved: re-base it on the
        header that won and answer :class:`Rebased`.  Otherwise write nothing and answer
        False: the plan decides.  The blocking manager saves appends and creates with it
        (``core.append_directly``, ``core.create_directly``).
        """
        busy = self._busy
        busy.append(None)
        try:
            self._ensure_usable()
            txn = self._begin(True)
            try:
                current = txn.get(key)
                if current == expected:
                    txn.write(put, delete, ())
                    txn.commit()
                    return True
                rebased = _rebase(txn, expected, current, put, hint)
                if rebased is not None:
                    txn.commit()
                    return rebased
                return False
            finally:
                txn.abort()  # (nothing to undo once committed)
        finally:
            busy.pop()
            if self._closed:
                self._release_when_idle()

    def commit_many(self, ops: Sequence[Commit]) -> list[Conflict | Rebased | Exception | None]:
        """Group commit: apply each ``Commit`` in turn in ONE transaction, durable at once.

        Each answer is what ``execute`` would have answered, as if the commits had run one
        after another in this order (a later one sees the earlier ones' writes).  One
        fsync covers them all.  If the engine fails part-way, the transaction is rolled
        back and each commit is retried alone, so one bad commit fails only itself.
        """
        busy = self._busy
        busy.append(None)
        try:
            return self._commit_many(ops)
        finally:
            busy.pop()
            if self._closed:
                self._release_when_idle()

    def _commit_many(self, ops: Sequence[Commit]) -> list[Conflict | Rebased | Exception | None]:
        self._check_usable(None)
        txn = self._begin(True)
        try:
            answers: list[Conflict | Rebased | Exception | None] = [_apply(txn, op) for op in ops]
            txn.commit()
            return answers
        except KVSessionsError:
            txn.abort()
            if len(ops) == 1:
                raise
        answers = []
        for op in ops:
            try:
                answers.append(self.execute(op))
            except KVSessionsError as exc:
                answers.append(exc)
        return answers

    def _ensure_usable(self) -> None:
        """Raise if closed; after a fork, reopen the engine (a cheap check when neither)."""
        if self._closed or self._forks != _forks[0]:
            self._check_usable(None)

    def _check_usable(self, plan: Plan[Any] | None) -> None:
        if self._closed:
            if plan is not None:
                plan.close()
            raise StoreClosedError("this store was closed; open a new store object to use it")
        if self._forks != _forks[0]:  # forked: the parent's handles are not ours to use
            # and the parent's other threads are not here: their calls under way never
            # return in this process; only the caller's own (outermost) call is
            del self._busy[1:]
            self._after_fork()
            self._forks = _forks[0]


#: How many times this process's ancestry has forked (a child sees one more than its
#: parent): cheaper to compare on every call than ``os.getpid()``, a system call.
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)


def _single(op: Op) -> Plan[Any]:
    return (yield op)


def _apply(txn: Transaction, op: Commit) -> Conflict | Rebased | None:
    """Check ``op``'s expectations in ``txn`` and, if they hold, write it (no commit).

    An ``append_only`` commit whose header moved only by others' saves is re-based on it
    (:mod:`kvsessions.rebase`) and written too: the answer is then ``Rebased``.
    """
    get = txn.get
    for key, value in op.expect.items():  # (usually one: the session's header)
        current = get(key)
        if current != value:
            if op.append_only:
                rebased = _rebase(txn, value, current, op.put, op.hint)
                if rebased is not None:
                    return rebased
            return Conflict({key: get(key) for key in op.expect})
    txn.write(op.put, op.delete, op.delete_ranges)
    return None


def _rebase(
    txn: Transaction,
    expected: bytes | None,
    current: bytes | None,
    put: Mapping[bytes, bytes],
    hint: AppendHint | None,
) -> Rebased | None:
    """Write an append's ``put`` re-based on the ``current`` header (not committed), if
    :func:`kvsessions.rebase.rebase_append` can; else ``None`` and nothing written (also
    for anything but an append: no ``hint``, or no header expected or stored)."""
    edit = append_edit(expected, current, put, hint)
    if edit is None:
        return None
    txn.write(edit.put, edit.delete, ())
    rows = txn.scan(*edit.missed, None, False) if edit.missed else []
    return Rebased(edit.header, rows, edit.counters)


def append_edit(
    expected: bytes | None,
    current: bytes | None,
    put: Mapping[bytes, bytes],
    hint: AppendHint | None,
) -> AppendRebase | None:
    """The writes that re-base an append's ``put`` on the ``current`` header, or ``None``
    (also for anything but an append: no ``hint``, or no header expected or stored)."""
    if hint is None or current is None or expected is None:
        return None
    return rebase_append(expected, current, put, hint)


#: A read-modify-write loop (``update()``) that keeps losing may wait up to this long per
#: round: long enough to spread dozens of writers over distinct rounds.
READ_PLAN_BACKOFF_CAP = 0.05
#: A save that lost a race waits at most this long (Redis, asyncio): a short spread.
SAVE_BACKOFF_CAP = 0.002


def backoff(conflicts: int, cap: float = SAVE_BACKOFF_CAP) -> float:
    """Seconds to wait after a plan's ``conflicts``-th lost commit: random, growing, capped.

    Many writers on one session all expect the same header and only one wins per round;
    spreading the retries out keeps any of them from losing every round.
    """
    return random.uniform(0, min(cap, 0.0001 * 2**conflicts))


#: A plan step that decodes more records than this runs off the event loop (asyncio).
HEAVY_STEP_ROWS = 256


def step(plan: Plan[Any], answer: Any) -> tuple[bool, Any]:
    """Advance a plan: ``(False, next op)``, or ``(True, result)`` once it returns.

    (Drivers that run a step in a thread pool need this: a ``StopIteration`` cannot
    cross a future.)
    """
    try:
        return False, plan.send(answer)
    except StopIteration as stop:
        return True, stop.value


def answer_rows(answer: Any) -> int:
    """How many records an answer holds (a Scan's list, or a Batch's tuple of answers)."""
    if type(answer) is list:
        return len(answer)
    if type(answer) is tuple:
        return sum(len(part) for part in answer if type(part) is list)
    return 0
