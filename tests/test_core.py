"""The core's plans, driven by a scripted backend: what each operation reads and writes."""

from __future__ import annotations

import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest

from kvsessions import (
    CorruptRecordError,
    LMDBSessionStore,
    MemorySessionStore,
    SchemaVersionError,
    SessionArchivedError,
    SessionExistsError,
    SessionManager,
    SessionNotFoundError,
    SQLiteSessionStore,
    StoreClosedError,
    core,
    keys,
)
from kvsessions.backends import lmdb as lmdb_backend
from kvsessions.backends.base import (
    Batch,
    Commit,
    Conflict,
    Get,
    LocalBackend,
    Rebased,
    Scan,
    Transaction,
)
from kvsessions.backends.memory import MemoryBackend
from kvsessions.codec import to_micros as _us
from kvsessions.model import (
    Message,
    Session,
    SessionStatus,
    new_session_id,
    stored_message,
    stored_session,
    utcnow,
)
from kvsessions.operations import KVOperations
from kvsessions.stores import KVSessionStore
from kvsessions.testing.conformance import ManualClock

from .local_stores import LOCAL_KINDS, local_store


class RecordingBackend(MemoryBackend):
    """A memory backend that records every operation the plans ask for."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Any] = []

    def _begin(self, write: bool) -> Transaction:
        txn = super()._begin(write)
        recorded = self.ops
        original_get, original_scan, original_write = txn.get, txn.scan, txn.write

        def get(key: bytes) -> bytes | None:
            recorded.append(("get", key))
            return original_get(key)

        def scan(start: bytes, stop: bytes, limit: int | None, reverse: bool) -> Any:
            recorded.append(("scan", start, stop))
            return original_scan(start, stop, limit, reverse)

        def write(put: Any, delete: Any, delete_ranges: Any) -> None:
            recorded.append(("write", dict(put), list(delete), list(delete_ranges)))
            original_write(put, delete, delete_ranges)

        txn.get, txn.scan, txn.write = get, scan, write  # type: ignore[method-assign]
        return txn


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def recorded(clock: ManualClock) -> tuple[SessionManager, RecordingBackend]:
    backend = RecordingBackend()
    return SessionManager(store=KVSessionStore(backend), clock=clock), backend


@pytest.mark.parametrize("history", [10, 1_000, 20_000])
def test_append_writes_only_the_new_message(recorded: Any, history: int) -> None:
    manager, backend = recorded
    session = manager.create_session("u")
    for i in range(history):
        session.add_message("user", f"m{i}")
    manager.save(session)
    backend.ops.clear()
    session.add_message("user", "one more")
    manager.save(session)
    writes = [op for op in backend.ops if op[0] == "write"]
    assert len(writes) == 1  # one commit
    _, put, delete, ranges = writes[0]
    sid = session.session_id
    # within the same minute the activity index already holds the session: not rewritten
    assert set(put) == {keys.message_key(sid, history), keys.header_key(sid)}
    assert delete == [] and ranges == []
    assert sum(len(v) for v in put.values()) < 400  # header + one message, no history
    assert not [op for op in backend.ops if op[0] == "scan"]  # nothing read back


def test_a_header_only_load_reads_the_header_alone(recorded: Any) -> None:
    manager, backend = recorded
    session = manager.create_session("u")
    for i in range(5):
        session.add_message("user", f"m{i}")
    manager.save(session)
    backend.ops.clear()
    loaded = manager.get_session(session.session_id, messages=0)
    assert backend.ops == [("get", keys.header_key(session.session_id))]  # no message scan
    assert loaded is not None and loaded.messages == [] and loaded.message_count == 5
    loaded.add_message("user", "after")
    manager.save(loaded)
    assert manager.get_session(session.session_id, messages=1).messages[0].seq == 5


@pytest.mark.parametrize("window", [None, 0, 2])
def test_a_blocking_load_is_one_read_transaction_and_equals_the_plans(
    recorded: Any, window: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get_session`` on a local store reads in one transaction without driving a plan
    (``core.load_directly``), and builds the very session the plan (the asyncio manager's,
    a TTL store's) builds."""
    manager, backend = recorded
    session = manager.create_session("u", metadata={"m": 1})
    session.set_state("k", [1, 2])
    for i in range(5):
        session.add_message("user", f"m{i}")
    manager.save(session)
    begun: list[bool] = []
    original_begin = backend._begin
    monkeypatch.setattr(
        backend, "_begin", lambda write: begun.append(write) or original_begin(write)
    )
    monkeypatch.setattr(backend, "run", lambda *args, **kwargs: pytest.fail("a plan was driven"))
    direct = manager.get_session(session.session_id, messages=window)
    assert manager.get_session("absent", messages=window) is None
    assert begun == [False, False]  # one read transaction each
    monkeypatch.undo()
    planned = backend.run(core.load(session.session_id, window), write=False)
    assert direct == planned and direct.message_count == planned.message_count == 5
    assert direct._unloaded == planned._unloaded and direct._synced == planned._synced
    mine, theirs = direct._base, planned._base
    assert (mine.header, mine.record, mine.state_json, mine.metadata_json) == (
        theirs.header, theirs.record, theirs.state_json, theirs.metadata_json,
    )  # fmt: skip
    assert mine.keys.header == theirs.keys.header == keys.header_key(session.session_id)


