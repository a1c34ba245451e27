"""Google ADK: ``KVSessionService`` keeps ADK's session-service contract on every store.

Most tests run one scenario twice, on ADK's own ``InMemorySessionService`` and on
``KVSessionService`` over a kvsessions store, and compare what the scenario observed
(the scenarios follow ADK's own session-service unit tests, plus the state scopes,
windows and errors).  A scripted clock (ADK's ``set_time_provider``) makes timestamps
and orderings identical in both runs.  Then the behaviours only a persistent service
has: staleness checks, concurrent writers, ids, encodings, and an ADK ``Runner`` run in
two processes over one LMDB path.
"""

from __future__ import annotations

import asyncio
import itertools
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError as ADKNotFound
from google.adk.events import Event, EventActions
from google.adk.platform import time as adk_time
from google.adk.platform import uuid as adk_uuid
from google.adk.sessions import BaseSessionService, InMemorySessionService
from google.adk.sessions import Session as ADKSession
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types

from kvsessions import (
    AsyncSessionManager,
    ConflictError,
    InvalidIdError,
    InvalidValueError,
    KVSessionsError,
    LMDBSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SessionExistsError,
    SessionStore,
    SQLiteSessionStore,
)
from kvsessions.integrations.adk import KVSessionService, _ident

from .child_process import run_json
from .custom_store import DictStore

STORES = ["memory", "lmdb", "sqlite", "redis", "custom"]
Scenario = Callable[[BaseSessionService], Awaitable[Any]]


class Stores:
    """Opens stores of one kind: the same ``name`` is the same data, reopened."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self._tmp = tmp_path
        self._in_process: dict[str, SessionStore] = {}
        if kind == "redis":
            self._url = request.getfixturevalue("redis_server").url
            self._prefix = f"adk-{uuid.uuid4().hex[:8]}-"

    def open(self, name: str = "data") -> SessionStore:
        if self.kind == "lmdb":
            return LMDBSessionStore(self._tmp / f"{name}.lmdb", durability="fast")
        if self.kind == "sqlite":
            return SQLiteSessionStore(self._tmp / f"{name}.db", durability="fast")
        if self.kind == "redis":
            return RedisSessionStore(self._url, prefix=f"{self._prefix}{name}:")
        if name not in self._in_process:  # (never closed: closing would drop the data)
            self._in_process[name] = MemorySessionStore() if self.kind == "memory" else DictStore()
        return self._in_process[name]


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return Stores(request.param, tmp_path, request)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def clocked() -> Any:
        ticks, ids = itertools.count(1000), itertools.count()
        adk_time.set_time_provider(lambda: float(next(ticks)))  # (context vars: this run only)
        adk_uuid.set_id_provider(lambda: f"id-{next(ids)}")
        return await coro_fn()

    return asyncio.run(clocked())


def on_kv(stores: Stores, scenario: Scenario, name: str = "data", **options: Any) -> Any:
    """Run ``scenario`` on a KVSessionService over the store ``name`` of this kind."""

    async def go() -> Any:
        manager = AsyncSessionManager(store=stores.open(name))
        try:
            return await scenario(KVSessionService(manager=manager, **options))
        finally:
            if stores.kind not in ("memory", "custom"):
                await manager.close()

    return run(go)


def on_memory(scenario: Scenario) -> Any:
    return run(lambda: scenario(InMemorySessionService()))


def view(session: ADKSession | None) -> Any:
    """What a caller can observe of a session (events as ADK serialises them)."""
    if session is None:
        return None
    return {
        "id": session.id,
        "app": session.app_name,
        "user": session.user_id,
        "state": session.state,
        "events": [e.model_dump(mode="json", exclude_none=True) for e in session.events],
        "last_update_time": session.last_update_time,
    }


async def error_of(call: Awaitable[Any]) -> str:
    try:
        await call
    except AlreadyExistsError:
        return "AlreadyExistsError"
    except StaleSessionError:
        return "StaleSessionError"
    except ADKNotFound:
        return "SessionNotFoundError"
    return "no error"


def text_event(text: str, author: str = "user", **fields: Any) -> Event:
    return Event(
        invocation_id="inv",
        author=author,
        content=types.Content(role="user", parts=[types.Part(text=text)]),
        **fields,
    )


# -- the scenarios: run on InMemorySessionService and on KVSessionService, compared -----


async def missing_sessions(svc: BaseSessionService) -> Any:
    await svc.create_session(app_name="app", user_id="u", session_id="s")
    return [
        view(await svc.get_session(app_name=a, user_id=u, session_id=s))
        for a, u, s in [("app", "u", "x"), ("app", "v", "s"), ("other", "u", "s")]
    ]


async def create_get_delete(svc: BaseSessionService) -> Any:
    made = await svc.create_session(app_name="app", user_id="u", state={"key": "value"})
    got = await svc.get_session(app_name="app", user_id="u", session_id=made.id)
    assert got == made  # ADK's test: the loaded session equals the created one
    await svc.delete_session(app_name="app", user_id="u", session_id=made.id)
    await svc.delete_session(app_name="app", user_id="u", session_id=made.id)  # no error
    after = await svc.get_session(app_name="app", user_id="u", session_id=made.id)
    return [view(made) | {"id": "generated"}, bool(made.id), after]


async def list_in_order(svc: BaseSessionService) -> Any:
    for user in ("u2", "u1"):
        for i in range(3):
            await svc.create_session(app_name="app", user_id=user, session_id=f"s{i}")
    await svc.create_session(app_name="elsewhere", user_id="u1", session_id="x")
    session = await svc.get_session(app_name="app", user_id="u2", session_id="s0")
    assert session is not None
    await svc.append_event(session, text_event("later"))  # s0 of u2 becomes the newest
    one = await svc.list_sessions(app_name="app", user_id="u1")
    every = await svc.list_sessions(app_name="app")
    nobody = await svc.list_sessions(app_name="app", user_id="nobody")
    none = await svc.list_sessions(app_name="no-such-app")
    return [
        [view(s) for s in listing.sessions] for listing in (one, every, nobody, none)
    ]  # (views include events: a listing has none)


async def session_state_scopes(svc: BaseSessionService) -> Any:
    """ADK's test_session_state: app, user, session and temp state."""
    s11 = await svc.create_session(
        app_name="app", user_id="user1", state={"key11": "value11"}, session_id="session11"
    )
    await svc.create_session(
        app_name="app", user_id="user1", state={"key12": "value12"}, session_id="session12"
    )
    await svc.create_session(app_name="app", user_id="user2", session_id="session2")
    event = text_event(
        "text",
        actions=EventActions(
            state_delta={
                "app:key": "value",
                "user:key1": "value1",
                "temp:key": "temp",
                "key11": "value11_new",
            }
        ),
    )
    returned = await svc.append_event(session=s11, event=event)
    seen = [view(s11), returned.actions.state_delta]
    for user, sid in [("user1", "session12"), ("user2", "session2"), ("user1", "session11")]:
        seen.append(view(await svc.get_session(app_name="app", user_id=user, session_id=sid)))
    return seen


