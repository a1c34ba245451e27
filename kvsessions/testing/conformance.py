"""The behaviours every store must show, through both managers (see the package doc)."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import threading
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .. import (
    AsyncSessionManager,
    ConflictError,
    InvalidIdError,
    InvalidSessionError,
    InvalidValueError,
    Message,
    Session,
    SessionArchivedError,
    SessionExistsError,
    SessionManager,
    SessionNotFoundError,
    SessionStatus,
    SessionStore,
    StoreClosedError,
    UnsupportedOperationError,
)

__all__ = ["ManualClock", "StoreConformance", "SyncView"]


class SyncView:
    """Calls an :class:`AsyncSessionManager`'s coroutine methods from blocking test code.

    Every call really goes through the asyncio facade (one event loop, kept for the life
    of the view), so one test body exercises both managers.
    """

    def __init__(self, manager: AsyncSessionManager) -> None:
        self._manager = manager
        self._runner = asyncio.Runner()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._manager, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self._runner.run(attr(*args, **kwargs))
        return attr

    def close(self) -> None:
        """Close the manager; the view's loop stays usable (to see calls fail typed)."""
        self._runner.run(self._manager.close())

    def dispose(self) -> None:
        """Close the manager, then the view's event loop."""
        try:
            self.close()
        finally:
            self._runner.close()