def test_activity_index_moves_when_the_minute_changes(recorded: Any, clock: ManualClock) -> None:
    manager, backend = recorded
    session = manager.create_session("u")
    old_entry = keys.activity_key(session.status, _us(session.updated_at), session.session_id)
    clock.advance(minutes=2)
    session.add_message("user", "later")
    backend.ops.clear()
    manager.save(session)
    [(_, put, delete, _)] = [op for op in backend.ops if op[0] == "write"]
    new_entry = keys.activity_key(session.status, _us(session.updated_at), session.session_id)
    assert new_entry != old_entry and delete == [old_entry] and new_entry in put


def test_state_change_alone_writes_no_message(recorded: Any) -> None:
    manager, backend = recorded
    session = manager.create_session("u")
    session.add_message("user", "a")
    manager.save(session)
    backend.ops.clear()
    session.set_state("k", 1)
    manager.save(session)
    [(_, put, _, _)] = [op for op in backend.ops if op[0] == "write"]
    assert not [key for key in put if key.startswith(b"m")]


def test_listing_reads_the_index_not_all_sessions(recorded: Any) -> None:
    manager, backend = recorded
    for user in range(50):
        manager.create_session(f"user{user}")
    backend.ops.clear()
    [session] = manager.get_sessions_for_user("user7")
    scans = [op for op in backend.ops if op[0] == "scan"]
    start, stop = keys.user_range("user7")
    assert scans[0] == ("scan", start, stop)
    assert len(scans) == 2  # the index, then that session's messages
    assert session.user_id == "user7"


def test_archive_inactive_reads_the_activity_index(recorded: Any) -> None:
    manager, backend = recorded
    for _ in range(5):
        manager.create_session("u")
    backend.ops.clear()
    manager.archive_inactive(days=1)  # nothing is a day old
    scans = [op for op in backend.ops if op[0] == "scan"]
    assert len(scans) == 1 and scans[0][1].startswith(b"aA")
    assert not [op for op in backend.ops if op[0] == "get"]