async def new_session_merges_state(svc: BaseSessionService) -> Any:
    s1 = await svc.create_session(
        app_name="app", user_id="u", state={"key1": "value1"}, session_id="session1"
    )
    delta = {"app:key": "value", "user:key1": "value1", "temp:key": "temp"}
    await svc.append_event(s1, text_event("text", actions=EventActions(state_delta=delta)))
    s2 = await svc.create_session(app_name="app", user_id="u", state={}, session_id="session2")
    s3 = await svc.create_session(
        app_name="app",
        user_id="u",
        session_id="session3",
        state={"app:key": "new", "user:other": 1, "temp:t": True, "plain": [1, {"a": None}]},
    )
    s4 = await svc.create_session(app_name="app", user_id="someone", session_id="session4")
    reread = await svc.get_session(app_name="app", user_id="u", session_id="session1")
    return [view(s) for s in (s1, s2, s3, s4, reread)]


async def event_with_bytes(svc: BaseSessionService) -> Any:
    session = await svc.create_session(app_name="app", user_id="u")
    content = types.Content(
        role="user",
        parts=[types.Part.from_bytes(data=b"\x00\xffimage", mime_type="image/png")],
    )
    grounding = types.GroundingMetadata(
        search_entry_point=types.SearchEntryPoint(sdk_blob=b"test_sdk_blob")
    )
    event = Event(invocation_id="inv", author="user", content=content, grounding_metadata=grounding)
    await svc.append_event(session=session, event=event)
    loaded = await svc.get_session(app_name="app", user_id="u", session_id=session.id)
    assert loaded is not None
    assert loaded.events[0].content == content  # bytes come back as bytes
    assert loaded.events[0].grounding_metadata == grounding
    return len(loaded.events)