class ManualClock:
    """A clock tests can move: ``clock.advance(days=31)``."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


Manager = Any  # SessionManager or SyncView over an AsyncSessionManager


class StoreConformance:
    """Every public behaviour, for one store kind, through both facades."""

    #: False for whole-session stores (users' own): no merging, no versions.
    kv_semantics = True

    @pytest.fixture
    def open_store(self) -> Callable[[], SessionStore]:
        raise NotImplementedError("define an open_store fixture returning a store factory")

    @pytest.fixture(params=["sync", "async"])
    def facade(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def connect(
        self, open_store: Callable[[], SessionStore], facade: str, clock: ManualClock
    ) -> Iterator[Callable[[], Manager]]:
        """A factory of managers, each on its own store object over the same storage."""
        opened: list[Any] = []

        def make() -> Manager:
            store = open_store()
            if facade == "sync":
                manager: Any = SessionManager(store=store, clock=clock)
            else:
                manager = SyncView(AsyncSessionManager(store=store, clock=clock))
            opened.append(manager)
            return manager

        yield make
        for manager in reversed(opened):
            getattr(manager, "dispose", manager.close)()

    @pytest.fixture
    def manager(self, connect: Callable[[], Manager]) -> Manager:
        return connect()

    def _needs_kv(self) -> None:
        if not self.kv_semantics:
            pytest.skip("whole-session stores do not merge concurrent writes or keep versions")

    # -- the seed's API ------------------------------------------------------------------

    def test_seed_snippet(self, manager: Manager) -> None:
        session = manager.create_session(user_id="user123")
        session.add_message("user", "Hello!")
        session.add_message("assistant", "Hi there!")
        manager.save(session)
        loaded = manager.get_session(session.session_id)
        assert [(m.role, m.content) for m in loaded.messages] == [
            ("user", "Hello!"),
            ("assistant", "Hi there!"),
        ]
        assert loaded.message_count == 2
        assert loaded.user_id == "user123"
        assert loaded.status == SessionStatus.ACTIVE

    def test_session_built_directly(self, manager: Manager) -> None:
        session = Session(
            session_id="sess_abc123",
            user_id="user123",
            metadata={"agent": "support", "priority": 2},
        )
        session.add_message("user", "Hi")
        manager.save(session)
        loaded = manager.get_session("sess_abc123")
        assert loaded.metadata == {"agent": "support", "priority": 2}
        assert loaded.messages[0].content == "Hi"
        assert loaded.created_at == session.created_at

    def test_create_returns_saved_session(self, manager: Manager) -> None:
        session = manager.create_session("u1", metadata={"lang": "en"}, session_id="s-1")
        assert session.session_id == "s-1"
        loaded = manager.get_session("s-1")
        assert loaded == session
        assert loaded.metadata == {"lang": "en"}
        assert loaded.message_count == 0 and loaded.messages == []

    def test_generated_ids_are_unique(self, manager: Manager) -> None:
        ids = {manager.create_session("u").session_id for _ in range(20)}
        assert len(ids) == 20

    def test_missing_session_is_none(self, manager: Manager) -> None:
        assert manager.get_session("nope") is None

    def test_messages_round_trip_exactly(self, manager: Manager) -> None:
        session = manager.create_session("u")
        content = {"parts": [{"type": "text", "text": "héllo ✓"}, 1, 2.5, None, True]}
        sent = session.add_message("assistant", content, tool_call_id="call_1", name="calc")
        manager.save(session)
        got = manager.get_session(session.session_id).messages[0]
        assert got.content == content
        assert got.extras == {"tool_call_id": "call_1", "name": "calc"}
        assert got.timestamp == sent.timestamp and got.timestamp.tzinfo is not None
        assert got.seq == 0

    def test_timestamps_are_aware_utc(self, manager: Manager) -> None:
        session = manager.create_session("u")
        for moment in (session.created_at, session.updated_at):
            assert moment.utcoffset() == timedelta(0)

    def test_updated_at_moves_with_saves(self, manager: Manager, clock: ManualClock) -> None:
        session = manager.create_session("u")
        created = session.updated_at
        clock.advance(minutes=5)
        session.add_message("user", "later")
        manager.save(session)
        loaded = manager.get_session(session.session_id)
        assert loaded.updated_at == created + timedelta(minutes=5)
        assert loaded.created_at == session.created_at

    def test_seqs_are_dense_and_ordered(self, manager: Manager) -> None:
        session = manager.create_session("u")
        for batch in range(3):
            for i in range(4):
                session.add_message("user", f"{batch}-{i}")
            manager.save(session)
        loaded = manager.get_session(session.session_id)
        assert [m.seq for m in loaded.messages] == list(range(12))
        assert [m.content for m in loaded.messages] == [
            f"{b}-{i}" for b in range(3) for i in range(4)
        ]
        assert session.messages == loaded.messages

    def test_state_round_trips_and_deletes(self, manager: Manager) -> None:
        session = manager.create_session("u")
        session.set_state("step", 3)
        session.set_state("plan", ["a", "b"])
        manager.save(session)
        loaded = manager.get_session(session.session_id)
        assert loaded.get_state("step") == 3 and loaded.get_state("plan") == ["a", "b"]
        assert loaded.get_state("missing", "default") == "default"
        loaded.delete_state("plan")
        loaded.state["step"] = 4  # direct mutation is saved too
        manager.save(loaded)
        again = manager.get_session(session.session_id)
        assert again.state == {"step": 4}

    def test_metadata_mutation_is_saved(self, manager: Manager) -> None:
        session = manager.create_session("u", metadata={"a": 1, "b": 2})
        session.metadata["a"] = 10
        del session.metadata["b"]
        session.metadata["nested"] = {"x": [1, 2]}
        manager.save(session)
        assert manager.get_session(session.session_id).metadata == {
            "a": 10,
            "nested": {"x": [1, 2]},
        }

    def test_type_changes_are_saved(self, manager: Manager) -> None:
        session = manager.create_session("u")
        session.set_state("flag", 1)
        manager.save(session)
        session.set_state("flag", True)  # 1 == True in Python, not in JSON
        session.set_state("ratio", 1)
        manager.save(session)
        session.set_state("ratio", 1.0)
        manager.save(session)
        loaded = manager.get_session(session.session_id)
        assert loaded.get_state("flag") is True
        assert type(loaded.get_state("ratio")) is float

    def test_message_count_counts_pending(self, manager: Manager) -> None:
        session = manager.create_session("u")
        session.add_message("user", "a")
        assert session.message_count == 1
        manager.save(session)
        session.add_message("user", "b")
        assert session.message_count == 2
        assert manager.get_session(session.session_id).message_count == 1

    def test_save_without_changes_is_harmless(self, manager: Manager) -> None:
        session = manager.create_session("u")
        session.add_message("user", "a")
        manager.save(session)
        manager.save(session)
        manager.save(session)
        assert manager.get_session(session.session_id).message_count == 1

    # -- history windows -----------------------------------------------------------------

    def _history(self, manager: Manager, count: int) -> str:
        session = manager.create_session("u")
        for i in range(count):
            session.add_message("user" if i % 2 == 0 else "assistant", f"m{i}")
        manager.save(session)
        return str(session.session_id)

    def test_load_only_the_newest_messages(self, manager: Manager) -> None:
        if not self.kv_semantics:
            with pytest.raises(UnsupportedOperationError):
                manager.get_session(self._history(manager, 3), messages=2)
            return
        sid = self._history(manager, 50)
        window = manager.get_session(sid, messages=5)
        assert [m.content for m in window.messages] == [f"m{i}" for i in range(45, 50)]
        assert window.message_count == 50
        window.add_message("user", "m50")
        manager.save(window)
        assert window.message_count == 51 and window.messages[-1].seq == 50
        full = manager.get_session(sid)
        assert [m.content for m in full.messages] == [f"m{i}" for i in range(51)]
        assert manager.get_session(sid, messages=0).messages == []
        assert manager.get_session(sid, messages=0).message_count == 51
        assert len(manager.get_session(sid, messages=500).messages) == 51

    def test_message_windows(self, manager: Manager) -> None:
        if not self.kv_semantics:
            with pytest.raises(UnsupportedOperationError):
                manager.get_messages(self._history(manager, 3), 2)
            return
        sid = self._history(manager, 30)

        def contents(*args: Any, **kwargs: Any) -> list[str]:
            return [m.content for m in manager.get_messages(sid, *args, **kwargs)]

        assert contents(3) == ["m27", "m28", "m29"]
        assert contents() == [f"m{i}" for i in range(30)]
        assert contents(3, before=10) == ["m7", "m8", "m9"]
        assert contents(after=26) == ["m27", "m28", "m29"]
        assert contents(2, after=5, before=9) == ["m7", "m8"]
        assert contents(0) == []
        assert manager.get_messages("missing", 5) == []
        with pytest.raises(InvalidSessionError):
            manager.get_messages(sid, -1)

    def test_pair_safe_window_keeps_tool_calls_with_results(self, manager: Manager) -> None:
        self._needs_kv()
        session = manager.create_session("u")
        session.add_message("user", "what is 2+2 and 3+3?")
        session.add_message("assistant", "", tool_calls=[{"id": "a"}, {"id": "b"}])
        session.add_message("tool", "4", tool_call_id="a")
        session.add_message("tool", "6", tool_call_id="b")
        session.add_message("assistant", "4 and 6")
        manager.save(session)
        plain = manager.get_messages(session.session_id, 3)
        assert [m.role for m in plain] == ["tool", "tool", "assistant"]  # the call is cut off
        safe = manager.get_messages(session.session_id, 3, pair_safe=True)
        assert [m.role for m in safe] == ["assistant", "tool", "tool", "assistant"]
        assert safe[0].extras["tool_calls"] == [{"id": "a"}, {"id": "b"}]

    # -- editing the history -------------------------------------------------------------

    def test_pop_delete_update_messages(self, manager: Manager) -> None:
        sid = self._history(manager, 5)
        popped = manager.pop_message(sid)
        assert popped.content == "m4" and popped.seq == 4
        assert manager.delete_message(sid, 1) is True
        assert manager.delete_message(sid, 1) is False
        redacted = manager.update_message(sid, 2, content="[redacted]", reason="pii")
        assert redacted.content == "[redacted]" and redacted.extras == {"reason": "pii"}
        assert manager.update_message(sid, 99, content="x") is None
        loaded = manager.get_session(sid)
        assert [(m.seq, m.content) for m in loaded.messages] == [
            (0, "m0"),
            (2, "[redacted]"),
            (3, "m3"),
        ]
        assert loaded.message_count == 3
        loaded.add_message("user", "after the edits")
        manager.save(loaded)
        assert manager.get_session(sid).messages[-1].content == "after the edits"
        for _ in range(4):
            assert manager.pop_message(sid) is not None
        assert manager.pop_message(sid) is None
        with pytest.raises(SessionNotFoundError):
            manager.pop_message("missing")

    def test_concurrent_pops_never_return_the_same_message(
        self, connect: Callable[[], Manager]
    ) -> None:
        self._needs_kv()
        one, two = connect(), connect()
        sid = self._history(one, 40)
        popped: list[str] = []

        def popper(manager: Manager) -> None:
            while (message := manager.pop_message(sid)) is not None:
                popped.append(message.content)

        workers = [threading.Thread(target=popper, args=(m,)) for m in (one, two)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert sorted(popped) == sorted(f"m{i}" for i in range(40))  # each exactly once

    def test_replace_messages_compacts(self, manager: Manager) -> None:
        sid = self._history(manager, 10)
        summary = Message(role="system", content="summary of m0..m5")
        [swapped] = manager.replace_messages(sid, 0, 5, [summary])
        assert swapped.seq == 0 and swapped.content == "summary of m0..m5"
        loaded = manager.get_session(sid)
        assert [m.content for m in loaded.messages] == ["summary of m0..m5", "m6", "m7", "m8", "m9"]
        assert loaded.message_count == 5
        with pytest.raises(InvalidSessionError, match="widen"):
            manager.replace_messages(sid, 6, 6, [summary, summary])

    def test_replace_past_the_last_seq_then_append(self, manager: Manager) -> None:
        """A replacement may reach past the last message; the next append goes after it
        (it once reused seq 3 and overwrote the fourth summary)."""
        sid = self._history(manager, 3)
        summaries = [Message(role="system", content=f"s{i}") for i in range(5)]
        manager.replace_messages(sid, 0, 10, summaries)
        session = manager.get_session(sid)
        session.add_message("user", "new")
        manager.save(session)
        loaded = manager.get_session(sid)
        assert [(m.seq, m.content) for m in loaded.messages] == [
            (0, "s0"), (1, "s1"), (2, "s2"), (3, "s3"), (4, "s4"), (5, "new"),
        ]  # fmt: skip
        assert loaded.message_count == 6

    def test_seq_arguments_out_of_range_are_typed(self, manager: Manager) -> None:
        """Seqs past what a key can hold, negative or not ints: ``InvalidSessionError``
        (not the key packer's ``struct.error``), and nothing changes."""
        sid = self._history(manager, 3)
        summary = Message(role="system", content="s")
        calls: list[Callable[[], Any]] = [
            lambda: manager.delete_message(sid, 2**64),
            lambda: manager.update_message(sid, 2**64, content="x"),
            lambda: manager.fork(sid, at_seq=2**64),
            lambda: manager.replace_messages(sid, 0, 2**64, [summary]),
            lambda: manager.delete_message(sid, -1),
        ]
        if self.kv_semantics:  # (windows need a built-in store)
            calls += [
                lambda: manager.get_messages(sid, 5, before=2**64),
                lambda: manager.get_messages(sid, 5, after=2**64),
                lambda: manager.get_messages(sid, 5, before=-1),
                lambda: manager.get_messages(sid, 5, before="3"),
                lambda: manager.get_messages(sid, 5, after=1.5),
            ]
        for call in calls:
            with pytest.raises(InvalidSessionError, match="seq"):
                call()
        assert [m.content for m in manager.get_session(sid).messages] == ["m0", "m1", "m2"]
        for call in (
            lambda: manager.get_session(123),
            lambda: manager.delete(123),
            lambda: manager.archive(123),
            lambda: manager.restore(123),
            lambda: manager.get_sessions_for_user(123),
        ):
            with pytest.raises(InvalidIdError):
                call()
        with pytest.raises(InvalidIdError):
            manager.delete_message(123, 0)
        with pytest.raises(InvalidIdError):
            manager.update_message(123, 0, content="x")

    def test_created_before_1970_is_refused(self, manager: Manager) -> None:
        """The indexes order sessions by creation time as unsigned microseconds."""
        old = datetime(1960, 1, 1, tzinfo=UTC)
        with pytest.raises(InvalidSessionError, match="1970"):
            manager.save(Session(session_id="old", user_id="u", created_at=old, updated_at=old))
        assert manager.get_session("old") is None
        assert manager.get_sessions_for_user("u") == []

    def test_archive_more_days_than_time_archives_nothing(
        self, manager: Manager, clock: ManualClock
    ) -> None:
        session = manager.create_session("u")
        clock.advance(days=40)
        for days in (float("inf"), 1e6, 1e300):
            assert manager.archive_inactive(days=days) == 0
        assert manager.purge_archived(older_than_days=1e9) == 0
        with pytest.raises(InvalidSessionError, match="days"):
            manager.archive_inactive(days=float("nan"))
        assert manager.get_session(session.session_id).status == SessionStatus.ACTIVE
        assert manager.archive_inactive(days=30) == 1

    # -- listing, delete -----------------------------------------------------------------

    def test_sessions_for_user(self, manager: Manager, clock: ManualClock) -> None:
        mine = []
        for i in range(3):
            mine.append(manager.create_session("alice", session_id=f"a{2 - i}").session_id)
            clock.advance(seconds=1)
        manager.create_session("bob", session_id="b0")
        manager.create_session("alice2", session_id="c0")
        listed = manager.get_sessions_for_user("alice")
        assert [s.session_id for s in listed] == mine  # creation order, not id order
        assert all(s.user_id == "alice" for s in listed)
        assert manager.get_sessions_for_user("nobody") == []

    def test_listing_returns_messages(self, manager: Manager) -> None:
        session = manager.create_session("alice")
        session.add_message("user", "hello")
        manager.save(session)
        [listed] = manager.get_sessions_for_user("alice")
        assert [m.content for m in listed.messages] == ["hello"]

    def test_delete(self, manager: Manager) -> None:
        session = manager.create_session("alice")
        session.add_message("user", "x")
        manager.save(session)
        other = manager.create_session("alice")
        assert manager.delete(session.session_id) is True
        assert manager.get_session(session.session_id) is None
        assert manager.delete(session.session_id) is False
        assert [s.session_id for s in manager.get_sessions_for_user("alice")] == [other.session_id]

    def test_recreate_after_delete_starts_empty(self, manager: Manager) -> None:
        session = manager.create_session("alice", session_id="again")
        session.add_message("user", "old")
        manager.save(session)
        manager.delete("again")
        fresh = manager.create_session("alice", session_id="again")
        assert fresh.messages == [] and manager.get_session("again").message_count == 0

    def test_clear_all(self, manager: Manager) -> None:
        for user in ("a", "b"):
            session = manager.create_session(user)
            session.add_message("user", "x")
            manager.save(session)
        manager.clear_all()
        assert manager.get_sessions_for_user("a") == []
        assert manager.get_sessions_for_user("b") == []
        again = manager.create_session("a")
        assert manager.get_session(again.session_id) is not None

    # -- lifecycle -----------------------------------------------------------------------

    def test_archive_keeps_session_readable(self, manager: Manager) -> None:
        session = manager.create_session("u")
        session.add_message("user", "x")
        manager.save(session)
        assert manager.archive(session.session_id) is True
        assert manager.archive(session.session_id) is False
        loaded = manager.get_session(session.session_id)
        assert loaded.status == SessionStatus.ARCHIVED
        assert [m.content for m in loaded.messages] == ["x"]
        assert [s.status for s in manager.get_sessions_for_user("u")] == [SessionStatus.ARCHIVED]

    def test_archive_missing_raises(self, manager: Manager) -> None:
        with pytest.raises(SessionNotFoundError):
            manager.archive("missing")
        with pytest.raises(LookupError):  # also a KeyError, for code that knows no kvsessions
            manager.archive("missing")

    def test_archived_session_refuses_appends_until_restored(self, manager: Manager) -> None:
        session = manager.create_session("u")
        manager.archive(session.session_id)
        loaded = manager.get_session(session.session_id)
        loaded.add_message("user", "too late")
        with pytest.raises(SessionArchivedError, match="restore"):
            manager.save(loaded)
        assert manager.get_session(session.session_id).message_count == 0
        assert manager.restore(session.session_id) is True
        again = manager.get_session(session.session_id)
        again.add_message("user", "back")
        manager.save(again)
        assert manager.get_session(session.session_id).message_count == 1

    def test_archive_inactive(self, manager: Manager, clock: ManualClock) -> None:
        old = [manager.create_session("u").session_id for _ in range(3)]
        clock.advance(days=20)
        recent = manager.create_session("u")
        touched = manager.get_session(old[0])
        touched.add_message("user", "still here")
        manager.save(touched)
        clock.advance(days=15)
        assert manager.archive_inactive(days=30) == 2
        assert manager.archive_inactive(days=30) == 0
        status = {s.session_id: s.status for s in manager.get_sessions_for_user("u")}
        assert status[old[1]] == status[old[2]] == SessionStatus.ARCHIVED
        assert status[old[0]] == status[recent.session_id] == SessionStatus.ACTIVE
        clock.advance(days=40)
        assert manager.archive_inactive() == 2  # default: 30 days

    def test_archive_inactive_is_exact_to_the_microsecond(
        self, manager: Manager, clock: ManualClock
    ) -> None:
        clock.now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
        before = manager.create_session("u")
        clock.now = datetime(2026, 1, 1, 12, 0, 30, 1, tzinfo=UTC)
        after = manager.create_session("u")  # same minute, a microsecond past the cutoff
        clock.now = datetime(2026, 1, 31, 12, 0, 30, tzinfo=UTC)
        assert manager.archive_inactive(days=30) == 1
        assert manager.get_session(before.session_id).status == SessionStatus.ARCHIVED
        assert manager.get_session(after.session_id).status == SessionStatus.ACTIVE
        clock.advance(microseconds=1)
        assert manager.archive_inactive(days=30) == 0  # the cutoff now equals its save time
        clock.advance(microseconds=1)
        assert manager.archive_inactive(days=30) == 1

    def test_archive_inactive_many(self, manager: Manager, clock: ManualClock) -> None:
        for _ in range(1100):  # more than one commit chunk
            manager.create_session("bulk")
        clock.advance(days=2)
        assert manager.archive_inactive(days=1) == 1100
        assert manager.archive_inactive(days=1) == 0

    # -- conflicts and merging -----------------------------------------------------------

    def test_create_with_taken_id(self, manager: Manager) -> None:
        manager.create_session("u", session_id="dup")
        with pytest.raises(SessionExistsError):
            manager.create_session("u", session_id="dup")

    def test_new_object_with_taken_id(self, manager: Manager) -> None:
        self._needs_kv()
        first = manager.create_session("u", session_id="dup")
        first.add_message("user", "keep me")
        manager.save(first)
        clash = Session(session_id="dup", user_id="mallory")
        clash.add_message("user", "overwrite")
        with pytest.raises(SessionExistsError):
            manager.save(clash)
        loaded = manager.get_session("dup")
        assert loaded.user_id == "u" and [m.content for m in loaded.messages] == ["keep me"]

    def test_concurrent_appends_both_survive(self, connect: Callable[[], Manager]) -> None:
        self._needs_kv()
        one, two = connect(), connect()
        sid = one.create_session("u").session_id
        a, b = one.get_session(sid), two.get_session(sid)
        a.add_message("user", "from a")
        b.add_message("user", "from b")
        one.save(a)
        two.save(b)
        loaded = one.get_session(sid)
        assert [m.content for m in loaded.messages] == ["from a", "from b"]
        assert [m.seq for m in loaded.messages] == [0, 1]
        # after its save, b mirrors the store, including a's message it had not seen
        assert [m.content for m in b.messages] == ["from a", "from b"]
        assert b.message_count == 2 and b.version == loaded.version

    def test_concurrent_state_keys_merge(self, connect: Callable[[], Manager]) -> None:
        self._needs_kv()
        one, two = connect(), connect()
        session = one.create_session("u")
        session.set_state("shared", 0)
        one.save(session)
        a, b = one.get_session(session.session_id), two.get_session(session.session_id)
        a.set_state("from_a", 1)
        b.set_state("from_b", 2)
        a.metadata["ma"] = True
        b.delete_state("shared")
        one.save(a)
        two.save(b)
        loaded = one.get_session(session.session_id)
        assert loaded.state == {"from_a": 1, "from_b": 2}
        assert loaded.metadata == {"ma": True}
        assert b.state == loaded.state

    def test_stale_append_keeps_what_others_saved(self, connect: Callable[[], Manager]) -> None:
        """A copy that only gained messages, saved after another writer changed the rest."""
        self._needs_kv()
        one, two = connect(), connect()
        sid = one.create_session("u", metadata={"m": 0}).session_id
        a, b = one.get_session(sid), two.get_session(sid)
        b.set_state("k", "from b")
        b.metadata["m"] = 1
        b.add_message("user", "b")
        two.save(b)
        a.add_message("user", "a")
        one.save(a)
        loaded = one.get_session(sid)
        assert [(m.content, m.seq) for m in loaded.messages] == [("b", 0), ("a", 1)]
        assert loaded.state == a.state == {"k": "from b"}
        assert loaded.metadata == a.metadata == {"m": 1}
        assert [m.seq for m in a.messages] == [0, 1] and a.version == loaded.version

    def test_stale_append_after_archive_or_delete_is_refused(
        self, connect: Callable[[], Manager]
    ) -> None:
        self._needs_kv()
        one, two = connect(), connect()
        archived = one.create_session("u").session_id
        deleted = one.create_session("u").session_id
        a, b = one.get_session(archived), one.get_session(deleted)
        two.archive(archived)
        two.delete(deleted)
        a.add_message("user", "too late")
        b.add_message("user", "too late")
        with pytest.raises(SessionArchivedError):
            one.save(a)
        with pytest.raises(SessionNotFoundError):
            one.save(b)
        assert one.get_session(archived).message_count == 0
        assert one.get_session(deleted) is None

    def test_expect_version(self, connect: Callable[[], Manager]) -> None:
        self._needs_kv()
        one, two = connect(), connect()
        session = one.create_session("u")
        version = session.version
        assert version >= 1
        a, b = one.get_session(session.session_id), two.get_session(session.session_id)
        a.set_state("x", 1)
        one.save(a, expect_version=version)
        assert a.version == version + 1
        b.set_state("x", 2)
        with pytest.raises(ConflictError, match="version"):
            two.save(b, expect_version=version)
        assert one.get_session(session.session_id).get_state("x") == 1
        b2 = two.get_session(session.session_id)
        b2.set_state("x", 3)
        two.save(b2, expect_version=b2.version)
        assert one.get_session(session.session_id).get_state("x") == 3

    def test_update_retries_on_conflict(self, connect: Callable[[], Manager]) -> None:
        self._needs_kv()
        one, two = connect(), connect()
        session = one.create_session("u")
        session.set_state("n", 0)
        one.save(session)
        attempts = []

        def interloper() -> None:
            other = two.get_session(session.session_id)
            other.set_state("n", 100)
            two.save(other)

        def interfere() -> None:  # from another thread, as another worker would
            worker = threading.Thread(target=interloper)
            worker.start()
            worker.join()

        def bump(loaded: Session) -> None:
            attempts.append(loaded.get_state("n"))
            if len(attempts) == 1:  # another writer gets in while we compute
                interfere()
            loaded.set_state("n", loaded.get_state("n") + 1)

        result = one.update(session.session_id, bump)
        assert attempts == [0, 100]  # the first result was refused, the retry saw 100
        assert result.get_state("n") == 101
        assert two.get_session(session.session_id).get_state("n") == 101
        with pytest.raises(ConflictError):
            one.update(session.session_id, lambda s: interfere(), retries=0)
        with pytest.raises(SessionNotFoundError):
            one.update("missing", bump)

    def test_save_after_delete_raises(self, connect: Callable[[], Manager]) -> None:
        self._needs_kv()
        one, two = connect(), connect()
        session = one.create_session("u")
        two.delete(session.session_id)
        session.add_message("user", "orphan")
        with pytest.raises(SessionNotFoundError, match="deleted"):
            one.save(session)
        assert one.get_session(session.session_id) is None

    def test_user_id_cannot_change(self, manager: Manager) -> None:
        self._needs_kv()
        session = manager.create_session("alice")
        session.user_id = "bob"
        with pytest.raises(InvalidSessionError, match="alice"):
            manager.save(session)
        assert manager.get_sessions_for_user("bob") == []

    # -- ids and values ------------------------------------------------------------------

    ODD_IDS = (
        "a/b",
        "a:b",
        "100%",
        "x y",
        "ユーザー",
        "emoji🙂",
        "a\x01b",
        "..",
        "*",
        "_",
        "a\\b",
        "'; DROP TABLE sessions; --",
        "x" * 200,
    )

    @pytest.mark.parametrize("odd", ODD_IDS)
    def test_odd_ids_round_trip(self, manager: Manager, odd: str) -> None:
        session = manager.create_session(odd, session_id=odd)
        session.add_message("user", odd)
        manager.save(session)
        loaded = manager.get_session(odd)
        assert loaded.session_id == odd and loaded.user_id == odd
        assert [s.session_id for s in manager.get_sessions_for_user(odd)] == [odd]

    def test_prefix_and_unicode_twins_do_not_collide(self, manager: Manager) -> None:
        nfc = unicodedata.normalize("NFC", "café")
        nfd = unicodedata.normalize("NFD", "café")
        ids = ["a", "ab", "a/b", "a b", nfc, nfd]
        for sid in ids:
            manager.create_session(sid, session_id=sid)
        for sid in ids:
            assert manager.get_session(sid).session_id == sid
            assert [s.session_id for s in manager.get_sessions_for_user(sid)] == [sid]

    @pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 201, "\ud800", 42, None, b"bytes"])
    def test_bad_ids_are_refused(self, manager: Manager, bad: Any) -> None:
        if bad is not None:  # session_id=None asks for a generated id
            with pytest.raises(InvalidIdError):
                manager.create_session("u", session_id=bad)
        with pytest.raises(InvalidIdError):
            manager.create_session(bad)
        with pytest.raises(ValueError):  # also a ValueError, for plain Python callers
            manager.create_session(bad)
        assert manager.get_sessions_for_user("u") == []

    BAD_VALUES = (
        pytest.param({1, 2}, id="set"),
        pytest.param(b"x", id="bytes"),
        pytest.param("lone \ud800 surrogate", id="lone-surrogate"),
        pytest.param({"k\udfff": 1}, id="lone-surrogate-key"),
        pytest.param(datetime.now(UTC), id="datetime"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param((1, 2), id="tuple"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param(object(), id="object"),
        pytest.param(2**70, id="huge-int"),
        pytest.param([[[]]] * 0 + [{"a": {1.5: 0}}], id="nested-bad-key"),
    )

    @pytest.mark.parametrize("value", BAD_VALUES)
    def test_values_that_do_not_round_trip_are_refused(self, manager: Manager, value: Any) -> None:
        session = manager.create_session("u")
        session.add_message("user", "kept")
        session.set_state("ok", 1)
        manager.save(session)
        with pytest.raises(InvalidValueError):
            session.add_message("user", value)
        with pytest.raises(InvalidValueError):
            session.add_message("user", "x", extra=value)
        with pytest.raises(InvalidValueError):
            session.set_state("bad", value)
        session.state["bad"] = value  # direct mutation bypasses set_state: save catches it
        session.add_message("user", "would be lost")
        with pytest.raises(InvalidValueError):
            manager.save(session)
        loaded = manager.get_session(session.session_id)
        assert [m.content for m in loaded.messages] == ["kept"]
        assert loaded.state == {"ok": 1}
        # a Message built directly (no add_message check) is checked when it is saved
        direct = manager.get_session(session.session_id)
        direct.messages.append(Message("user", value))
        with pytest.raises(InvalidValueError):
            manager.save(direct)
        direct.messages[-1] = Message("user", "x", extras={"k": value})
        with pytest.raises(InvalidValueError):
            manager.save(direct)
        assert [m.content for m in manager.get_session(session.session_id).messages] == ["kept"]

    def test_cyclic_value_is_refused(self, manager: Manager) -> None:
        session = manager.create_session("u")
        cycle: list[Any] = []
        cycle.append(cycle)
        with pytest.raises(InvalidValueError):
            session.set_state("loop", cycle)

    def test_bad_message_objects_are_refused(self, manager: Manager) -> None:
        session = manager.create_session("u")
        with pytest.raises(InvalidSessionError):
            session.add_message("", "empty role")
        session.messages.append({"role": "user", "content": "dict"})
        with pytest.raises(InvalidSessionError, match="add_message"):
            manager.save(session)
        session.messages[-1] = Message(role="user", content="fine")
        manager.save(session)
        assert manager.get_session(session.session_id).message_count == 1

    def test_naive_timestamps_are_refused(self, manager: Manager) -> None:
        self._needs_kv()
        session = Session(user_id="u", created_at=datetime(2025, 1, 1))
        with pytest.raises(InvalidValueError, match="timezone"):
            manager.save(session)

    # -- closing -------------------------------------------------------------------------

    def test_closed_manager_raises(self, connect: Callable[[], Manager]) -> None:
        manager = connect()
        session = manager.create_session("u")
        appending = manager.get_session(session.session_id)
        manager.close()
        with pytest.raises(StoreClosedError):
            manager.get_session(session.session_id)
        with pytest.raises(StoreClosedError):
            manager.save(session)
        appending.add_message("user", "after close")  # (the save a loaded session makes most)
        with pytest.raises(StoreClosedError):
            manager.save(appending)

    # -- listings, lifecycle, fork, export/import ------------------------------------------

    def _spread(self, manager: Manager, clock: ManualClock, users: list[str]) -> list[str]:
        """One session per entry of ``users``, each saved a minute after the previous one."""
        sids = []
        for number, user in enumerate(users):
            session = manager.create_session(user, metadata={"n": number})
            session.add_message("user", f"hello {number}")
            manager.save(session)
            sids.append(session.session_id)
            clock.advance(minutes=2)
        return sids

    def _all_pages(self, manager: Manager, **query: Any) -> list[list[str]]:
        pages, cursor = [], None
        while True:
            page = manager.list_sessions(cursor=cursor, **query)
            pages.append([s.session_id for s in page.sessions])
            cursor = page.cursor
            if cursor is None:
                return pages

    def test_list_sessions_pages_newest_first(self, manager: Manager, clock: ManualClock) -> None:
        sids = self._spread(manager, clock, ["ann", "bob"] * 4 + ["ann"])
        pages = self._all_pages(manager, limit=4)
        assert [len(p) for p in pages] == [4, 4, 1]
        assert _flat(pages) == sids[::-1]
        page = manager.list_sessions(limit=50)
        assert page.cursor is None and len(page) == 9
        first = page.sessions[0]
        assert first.messages == [] or len(first.messages) == 1  # headers (user stores: whole)
        assert first.message_count == 1 and first.metadata == {"n": 8}
        # activity order follows the last save, not creation
        touched = manager.get_session(sids[0])
        touched.add_message("user", "back again")
        manager.save(touched)
        assert manager.list_sessions(limit=1).sessions[0].session_id == sids[0]
        assert [s.session_id for s in manager.list_sessions(order="created", limit=1)] == [sids[-1]]

    def test_list_sessions_filters(self, manager: Manager, clock: ManualClock) -> None:
        sids = self._spread(manager, clock, ["ann", "bob", "ann", "bob", "ann"])
        manager.archive(sids[2])
        anns = [sids[4], sids[0]]
        assert _flat(self._all_pages(manager, user_id="ann", limit=1)) == anns
        assert _flat(self._all_pages(manager, user_id="ann", order="created", limit=2)) == anns
        assert [s.session_id for s in manager.list_sessions(status="archived")] == [sids[2]]
        both = _flat(self._all_pages(manager, user_id="ann", status=None, limit=2))
        assert both == [sids[4], sids[2], sids[0]]
        everything = _flat(self._all_pages(manager, status=None, order="created", limit=3))
        assert everything == sids[::-1]
        assert _flat(self._all_pages(manager, status=None, limit=2)) == sids[::-1]
        assert manager.list_sessions(user_id="nobody").sessions == []

    def test_list_sessions_refuses_bad_arguments(
        self, manager: Manager, clock: ManualClock
    ) -> None:
        self._spread(manager, clock, ["ann", "ann", "ann"])
        cursor = manager.list_sessions(user_id="ann", limit=1).cursor
        assert cursor is not None
        with pytest.raises(InvalidSessionError, match="cursor"):
            manager.list_sessions(user_id="bob", limit=1, cursor=cursor)
        with pytest.raises(InvalidSessionError, match="cursor"):
            manager.list_sessions(cursor="not a cursor")
        for bad in ({"order": "size"}, {"status": "gone"}, {"limit": 0}, {"limit": True}):
            with pytest.raises(InvalidSessionError):
                manager.list_sessions(**bad)
        with pytest.raises(InvalidIdError):
            manager.list_sessions(user_id="")

    def test_listed_session_saves_without_losing_history(self, manager: Manager) -> None:
        session = manager.create_session("ann")
        for i in range(3):
            session.add_message("user", f"m{i}")
        manager.save(session)
        listed = manager.list_sessions(user_id="ann").sessions[0]
        listed.add_message("user", "m3")
        listed.set_state("k", 1)
        manager.save(listed)
        loaded = manager.get_session(session.session_id)
        assert [m.content for m in loaded.messages] == ["m0", "m1", "m2", "m3"]
        assert loaded.state == {"k": 1}

    def test_archive_inactive_dry_run_changes_nothing(
        self, manager: Manager, clock: ManualClock
    ) -> None:
        sids = self._spread(manager, clock, ["ann", "bob", "cy"])
        clock.advance(days=31)
        fresh = manager.create_session("dee")
        assert manager.archive_inactive(days=30, dry_run=True) == 3
        assert manager.get_session(sids[0]).status == SessionStatus.ACTIVE
        assert manager.archive_inactive(days=30) == 3
        assert manager.archive_inactive(days=30, dry_run=True) == 0
        assert manager.get_session(fresh.session_id).status == SessionStatus.ACTIVE

    def test_purge_archived(self, manager: Manager, clock: ManualClock) -> None:
        sids = self._spread(manager, clock, ["ann", "ann", "bob"])
        manager.archive(sids[0])
        manager.archive(sids[2])
        clock.advance(days=10)
        recent = manager.create_session("ann")
        manager.archive(recent.session_id)
        assert manager.purge_archived(older_than_days=5, dry_run=True) == 2
        assert manager.get_session(sids[0]) is not None
        assert manager.purge_archived(older_than_days=5) == 2
        assert manager.get_session(sids[0]) is None and manager.get_session(sids[2]) is None
        assert manager.get_session(sids[1]).status == SessionStatus.ACTIVE  # not archived
        assert manager.get_session(recent.session_id) is not None  # archived, but recent
        listed = manager.list_sessions(status=None, order="created")
        assert {s.session_id for s in listed} == {sids[1], recent.session_id}
        assert [s.session_id for s in manager.get_sessions_for_user("ann")] == [
            sids[1],
            recent.session_id,
        ]
        assert manager.purge_archived(older_than_days=5) == 0
        with pytest.raises(InvalidSessionError):
            manager.purge_archived(older_than_days=-1)

    def test_fork(self, manager: Manager) -> None:
        source = manager.create_session("ann", metadata={"agent": "a"})
        for i in range(5):
            source.add_message("user" if i % 2 == 0 else "assistant", f"m{i}", n=i)
        source.set_state("step", 3)
        manager.save(source)
        whole = manager.fork(source.session_id)
        assert whole.session_id != source.session_id and whole.parent_id == source.session_id
        part = manager.fork(source.session_id, at_seq=2, new_session_id="fork-2")
        assert part.session_id == "fork-2"
        loaded = manager.get_session("fork-2")
        assert loaded.parent_id == source.session_id and loaded.user_id == "ann"
        assert [(m.content, m.extras) for m in loaded.messages] == [
            (f"m{i}", {"n": i}) for i in range(3)
        ]
        assert [m.timestamp for m in loaded.messages] == [m.timestamp for m in source.messages[:3]]
        assert loaded.state == {"step": 3} and loaded.metadata == {"agent": "a"}
        loaded.add_message("user", "only in the fork")
        manager.save(loaded)
        assert manager.get_session(source.session_id).message_count == 5
        assert manager.get_session(whole.session_id).message_count == 5
        assert manager.get_session(source.session_id).parent_id is None
        with pytest.raises(SessionExistsError):
            manager.fork(source.session_id, new_session_id="fork-2")
        with pytest.raises(SessionNotFoundError):
            manager.fork("no-such-session")

    def _export_text(self, manager: Manager, **kwargs: Any) -> str:
        buffer = io.StringIO()
        manager.export(buffer, **kwargs)
        return buffer.getvalue()

    def test_export_import_round_trip(
        self, manager: Manager, clock: ManualClock, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        sids = self._spread(manager, clock, ["ann", "bob", "ann"])
        manager.archive(sids[1])
        forked = manager.fork(sids[0])
        rich = manager.get_session(sids[2])
        rich.add_message("tool", {"result": [1, 2.5, None]}, tool_call_id="c1")
        rich.set_state("nested", {"a": [True, {"b": "ü"}]})
        manager.save(rich)
        path = tmp_path_factory.mktemp("export") / "all.jsonl"
        assert manager.export(str(path)) == 4
        text = path.read_text("utf-8")
        lines = [json.loads(line) for line in text.splitlines()]
        assert {line["format"] for line in lines} == {"kvsessions.session/1"}
        assert {line["session_id"] for line in lines} == {*sids, forked.session_id}
        before = {sid: manager.get_session(sid) for sid in [*sids, forked.session_id]}
        manager.clear_all()
        report = manager.import_(str(path))
        assert (report.created, report.unchanged, report.conflicts) == (4, 0, ())
        for sid, old in before.items():
            new = manager.get_session(sid)
            assert (new.user_id, new.metadata, new.state, new.status, new.parent_id) == (
                old.user_id,
                old.metadata,
                old.state,
                old.status,
                old.parent_id,
            )
            assert (new.created_at, new.updated_at) == (old.created_at, old.updated_at)
            assert [(m.seq, m.role, m.content, m.timestamp, m.extras) for m in new.messages] == [
                (m.seq, m.role, m.content, m.timestamp, m.extras) for m in old.messages
            ]
        assert self._export_text(manager) == text or sorted(
            self._export_text(manager).splitlines()
        ) == sorted(text.splitlines())
        again = manager.import_(io.StringIO(text))
        assert (again.created, again.unchanged, again.conflicts) == (0, 4, ())
        changed = manager.get_session(sids[0])
        changed.add_message("user", "diverged")
        manager.save(changed)
        clash = manager.import_(io.BytesIO(text.encode()))
        assert clash.conflicts == (sids[0],) and clash.unchanged == 3
        assert manager.get_session(sids[0]).message_count == 2  # left alone
        # a user's sessions only; imported sessions take new writes as usual
        assert len(self._export_text(manager, user_id="ann").splitlines()) == 3
        imported = manager.get_session(sids[2])
        imported.add_message("user", "after import")
        manager.save(imported)
        assert manager.get_session(sids[2]).messages[-1].seq == imported.messages[-2].seq + 1

    def test_import_refuses_bad_lines(self, manager: Manager) -> None:
        good = manager.create_session("ann")
        good.add_message("user", "hi")
        manager.save(good)
        line = self._export_text(manager)
        manager.clear_all()
        record = json.loads(line)
        for broken in (
            "{not json",
            json.dumps({**record, "format": "kvsessions.session/99"}),
            json.dumps({**record, "session_id": ""}),
            json.dumps({**record, "created_at": "2026-01-01T00:00:00"}),
            json.dumps({**record, "messages": [{"seq": "x"}]}),
            json.dumps({**record, "extra_field": 1}),
        ):
            with pytest.raises(InvalidSessionError, match="line 2"):
                manager.import_(io.StringIO("\n" + broken + "\n"))
            assert manager.get_session(good.session_id) is None
        assert manager.import_(io.StringIO(line)).created == 1

    def test_copy_store_moves_everything(self, manager: Manager, clock: ManualClock) -> None:
        from .. import MemorySessionStore, copy_store

        sids = self._spread(manager, clock, ["ann", "bob"])
        manager.archive(sids[1])
        target = MemorySessionStore()
        seen: list[int] = []
        report = copy_store(manager.store, target, progress=seen.append)
        assert report.created == 2 and sum(seen) == 2
        copied = SessionManager(target)
        assert self._export_text(copied) == self._export_text(manager) or sorted(
            self._export_text(copied).splitlines()
        ) == sorted(self._export_text(manager).splitlines())
        back = copy_store(target, manager.store)
        assert (back.created, back.unchanged) == (0, 2)

    # -- ttl (stores that keep it by the manager's clock) ----------------------------------

    @pytest.fixture
    def open_ttl_store(self) -> Callable[[float], SessionStore] | None:
        return None  # this kind has no clock-driven ttl (Redis: native, tested on its own)

    def test_ttl_expires_sessions_and_sweep_removes_them(
        self,
        open_ttl_store: Callable[[float], SessionStore] | None,
        facade: str,
        clock: ManualClock,
    ) -> None:
        if open_ttl_store is None:
            pytest.skip("this store kind has no clock-driven ttl")
        store = open_ttl_store(3600)
        raw = SessionManager(store, clock=clock)
        manager: Any = (
            raw if facade == "sync" else SyncView(AsyncSessionManager(store, clock=clock))
        )
        try:
            old = manager.create_session("ann", session_id="old")
            old.add_message("user", "soon gone")
            manager.save(old)
            clock.advance(minutes=50)
            manager.create_session("ann", session_id="kept")
            clock.advance(minutes=20)  # "old" is 70 minutes idle, "kept" 20
            assert manager.get_session("kept") is not None
            assert [s.session_id for s in manager.get_sessions_for_user("ann")] == ["kept"]
            assert [s.session_id for s in manager.list_sessions(status=None)] == ["kept"]
            assert manager.get_messages("old") == []
            old.add_message("user", "too late")
            with pytest.raises(SessionNotFoundError, match="expired"):
                manager.save(old)
            assert manager.get_session("old", messages=0) is None  # expired: not returned
            assert manager.get_session("old") is None
            with pytest.raises(SessionNotFoundError):
                manager.archive("old")
            assert manager.delete("old") is False
            again = manager.create_session("ann", session_id="old")  # the id is free again
            assert manager.get_session("old").message_count == 0 and again.version == 1
            kept_session = manager.get_session("kept")
            clock.advance(minutes=50)
            kept_session.add_message("user", "keeps it alive")
            with pytest.raises(SessionNotFoundError):
                manager.save(kept_session)  # 70 minutes idle: gone too
            clock.advance(minutes=40)
            assert manager.sweep() == 2  # "kept" (110 min idle), the new "old" (90)
            assert manager.sweep() == 0
            assert manager.list_sessions(status=None).sessions == []
            problems = raw._run(_check_records_job())
            assert problems == []  # nothing left behind: no stale index entries
        finally:
            getattr(manager, "dispose", manager.close)()


def _flat(pages: list[list[str]]) -> list[str]:
    return [sid for page in pages for sid in page]


def _check_records_job() -> Any:
    from ..core import Job, check_records

    return Job(check_records(), write=False)