@pytest.mark.parametrize("backend_rebases", [True, False])
def test_conflicting_commit_retries_on_the_current_header(backend_rebases: bool) -> None:
    """A remote-style driver (no lock held).  The stale append-only commit is either
    re-based by the backend in that same commit (``Rebased``), or, for a backend that
    does not, refused: then the plan reads what it missed, re-bases and wins."""
    store = MemorySessionStore()
    manager = SessionManager(store=store)
    session = manager.create_session("u")
    other = manager.get_session(session.session_id)
    other.add_message("user", "first")
    manager.save(other)
    session.add_message("user", "second")
    plan = KVOperations(utcnow).save(session, None).plan
    op = next(plan)
    assert isinstance(op, Commit) and op.append_only  # speculative: no read first
    if backend_rebases:
        answer = store._backend.run(_single(op), write=True)
        assert isinstance(answer, Rebased)
        first = Get(keys.message_key(session.session_id, 0))
        stored_first = store._backend.run(_single(first), write=False)
        assert [row[1] for row in answer.missed] == [stored_first]
    else:
        op.append_only = False  # a backend that leaves it to the plan
        conflict = store._backend.run(_single(op), write=True)
        assert isinstance(conflict, Conflict)  # the stale expectation was refused
        op = plan.send(conflict)
        assert isinstance(op, Scan)  # it reads the message it missed
        rows = store._backend.run(_single(op), write=False)
        op = plan.send(rows)
        assert isinstance(op, Commit)
        answer = store._backend.run(_single(op), write=True)
        assert answer is None
    with pytest.raises(StopIteration):
        plan.send(answer)
    assert [m.content for m in manager.get_session(session.session_id).messages] == [
        "first",
        "second",
    ]
    assert [m.content for m in session.messages] == ["first", "second"]
    assert [m.seq for m in session.messages] == [0, 1]


def _single(op: Any) -> Any:
    return (yield op)


# -- damaged storage -----------------------------------------------------------------------