async def event_with_every_field(svc: BaseSessionService) -> Any:
    session = await svc.create_session(app_name="app", user_id="u")
    event = text_event(
        "test_text",
        turn_complete=True,
        partial=False,
        actions=EventActions(artifact_delta={"file": 0}, transfer_to_agent="agent", escalate=True),
        long_running_tool_ids={"tool2", "tool1"},
        error_code="error_code",
        error_message="error_message",
        interrupted=True,
        branch="a.b",
        id="event-1",
    )
    await svc.append_event(session=session, event=event)
    loaded = await svc.get_session(app_name="app", user_id="u", session_id=session.id)
    assert loaded is not None
    assert loaded.events == session.events  # the event round-trips equal
    assert loaded.events[0].long_running_tool_ids == {"tool1", "tool2"}
    return view(loaded) | {"id": "generated"}


async def windows(svc: BaseSessionService) -> Any:
    """ADK's test_get_session_with_config, and the edges of both filters."""
    session = await svc.create_session(app_name="app", user_id="u", session_id="s")
    for i in range(1, 6):
        await svc.append_event(session, Event(author="user", timestamp=i, id=f"e{i}"))
    seen = []
    for config in [
        None,
        GetSessionConfig(),
        GetSessionConfig(num_recent_events=3),
        GetSessionConfig(num_recent_events=0),
        GetSessionConfig(num_recent_events=50),
        GetSessionConfig(after_timestamp=4.0),
        GetSessionConfig(after_timestamp=50.0),
        GetSessionConfig(after_timestamp=0.5),
        GetSessionConfig(after_timestamp=4.0, num_recent_events=3),
        GetSessionConfig(after_timestamp=2.0, num_recent_events=2),
    ]:
        got = await svc.get_session(app_name="app", user_id="u", session_id="s", config=config)
        assert got is not None
        seen.append([e.timestamp for e in got.events])
    assert seen[2] == [3, 4, 5] and seen[5] == [4, 5] and seen[8] == [4, 5]  # ADK's figures
    return seen


async def partial_and_temp(svc: BaseSessionService) -> Any:
    session = await svc.create_session(app_name="app", user_id="u", session_id="s")
    partial = text_event("stream...", partial=True, actions=EventActions(state_delta={"k": 1}))
    returned = await svc.append_event(session, partial)
    assert returned is partial
    temp = text_event("t", actions=EventActions(state_delta={"temp:scratch": 7, "k": 2}))
    await svc.append_event(session, temp)
    in_memory = dict(session.state)  # temp state stays on the object for the invocation
    loaded = await svc.get_session(app_name="app", user_id="u", session_id="s")
    return [in_memory, temp.actions.state_delta, len(session.events), view(loaded)]


async def namespaces(svc: BaseSessionService) -> Any:
    """The same ids under other apps/users are other sessions; app state is per app."""
    pairs = [("a", "b:c"), ("a:b", "c"), ("A", "b:c"), ("a", "B:c")]
    for n, (app, user) in enumerate(pairs):
        delta = {"app:n": n, "user:n": n, "n": n}
        session = await svc.create_session(app_name=app, user_id=user, session_id="same")
        await svc.append_event(session, text_event(f"{n}", actions=EventActions(state_delta=delta)))
    return [
        view(await svc.get_session(app_name=app, user_id=user, session_id="same"))
        for app, user in pairs
    ] + [[view(s) for s in (await svc.list_sessions(app_name=app)).sessions] for app, _ in pairs]


async def errors(svc: BaseSessionService) -> Any:
    session = await svc.create_session(app_name="app", user_id="u", session_id="dup")
    seen = [
        await error_of(svc.create_session(app_name="app", user_id="u", session_id="dup")),
        await error_of(svc.create_session(app_name="app", user_id="u", session_id=" dup ")),
    ]
    # the failed create changed nothing (its state delta is not applied)
    seen.append(await error_of(svc.create_session(app_name="app", user_id="u", session_id="x")))
    await svc.delete_session(app_name="app", user_id="u", session_id="dup")
    seen.append(await error_of(svc.append_event(session, text_event("gone"))))
    ghost = ADKSession(id="never", app_name="app", user_id="u")
    seen.append(await error_of(svc.append_event(ghost, text_event("nowhere"))))
    other = await svc.create_session(app_name="app", user_id="u", session_id="  padded  ")
    blank = await svc.create_session(app_name="app", user_id="u", session_id="  ")
    seen += [other.id, bool(blank.id.strip())]
    padded = view(await svc.get_session(app_name="app", user_id="u", session_id=" padded"))
    del padded["last_update_time"]  # (a refused create may or may not have read the clock)
    return [*seen, padded]


async def redelivery(svc: BaseSessionService) -> Any:
    """Appending the same event again (a retried call) stores it once."""
    session = await svc.create_session(app_name="app", user_id="u", session_id="s")
    event = text_event("once", id="e1", actions=EventActions(state_delta={"n": 1}))
    await svc.append_event(session, event)
    copy = Event.model_validate(event.model_dump())
    await svc.append_event(session, copy)
    loaded = await svc.get_session(app_name="app", user_id="u", session_id="s")
    return view(loaded)


async def user_state_reads(svc: BaseSessionService) -> Any:
    await svc.create_session(app_name="app", user_id="u", state={"user:a": 1, "app:b": 2})
    session = await svc.create_session(app_name="app", user_id="u")
    await svc.append_event(
        session, text_event("x", actions=EventActions(state_delta={"user:c": 3}))
    )
    return [
        await svc.get_user_state(app_name="app", user_id="u"),
        await svc.get_user_state(app_name="app", user_id="nobody"),
        await svc.get_user_state(app_name="other", user_id="u"),
    ]


SCENARIOS: list[Scenario] = [
    missing_sessions,
    create_get_delete,
    list_in_order,
    session_state_scopes,
    new_session_merges_state,
    event_with_bytes,
    event_with_every_field,
    windows,
    partial_and_temp,
    namespaces,
    errors,
    redelivery,
    user_state_reads,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_same_as_in_memory_service(scenario: Scenario, stores: Stores) -> None:
    expected = on_memory(scenario)
    assert on_kv(stores, scenario, "strict") == expected
    assert on_kv(stores, scenario, "merging", on_stale="merge") == expected


def test_scenarios_observe_something() -> None:
    """Guard against vacuous comparisons: the in-memory answers carry the contract."""
    assert on_memory(errors)[:5] == [
        "AlreadyExistsError",
        "AlreadyExistsError",
        "no error",
        "SessionNotFoundError",
        "SessionNotFoundError",
    ]
    scopes = on_memory(session_state_scopes)
    assert scopes[0]["state"] == {  # temp state stays on the object, for the invocation
        "key11": "value11_new",
        "temp:key": "temp",
        "app:key": "value",
        "user:key1": "value1",
    }
    assert scopes[-1]["state"] == {  # but it was not stored
        "key11": "value11_new",
        "app:key": "value",
        "user:key1": "value1",
    }
    assert scopes[1] == {"app:key": "value", "user:key1": "value1", "key11": "value11_new"}
    assert scopes[3]["state"] == {"app:key": "value"}  # user2: app state, not user1's
    listings = on_memory(list_in_order)
    assert [(s["user"], s["id"]) for s in listings[1]][-1] == ("u2", "s0")
    assert all(s["events"] == [] for s in listings[1])


# -- what only a persistent service has --------------------------------------------------


def test_data_outlives_the_service(stores: Stores) -> None:
    async def write(svc: BaseSessionService) -> None:
        session = await svc.create_session(
            app_name="app", user_id="u", session_id="s", state={"app:a": 1}
        )
        await svc.append_event(
            session, text_event("hi", actions=EventActions(state_delta={"k": 1}))
        )

    async def read(svc: BaseSessionService) -> Any:
        return view(await svc.get_session(app_name="app", user_id="u", session_id="s"))

    on_kv(stores, write)
    loaded = on_kv(stores, read)
    assert loaded["state"] == {"k": 1, "app:a": 1}
    assert [e["content"]["parts"][0]["text"] for e in loaded["events"]] == ["hi"]


def test_events_are_kvsessions_messages(stores: Stores) -> None:
    async def scenario(svc: KVSessionService) -> None:  # type: ignore[override]
        session = await svc.create_session(app_name="app", user_id="u", session_id="s")
        events = [text_event(f"m{i}", author="agent" if i % 2 else "user") for i in range(4)]
        for event in events:
            await svc.append_event(session, event)
        stored = await svc.manager.get_session(_ident("s", "app", "u", "s"))
        assert stored is not None
        assert [m.role for m in stored.messages] == ["user", "agent", "user", "agent"]
        assert [m.content for m in stored.messages] == [
            e.model_dump(mode="json", exclude_none=True) for e in events
        ]
        assert stored.state == {} and stored.metadata["adk_session"] == "s"

    on_kv(stores, scenario)  # type: ignore[arg-type]


def test_stale_session_object_is_refused(stores: Stores) -> None:
    """As ADK's DatabaseSessionService: appending through an outdated object raises."""

    async def scenario(svc: KVSessionService) -> None:  # type: ignore[override]
        created = await svc.create_session(app_name="app", user_id="u", session_id="s")
        first = await svc.get_session(app_name="app", user_id="u", session_id="s")
        second = await svc.get_session(app_name="app", user_id="u", session_id="s")
        assert first is not None and second is not None
        await svc.append_event(first, text_event("one", id="1"))
        await svc.append_event(first, text_event("two", id="2"))  # its own marker moved on
        with pytest.raises(StaleSessionError) as raised:
            await svc.append_event(second, text_event("lost?", id="3"))
        assert isinstance(raised.value, ConflictError)
        with pytest.raises(StaleSessionError):
            await svc.append_event(created, text_event("lost?", id="4"))
        # an object built by hand (no marker) holding the newest event is fresh enough
        manual = ADKSession(
            id="s", app_name="app", user_id="u", events=first.events, last_update_time=1.0
        )
        await svc.append_event(manual, text_event("three", id="5"))
        empty = ADKSession(id="s", app_name="app", user_id="u")
        with pytest.raises(StaleSessionError):
            await svc.append_event(empty, text_event("lost?", id="6"))
        loaded = await svc.get_session(app_name="app", user_id="u", session_id="s")
        assert loaded is not None
        assert [e.id for e in loaded.events] == ["1", "2", "5"]
        await svc.append_event(loaded, text_event("reloaded", id="7"))  # reloading fixes it

    on_kv(stores, scenario)  # type: ignore[arg-type]


def test_stale_check_is_atomic_across_service_objects(tmp_path: Path) -> None:
    """Eight writers holding the same revision: exactly one append wins, none is lost."""

    async def go() -> None:
        async with AsyncSessionManager(
            store=LMDBSessionStore(tmp_path / "s.lmdb", durability="fast")
        ) as manager:
            services = [KVSessionService(manager=manager) for _ in range(8)]
            await services[0].create_session(app_name="app", user_id="u", session_id="s")
            copies = [
                await svc.get_session(app_name="app", user_id="u", session_id="s")
                for svc in services
            ]
            outcomes = await asyncio.gather(
                *(
                    svc.append_event(copy, text_event(f"w{i}", id=f"w{i}"))  # type: ignore[arg-type]
                    for i, (svc, copy) in enumerate(zip(services, copies, strict=True))
                ),
                return_exceptions=True,
            )
            won = [o for o in outcomes if isinstance(o, Event)]
            assert len(won) == 1
            assert all(isinstance(o, StaleSessionError) for o in outcomes if o not in won)
            loaded = await services[1].get_session(app_name="app", user_id="u", session_id="s")
            assert loaded is not None and [e.id for e in loaded.events] == [won[0].id]

    run(go)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Writers that reload on StaleSessionError (raise mode) or merge: every event kept."""

    async def writer(svc: KVSessionService, name: str, count: int) -> None:
        session = await svc.get_session(app_name="app", user_id="u", session_id="s")
        for i in range(count):
            delta = {f"{name}-last": i, "app:shared": name, f"user:{name}": i}
            while True:
                assert session is not None
                try:
                    await svc.append_event(
                        session,
                        text_event(f"{name}{i}", actions=EventActions(state_delta=delta)),
                    )
                    break
                except StaleSessionError:
                    session = await svc.get_session(app_name="app", user_id="u", session_id="s")

    async def go(mode: str) -> None:
        store = LMDBSessionStore(tmp_path / f"{mode}.lmdb", durability="fast")
        async with AsyncSessionManager(store=store) as manager:
            services = [KVSessionService(manager=manager, on_stale=mode) for _ in range(4)]  # type: ignore[arg-type]
            await services[0].create_session(app_name="app", user_id="u", session_id="s")
            await asyncio.gather(*(writer(svc, f"w{n}", 10) for n, svc in enumerate(services)))
            loaded = await services[0].get_session(app_name="app", user_id="u", session_id="s")
            assert loaded is not None
            texts = [e.content.parts[0].text for e in loaded.events]  # type: ignore[union-attr, index]
            assert sorted(texts) == sorted(f"w{n}{i}" for n in range(4) for i in range(10))
            for n in range(4):  # each writer's own order is kept
                mine = [t for t in texts if t.startswith(f"w{n}")]
                assert mine == [f"w{n}{i}" for i in range(10)]
                assert loaded.state[f"w{n}-last"] == 9 and loaded.state[f"user:w{n}"] == 9
            assert loaded.state["app:shared"] in {"w0", "w1", "w2", "w3"}

    run(lambda: go("raise"))
    run(lambda: go("merge"))


def test_merge_mode_appends_through_outdated_objects(stores: Stores) -> None:
    async def scenario(svc: KVSessionService) -> Any:  # type: ignore[override]
        await svc.create_session(app_name="app", user_id="u", session_id="s")
        a = await svc.get_session(app_name="app", user_id="u", session_id="s")
        b = await svc.get_session(app_name="app", user_id="u", session_id="s")
        assert a is not None and b is not None
        await svc.append_event(a, text_event("a", actions=EventActions(state_delta={"x": 1})))
        await svc.append_event(b, text_event("b", actions=EventActions(state_delta={"y": 2})))
        await svc.append_event(a, text_event("a2"))
        return view(await svc.get_session(app_name="app", user_id="u", session_id="s"))

    merged = on_kv(stores, scenario, on_stale="merge")
    assert [e["content"]["parts"][0]["text"] for e in merged["events"]] == ["a", "b", "a2"]
    assert merged["state"] == {"x": 1, "y": 2}


def test_windows_read_only_what_they_return(tmp_path: Path) -> None:
    """num_recent_events and after_timestamp are served by history windows."""
    calls: list[tuple[str, Any]] = []

    class Spy(AsyncSessionManager):
        async def get_session(self, session_id: str, *, messages: int | None = None) -> Any:
            calls.append(("get_session", messages))
            return await super().get_session(session_id, messages=messages)

        async def get_sessions_for_user(self, user_id: str) -> Any:
            calls.append(("get_sessions_for_user", user_id))
            return await super().get_sessions_for_user(user_id)

        async def get_messages(self, session_id: str, limit: int | None = None, **kw: Any) -> Any:
            calls.append(("get_messages", limit))
            found = await super().get_messages(session_id, limit, **kw)
            calls.append(("got", len(found)))
            return found

    async def go() -> None:
        store = LMDBSessionStore(tmp_path / "s.lmdb", durability="fast")
        async with Spy(store=store) as manager:
            svc = KVSessionService(manager=manager)
            session = await svc.create_session(app_name="app", user_id="u", session_id="s")
            for i in range(300):
                await svc.append_event(session, Event(author="user", timestamp=i, id=f"e{i}"))

            async def get(**config: Any) -> list[float]:
                calls.clear()
                got = await svc.get_session(
                    app_name="app", user_id="u", session_id="s", config=GetSessionConfig(**config)
                )
                assert got is not None
                return [e.timestamp for e in got.events]

            assert await get(num_recent_events=5) == [295, 296, 297, 298, 299]
            assert ("get_session", 5) in calls and ("get_session", None) not in calls
            assert await get(after_timestamp=290) == list(range(290, 300))
            assert ("get_session", 64) in calls and not any(c[0] == "got" for c in calls)
            assert await get(after_timestamp=200) == list(range(200, 300))
            loaded = 64 + sum(n for what, n in calls if what == "got")
            assert 100 < loaded < 300  # older pages only while they were still recent
            assert await get(after_timestamp=0) == list(range(300))
            assert await get(num_recent_events=0) == []
            assert ("get_session", 0) in calls
            calls.clear()  # listings read headers only, never events
            assert len((await svc.list_sessions(app_name="app")).sessions) == 1
            assert ("get_session", None) not in calls
            assert not any(what == "get_sessions_for_user" for what, _ in calls)
            assert sum(n for what, n in calls if what == "got") == 1  # the app's user list

    run(go)


def test_odd_and_long_ids_round_trip(stores: Stores) -> None:
    odd = [
        ("app", "u", "s"),
        ("a" * 300, "u", "s"),  # too long for a plain kvsessions id: hashed
        ("app", "u\x00nul", 'quote"and,comma'),
        ("日本", "ユーザー", "セッション" * 30),
        ("", "", "s"),
    ]

    async def scenario(svc: BaseSessionService) -> Any:
        for n, (app, user, sid) in enumerate(odd):
            made = await svc.create_session(
                app_name=app, user_id=user, session_id=sid, state={"n": n, "user:n": n}
            )
            await svc.append_event(made, text_event(f"e{n}"))
        seen = []
        for app, user, sid in odd:
            got = await svc.get_session(app_name=app, user_id=user, session_id=sid)
            listed = await svc.list_sessions(app_name=app)
            seen.append([view(got), [view(s) for s in listed.sessions]])
        return seen

    assert on_kv(stores, scenario) == on_memory(scenario)
    assert len({_ident("s", *ids) for ids in odd}) == len(odd)
    assert all(len(_ident("s", *ids).encode("utf-8")) <= 200 for ids in odd)

    async def unencodable(svc: BaseSessionService) -> Any:
        with pytest.raises(InvalidIdError, match="surrogate"):
            await svc.create_session(app_name="app", user_id="\udc80lone", session_id="s")
        with pytest.raises(InvalidIdError, match="must be a str"):
            await svc.get_session(app_name="app", user_id=7, session_id="s")  # type: ignore[arg-type]
        return (await svc.list_sessions(app_name="app")).sessions

    assert on_kv(stores, unencodable, "refused") == []


def test_state_values_stored_as_json(stores: Stores) -> None:
    """Rich values are stored in their JSON form (as ADK's database service does);
    a value with no JSON form is refused before anything is written."""

    async def scenario(svc: KVSessionService) -> Any:  # type: ignore[override]
        moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        session = await svc.create_session(
            app_name="app", user_id="u", session_id="s", state={"when": moment, "tags": {"x"}}
        )
        assert session.state == {"when": "2026-01-02T03:04:05Z", "tags": ["x"]}
        bad = text_event("nan", actions=EventActions(state_delta={"app:v": float("nan")}))
        with pytest.raises(InvalidValueError):
            await svc.append_event(session, bad)
        with pytest.raises(InvalidValueError):
            await svc.create_session(app_name="app", user_id="u", state={"f": object()})
        loaded = await svc.get_session(app_name="app", user_id="u", session_id="s")
        assert loaded is not None and loaded.events == []
        temp = text_event("t", actions=EventActions(state_delta={"temp:obj": object(), "k": 1}))
        await svc.append_event(loaded, temp)  # temp values are never stored: anything goes
        loaded = await svc.get_session(app_name="app", user_id="u", session_id="s")
        assert loaded is not None and len(loaded.events) == 1
        listed = await svc.list_sessions(app_name="app")
        return [s.id for s in listed.sessions], loaded.state

    ids, state = on_kv(stores, scenario)
    assert ids == ["s"] and state == {"when": "2026-01-02T03:04:05Z", "tags": ["x"], "k": 1}


def test_concurrent_creates_for_new_users_are_all_listed(stores: Stores) -> None:
    async def scenario(svc: KVSessionService) -> Any:  # type: ignore[override]
        twin = KVSessionService(manager=svc.manager)
        await asyncio.gather(
            *(
                service.create_session(
                    app_name="app", user_id=f"u{n % 5}", session_id=f"s{n}", state={"user:n": n}
                )
                for n in range(10)
                for service in [svc if n % 2 else twin]
            )
        )
        listed = (await svc.list_sessions(app_name="app")).sessions
        return sorted((s.user_id, s.id) for s in listed)

    assert on_kv(stores, scenario) == sorted((f"u{n % 5}", f"s{n}") for n in range(10))


async def _on_store(store: SessionStore, scenario: Scenario) -> None:
    async with KVSessionService(store=store) as service:  # the service owns its manager
        await scenario(service)


def test_errors_are_both_adk_and_kvsessions_errors() -> None:
    async def scenario(svc: BaseSessionService) -> None:
        session = await svc.create_session(app_name="app", user_id="u", session_id="s")
        with pytest.raises(AlreadyExistsError) as exists:
            await svc.create_session(app_name="app", user_id="u", session_id="s")
        assert isinstance(exists.value, SessionExistsError)
        await svc.delete_session(app_name="app", user_id="u", session_id="s")
        with pytest.raises(ADKNotFound) as missing:
            await svc.append_event(session, text_event("x"))
        assert isinstance(missing.value, KVSessionsError) and isinstance(missing.value, KeyError)

    asyncio.run(_on_store(MemorySessionStore(), scenario))
    with pytest.raises(KVSessionsError, match="exactly one of"):
        KVSessionService()
    with pytest.raises(KVSessionsError, match="on_stale"):
        KVSessionService(store=MemorySessionStore(), on_stale="ignore")  # type: ignore[arg-type]


# -- an ADK Runner with a scripted model, in two processes over one LMDB path -----------

AGENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from google.adk.agents import LlmAgent
    from google.adk.models.base_llm import BaseLlm
    from google.adk.models.llm_response import LlmResponse
    from google.adk.runners import Runner
    from google.adk.tools import ToolContext
    from google.genai import types
    from kvsessions import LMDBSessionStore
    from kvsessions.integrations.adk import KVSessionService


    def remember(fact: str, tool_context: ToolContext) -> dict:
        \"\"\"Remember a fact about the user.\"\"\"
        tool_context.state["user:fact"] = fact
        tool_context.state["temp:scratch"] = "never stored"
        tool_context.state["turns"] = tool_context.state.get("turns", 0) + 1
        return {"ok": True}


    class Scripted(BaseLlm):
        \"\"\"Calls `remember` on a user message; answers with what the history holds.\"\"\"

        model: str = "scripted"

        async def generate_content_async(self, llm_request, stream=False):
            last = llm_request.contents[-1].parts[0]
            if last.function_response is None:
                call = types.FunctionCall(name="remember", args={"fact": last.text})
                part = types.Part(function_call=call)
                yield LlmResponse(content=types.Content(role="model", parts=[part]))
                return
            contents = llm_request.contents
            said = [c.parts[0].text for c in contents if c.role == "user" and c.parts[0].text]
            reply = f"I have heard {len(said)}: " + " | ".join(said)
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=reply)]))


    async def main(path, text, create):
        agent = LlmAgent(name="memo", model=Scripted(), instruction="Remember.", tools=[remember],
                         output_key="last_reply")
        async with KVSessionService(store=LMDBSessionStore(path)) as service:
            runner = Runner(app_name="memo_app", agent=agent, session_service=service)
            before = None
            if create:
                await service.create_session(app_name="memo_app", user_id="ann", session_id="chat")
            else:
                old = await service.get_session(
                    app_name="memo_app", user_id="ann", session_id="chat"
                )
                before = [len(old.events), old.state]
            message = types.Content(role="user", parts=[types.Part(text=text)])
            replies = []
            events = runner.run_async(user_id="ann", session_id="chat", new_message=message)
            async for event in events:
                if event.content and event.content.parts and event.content.parts[0].text:
                    replies.append(event.content.parts[0].text)
            after = await service.get_session(app_name="memo_app", user_id="ann", session_id="chat")
            other = await service.create_session(app_name="memo_app", user_id="ann")
            listed = await service.list_sessions(app_name="memo_app", user_id="ann")
            await service.delete_session(app_name="memo_app", user_id="ann", session_id=other.id)
            print(json.dumps({
                "before": before, "replies": replies, "events": len(after.events),
                "authors": [e.author for e in after.events], "state": after.state,
                "other_state": other.state, "listed": len(listed.sessions),
            }))


    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "create"))
    """
)


def test_runner_history_survives_a_process_restart(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT, encoding="utf-8")
    path = str(tmp_path / "agent.lmdb")

    def turn(text: str, mode: str) -> dict[str, Any]:
        return run_json([str(script), path, text, mode])

    first = turn("the sky is blue", "create")
    assert first["replies"] == ["I have heard 1: the sky is blue"]
    assert first["events"] == 4 and first["authors"] == ["user", "memo", "memo", "memo"]
    assert first["state"] == {
        "turns": 1,
        "last_reply": "I have heard 1: the sky is blue",
        "user:fact": "the sky is blue",
    }
    assert first["other_state"] == {"user:fact": "the sky is blue"}  # user scope, new session

    second = turn("grass is green", "resume")  # a new process: everything comes from LMDB
    assert second["before"] == [4, first["state"]]
    assert second["replies"] == ["I have heard 2: the sky is blue | grass is green"]
    assert second["events"] == 8
    assert second["state"]["turns"] == 2 and second["state"]["user:fact"] == "grass is green"
    assert "temp:scratch" not in second["state"]
    assert second["listed"] == 2  # the chat and the new session (deleted afterwards)