DAMAGE = {
    "truncated": lambda good: good[: len(good) // 2],
    "bit-flipped": lambda good: good[:5] + bytes([good[5] ^ 0x40]) + good[6:],
    "wrong-shape": lambda good: b"K\x01" + b'{"hello": "world"}',
    "not-json": lambda good: b"K\x01{{{",
    "pickle": lambda good: pickle.dumps({"r": "user"}),
    "empty": lambda good: b"",
    "time-out-of-range": lambda good: re.sub(
        rb'("created_at"|"t"):\d+', rb"\1:1000000000000000000", good
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("record", ["header", "message"])
def test_damaged_records_raise_typed_errors(tmp_path: Any, damage: str, record: str) -> None:
    store = SQLiteSessionStore(tmp_path / "d.db")
    manager = SessionManager(store=store)
    bad, good = manager.create_session("u"), manager.create_session("u")
    for session in (bad, good):
        session.add_message("user", "hello")
        manager.save(session)
    key = (
        keys.header_key(bad.session_id)
        if record == "header"
        else keys.message_key(bad.session_id, 0)
    )
    _overwrite(store._backend, key, DAMAGE[damage])
    with pytest.raises(CorruptRecordError):
        manager.get_session(bad.session_id)
    assert manager.get_session(good.session_id).messages[0].content == "hello"


def test_index_entry_with_a_damaged_id_raises_typed_error(tmp_path: Any) -> None:
    """An index key whose session id is not UTF-8: listings say ``CorruptRecordError``
    (once a bare ``UnicodeDecodeError``), and ``check`` lists the entry."""
    store = LMDBSessionStore(tmp_path / "i.lmdb")
    manager = SessionManager(store=store)
    manager.create_session("u")
    bad = keys.user_key("u", 0, "x")[:-2] + b"\xff\xfe\x00"
    store._backend.run(_put_plan(bad), write=True)
    for listing in (
        lambda: manager.get_sessions_for_user("u"),
        lambda: manager.list_sessions("u", order="created"),
    ):
        with pytest.raises(CorruptRecordError, match="index entry"):
            listing()
    problems = store._backend.run(core.check_records(), write=False)
    assert [key for key, _ in problems] == [bad]


def _put_plan(key: bytes) -> Any:
    yield Commit(put={key: b""})


def test_newer_record_format_raises_schema_error(tmp_path: Any) -> None:
    store = SQLiteSessionStore(tmp_path / "v.db")
    manager = SessionManager(store=store)
    session = manager.create_session("u")
    _overwrite(
        store._backend, keys.header_key(session.session_id), lambda good: b"K\x09" + good[2:]
    )
    with pytest.raises(SchemaVersionError, match="upgrade"):
        manager.get_session(session.session_id)


def test_newer_store_format_refuses_to_open(tmp_path: Any) -> None:
    SQLiteSessionStore(tmp_path / "f.db").close()
    backend = SQLiteSessionStore(tmp_path / "f.db")._backend
    _overwrite(backend, keys.FORMAT_KEY, lambda _: b"99")
    with pytest.raises(SchemaVersionError, match="newer"):
        SQLiteSessionStore(tmp_path / "f.db")


def _overwrite(backend: LocalBackend, key: bytes, change: Any) -> None:
    def plan() -> Any:
        good = yield Get(key)
        assert good is not None
        yield Commit(put={key: change(good)})

    backend.run(plan(), write=True)


def test_batch_reads_one_snapshot() -> None:
    backend = MemoryBackend()

    def plan() -> Any:
        yield Commit(put={b"a": b"1", b"b": b"2"})
        return (yield Batch((Get(b"a"), Scan(b"a", b"c"))))

    assert backend.run(plan(), write=True) == (b"1", [(b"a", b"1"), (b"b", b"2")])


@pytest.mark.parametrize("engine", ["memory", "lmdb", "sqlite"])
def test_write_if_writes_all_or_nothing(tmp_path: Any, engine: str) -> None:
    """The one transaction behind an append's or a create's save: on the expected value
    (None: the key absent), else nothing (unless the hint lets it re-base, shown by the
    conformance races)."""
    store = {
        "memory": lambda: KVSessionStore(MemoryBackend()),
        "lmdb": lambda: LMDBSessionStore(tmp_path / "w.lmdb", durability="fast"),
        "sqlite": lambda: SQLiteSessionStore(tmp_path / "w.db", durability="fast"),
    }[engine]()
    backend = store._backend
    hint: Any = (keys.SessionKeys("s"), 0, 1, "token", 0, (b"{}", b"{}"))  # (not a header)
    backend.execute(Commit(put={b"h": b"v1", b"old": b"x"}))
    assert backend.write_if(b"h", b"v0", {b"h": b"v2", b"new": b"y"}, [b"old"], hint) is False
    assert backend.write_if(b"absent", b"v1", {b"new": b"y"}, [], hint) is False
    assert backend.execute(Batch((Get(b"h"), Get(b"new"), Get(b"old")))) == (b"v1", None, b"x")
    assert backend.write_if(b"h", b"v1", {b"h": b"v2", b"new": b"y"}, [b"old"], hint) is True
    assert backend.execute(Batch((Get(b"h"), Get(b"new"), Get(b"old")))) == (b"v2", b"y", None)
    assert backend.write_if(b"h", None, {b"h": b"v9", b"other": b"z"}, [], None) is False
    assert backend.write_if(b"h2", None, {b"h2": b"n1", b"i2": b""}, [], None) is True
    after = backend.execute(Batch((Get(b"h"), Get(b"other"), Get(b"h2"), Get(b"i2"))))
    assert after == (b"v2", None, b"n1", b"")
    store.close()
    with pytest.raises(StoreClosedError):
        backend.write_if(b"h", b"v2", {b"h": b"v3"}, [], hint)


def test_an_append_that_lost_a_race_is_rebased_in_one_transaction(recorded: Any) -> None:
    """The blocking manager's append after another writer's: one transaction, no plan."""
    manager, backend = recorded
    sid = manager.create_session("u").session_id
    mine, theirs = manager.get_session(sid), manager.get_session(sid)
    theirs.add_message("user", "first")
    manager.save(theirs)
    begun: list[bool] = []
    original_begin = backend._begin
    backend._begin = lambda write: begun.append(write) or original_begin(write)  # type: ignore[method-assign]
    backend.ops.clear()
    mine.add_message("user", "second")
    manager.save(mine)
    assert begun == [True]  # one write transaction: read, re-base, commit
    assert [op[0] for op in backend.ops] == ["get", "write", "scan"]
    assert [(m.content, m.seq) for m in mine.messages] == [("first", 0), ("second", 1)]
    loaded = manager.get_session(sid)
    assert [(m.content, m.seq) for m in loaded.messages] == [("first", 0), ("second", 1)]
    assert mine.version == loaded.version and mine.message_count == 2


def test_a_create_is_one_transaction_and_a_taken_id_writes_nothing(recorded: Any) -> None:
    """The blocking manager's create: one write transaction with the header and the three
    index entries; creating a taken id raises and leaves the stored session as it was."""
    manager, backend = recorded
    begun: list[bool] = []
    original_begin = backend._begin
    backend._begin = lambda write: begun.append(write) or original_begin(write)  # type: ignore[method-assign]
    backend.ops.clear()  # (the store's format mark)
    session = manager.create_session("u", {"topic": "x"}, session_id="s1")
    assert begun == [True]
    writes = [op for op in backend.ops if op[0] == "write"]
    assert len(writes) == 1
    session_keys = keys.SessionKeys("s1")
    created_us = _us(session.created_at)
    index = session_keys.index_entries("u", created_us, SessionStatus.ACTIVE, created_us)
    assert set(writes[0][1]) == {session_keys.header, *index}
    assert session.version == 1 and session.metadata == {"topic": "x"}
    stored = backend.execute(Get(session_keys.header))
    backend.ops.clear()
    with pytest.raises(SessionExistsError):
        manager.create_session("other-user", session_id="s1")
    assert not [op for op in backend.ops if op[0] == "write"]
    assert backend.execute(Get(session_keys.header)) == stored
    assert manager.get_session("s1").user_id == "u"


def test_group_commit_applies_each_commit_in_order(tmp_path: Any) -> None:
    backend = SQLiteSessionStore(tmp_path / "g.db")._backend
    answers = backend.commit_many(
        [
            Commit(expect={b"k": None}, put={b"k": b"1"}),
            Commit(expect={b"k": None}, put={b"k": b"2"}),  # sees the first: conflicts
            Commit(expect={b"k": b"1"}, put={b"k": b"3", b"other": b"x"}),
        ]
    )
    assert answers[0] is None and answers[2] is None
    assert answers[1] is not None and answers[1].current == {b"k": b"1"}
    assert backend.execute(Batch((Get(b"k"), Get(b"other")))) == (b"3", b"x")


def test_group_commit_isolates_a_failing_commit(tmp_path: Any) -> None:
    from kvsessions import StoreError

    store = SQLiteSessionStore(tmp_path / "f.db")
    backend = store._backend
    original_begin = backend._begin

    def begin(write: bool) -> Transaction:
        txn = original_begin(write)
        original_write = txn.write

        def write(put: Any, delete: Any, ranges: Any) -> None:
            if b"poison" in put:
                raise StoreError("disk full (simulated)")
            original_write(put, delete, ranges)

        txn.write = write  # type: ignore[method-assign]
        return txn

    backend._begin = begin  # type: ignore[method-assign]
    answers = backend.commit_many(
        [Commit(put={b"a": b"1"}), Commit(put={b"poison": b"!"}), Commit(put={b"b": b"2"})]
    )
    assert answers[0] is None and answers[2] is None
    assert isinstance(answers[1], StoreError)
    assert backend.execute(Batch((Get(b"a"), Get(b"poison"), Get(b"b")))) == (b"1", None, b"2")


@pytest.mark.parametrize("other_writers", [0, 3])
def test_retrying_a_save_whose_reply_was_lost_does_not_duplicate(
    tmp_path: Any, other_writers: int
) -> None:
    store = SQLiteSessionStore(tmp_path / "r.db")
    manager = SessionManager(store=store)
    session = manager.create_session("u")
    session.add_message("user", "once")
    session.set_state("k", 1)
    plan = KVOperations(utcnow).save(session, None).plan
    assert store._backend.execute(next(plan)) is None  # committed...
    plan.close()  # ...but the caller never heard (a lost reply, a cancelled task)
    for i in range(other_writers):  # others write in between
        other = manager.get_session(session.session_id)
        other.add_message("assistant", f"other {i}")
        manager.save(other)
    manager.save(session)  # the retry
    stored = manager.get_session(session.session_id)
    assert [m.content for m in stored.messages] == ["once"] + [
        f"other {i}" for i in range(other_writers)
    ]
    assert [m.content for m in session.messages] == [m.content for m in stored.messages]
    assert session.get_state("k") == 1 and session.version == stored.version
    session.add_message("user", "next")  # and the session goes on normally
    manager.save(session)
    assert manager.get_session(session.session_id).message_count == 2 + other_writers


def test_retrying_a_create_whose_reply_was_lost(tmp_path: Any) -> None:
    store = SQLiteSessionStore(tmp_path / "c.db")
    manager = SessionManager(store=store)
    from kvsessions import Session

    session = Session(session_id="fixed", user_id="u")
    session.add_message("user", "hello")
    plan = KVOperations(utcnow).save(session, None).plan
    assert store._backend.execute(next(plan)) is None
    plan.close()
    manager.save(session)  # not SessionExistsError: it is our own create
    assert manager.get_session("fixed").message_count == 1
    with pytest.raises(SessionExistsError):
        manager.save(Session(session_id="fixed", user_id="u"))


def test_new_session_ids_are_version_4_uuids() -> None:
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_save_that_lost_a_race_leaves_the_session_on_the_direct_path() -> None:
    """After a re-based save, the next append is again recognised as only appended."""
    manager = SessionManager(store=MemorySessionStore())
    session = manager.create_session("u", metadata={"m": 1})
    assert core._appended(session, session._base) == []  # created: nothing pending
    other = manager.get_session(session.session_id)
    other.set_state("k", 1)
    other.add_message("user", "first")
    manager.save(other)
    session.add_message("user", "second")
    manager.save(session)  # loses to `other`, re-bases on its header
    assert [m.seq for m in session.messages] == [0, 1] and session.state == {"k": 1}
    session.add_message("user", "third")
    assert core._appended(session, session._base) == session.messages[2:]
    manager.save(session)
    assert [m.content for m in manager.get_session(session.session_id).messages] == [
        "first",
        "second",
        "third",
    ]


@pytest.mark.parametrize("kind", ["memory", "lmdb", "sqlite"])
@pytest.mark.parametrize("forked", [False, True])
def test_a_rebased_append_leaves_the_session_synced_with_the_stored_header(
    kind: str, forked: bool, tmp_path: Any
) -> None:
    """After the backend re-based an append (taking the moved counters from the edit, or
    decoding the header of a forked session), the session remembers exactly the stored
    header: the same record a load decodes, and the same JSON of its state and metadata."""
    store = {
        "memory": lambda: MemorySessionStore(),
        "lmdb": lambda: LMDBSessionStore(tmp_path / "kv.lmdb", map_size=2**24),
        "sqlite": lambda: SQLiteSessionStore(tmp_path / "kv.db"),
    }[kind]()
    manager = SessionManager(store=store)
    session = manager.create_session("u", metadata={"m": [1, "x"]})
    session.set_state("k", {"deep": 1})
    session.add_message("user", "one")
    manager.save(session)
    if forked:
        session = manager.fork(session.session_id)
    for round_ in range(3):
        mine = manager.get_session(session.session_id, messages=0)
        theirs = manager.get_session(session.session_id, messages=0)
        theirs.add_message("user", f"theirs {round_}")
        manager.save(theirs)
        mine.add_message("assistant", f"mine {round_}")
        manager.save(mine)  # lost to theirs: re-based in the commit
        loaded = manager.get_session(session.session_id, messages=0)
        assert mine._base.header == loaded._base.header
        assert mine._base.record == loaded._base.record
        assert mine._base.state_json == loaded._base.state_json == b'{"k":{"deep":1}}'
        assert mine._base.metadata_json == loaded._base.metadata_json
        assert mine.version == loaded.version and mine.updated_at == loaded.updated_at
        assert [m.content for m in mine.messages][-2:] == [f"theirs {round_}", f"mine {round_}"]
    store.close()


def test_lmdb_reads_a_header_only_load_on_the_engine_and_equals_the_plans(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LMDB answers a header-only load's one ``Get`` without the transaction wrapper; the
    session is the plan's, a missing id is None, a closed store says so."""
    manager = SessionManager(LMDBSessionStore(tmp_path / "kv.lmdb", durability="fast"))
    session = manager.create_session("u", metadata={"m": 1})
    session.set_state("k", [1, 2])
    session.add_message("user", "one")
    manager.save(session)
    backend = manager.store._backend
    monkeypatch.setattr(backend, "_begin", lambda write: pytest.fail("the wrapper was used"))
    direct = manager.get_session(session.session_id, messages=0)
    assert manager.get_session("absent", messages=0) is None
    monkeypatch.undo()
    planned = backend.run(core.load(session.session_id, 0), write=False)
    assert direct == planned and direct.message_count == 1 and direct.messages == []
    assert (direct._base.header, direct._base.record) == (
        planned._base.header,
        planned._base.record,
    )
    manager.close()
    with pytest.raises(StoreClosedError):
        backend.read(Get(keys.header_key(session.session_id)))


@pytest.mark.parametrize("moves_again", [False, True])
def test_lmdb_makes_a_rebase_outside_the_write_lock_and_redoes_it_if_the_header_moved(
    moves_again: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LMDB's ``write_if`` releases the write lock while it edits a lost append onto the
    header that won; if yet another save lands meanwhile, the edit is made again, under
    the lock, on that header: every message kept, in order, the session synced."""
    manager = SessionManager(LMDBSessionStore(tmp_path / "kv.lmdb", durability="fast"))
    sid = manager.create_session("u").session_id
    mine, theirs = manager.get_session(sid, messages=0), manager.get_session(sid, messages=0)
    theirs.add_message("user", "theirs 0")
    manager.save(theirs)
    edits: list[bytes | None] = []
    real_edit = lmdb_backend.append_edit

    def edit_while_others_save(expected: Any, current: Any, put: Any, hint: Any) -> Any:
        edits.append(current)
        if moves_again and len(edits) == 1:  # (no transaction open here: a save lands)
            late = manager.get_session(sid, messages=0)
            assert late is not None
            late.add_message("user", "late")
            manager.save(late)
        return real_edit(expected, current, put, hint)

    monkeypatch.setattr(lmdb_backend, "append_edit", edit_while_others_save)
    mine.add_message("assistant", "mine")
    manager.save(mine)
    assert len(edits) == 1 + moves_again  # (a second edit, under the lock, on a new header)
    assert not moves_again or edits[0] != edits[1]
    stored = manager.get_session(sid)
    assert stored is not None
    want = ["theirs 0", "late", "mine"] if moves_again else ["theirs 0", "mine"]
    assert [m.content for m in stored.messages] == want
    assert [m.seq for m in stored.messages] == list(range(len(want)))
    assert [m.content for m in mine.messages] == want
    assert mine._base.header == stored._base.header and mine.version == stored.version
    manager.close()


@pytest.mark.parametrize("their_change", ["append", "state", "archive", "delete"])
def test_a_lost_append_is_rebased_by_the_direct_path_unless_more_moved(
    their_change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Others' appends and state changes are taken in stride by the direct path (the
    general plan is not called); an archived or deleted session goes to the general
    plan, which refuses typed."""
    manager = SessionManager(store=MemorySessionStore())
    session = manager.create_session("u")
    other = manager.get_session(session.session_id)
    other.add_message("user", "theirs")
    if their_change == "state":
        other.set_state("k", 1)
    manager.save(other)
    if their_change == "archive":
        manager.archive(session.session_id)
    elif their_change == "delete":
        manager.delete(session.session_id)
    general = []
    real_save = core._save

    def spy(*args: Any) -> Any:
        general.append(args)
        return (yield from real_save(*args))

    monkeypatch.setattr(core, "_save", spy)
    session.add_message("user", "mine")
    if their_change in ("append", "state"):
        manager.save(session)
        assert general == []
        assert [(m.seq, m.content) for m in session.messages] == [(0, "theirs"), (1, "mine")]
        assert session.state == ({"k": 1} if their_change == "state" else {})
        stored = manager.get_session(session.session_id)
        assert [m.content for m in stored.messages] == ["theirs", "mine"]
        assert stored.state == session.state and stored.version == session.version
    else:
        error = SessionArchivedError if their_change == "archive" else SessionNotFoundError
        with pytest.raises(error):
            manager.save(session)
        assert len(general) == 1


def test_a_saved_message_gets_its_seq_in_place_unless_it_already_had_one() -> None:
    """``seq`` is None until the message is saved: the object ``add_message`` returned
    then carries its seq.  A message that already has a seq (added again, here or from
    another session) is stored as a new object and the old one keeps its seq."""
    manager = SessionManager(store=MemorySessionStore())
    session = manager.create_session("u")
    first = session.add_message("user", "one")
    manager.save(session)
    assert first.seq == 0 and session.messages[0] is first
    other = manager.create_session("u")
    shared = Message("user", "shared")
    session.messages += [first, shared, shared]  # a stored one again, one object twice
    other.messages.append(shared)
    manager.save(session)
    assert [m.seq for m in session.messages] == [0, 1, 2, 3]
    assert first.seq == 0 and session.messages[1] is not first
    assert session.messages[2] is shared and shared.seq == 2
    assert session.messages[3] is not shared
    manager.save(other)  # the shared object has a seq by now: the other gets a copy
    assert other.messages[0].seq == 0 and other.messages[0] is not shared and shared.seq == 2
    stored = manager.get_session(session.session_id)
    assert [(m.seq, m.content) for m in stored.messages] == [
        (0, "one"), (1, "one"), (2, "shared"), (3, "shared"),
    ]  # fmt: skip


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_one_message_saves_give_seqs_as_the_general_path(kind: str, tmp_path: Path) -> None:
    """The one-message append (each save adding one) is finished on a path of its own:
    a fresh message gets its seq in place, one added again (already stored, or one object
    twice in one save) is stored as a copy, and the session stays in step with the store."""
    manager = SessionManager(store=local_store(kind, tmp_path))
    session = manager.create_session("u")
    first = session.add_message("user", "one")
    manager.save(session)  # the create's header, then one message
    second = session.add_message("assistant", "two")
    manager.save(session)
    assert (first.seq, second.seq) == (0, 1) and session.messages[1] is second
    session.messages.append(first)  # one message, stored already: a copy with a new seq
    manager.save(session)
    assert first.seq == 0 and session.messages[2] is not first and session.messages[2].seq == 2
    shared = Message("user", "shared")
    session.messages += [shared, shared]  # one object twice: the second is a copy
    manager.save(session)
    assert session.messages[3] is shared and shared.seq == 3
    assert session.messages[4] is not shared and session.messages[4].seq == 4
    third = session.add_message("user", "three")
    manager.save(session)
    assert third.seq == 5 and session.pending_messages == [] and session.message_count == 6
    assert session.version == 6 and session.updated_at > session.created_at
    stored = manager.get_session(session.session_id)
    assert stored is not None and stored.version == session.version
    assert (
        [(m.seq, m.content) for m in stored.messages]
        == [(m.seq, m.content) for m in session.messages]
        == [(0, "one"), (1, "two"), (2, "one"), (3, "shared"), (4, "shared"), (5, "three")]
    )
    manager.close()


def test_internal_builders_set_every_field_as_init_would() -> None:
    """stored_session / stored_message skip __init__: they must set each attrs field."""
    now = utcnow()
    built = stored_session("s", "u", {"m": 1}, [], {"k": 2}, SessionStatus.ACTIVE, now, now, "p")
    expected = Session(
        session_id="s", user_id="u", metadata={"m": 1}, state={"k": 2}, created_at=now,
        updated_at=now, parent_id="p",
    )  # fmt: skip
    for field in attrs.fields(Session):
        assert getattr(built, field.name) == getattr(expected, field.name), field.name
    message = stored_message("user", "hi", now, {"x": 1}, 3)
    assert message == Message("user", "hi", now, {"x": 1}, 3)
    assert [f.name for f in attrs.fields(Message)] == [
        "role",
        "content",
        "timestamp",
        "extras",
        "seq",
    ]
