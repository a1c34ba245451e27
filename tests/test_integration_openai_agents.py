"""The OpenAI Agents SDK adapter against the real SDK (openai-agents).

The SDK's ``Session`` semantics on every store (compared with its own ``SQLiteSession``
where they are the same), concurrent writers, and ``Runner.run`` end to end with a scripted
model, its history surviving a process restart.  No network: the model is a stub.

Run as ``python -m tests.test_integration_openai_agents PATH TURN``, this module is the
worker process of the restart test.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Model, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.memory import Session as SDKSession
from agents.memory import SessionSettings, SQLiteSession
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from kvsessions import (
    AsyncSessionManager,
    InvalidIdError,
    InvalidValueError,
    LMDBSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SessionManager,
    SessionStore,
    SQLiteSessionStore,
    StoreConfigError,
)
from kvsessions.integrations.openai_agents import DEFAULT_USER_ID, KVSession

from .child_process import ROOT, run_json

ALL_KINDS = ["memory", "lmdb", "sqlite", "redis", "custom"]
BUILT_IN = ["memory", "lmdb", "sqlite", "redis"]  # atomic pops, merging appends

# Items as the Runner writes them, plus ones built to trip a careless mapping: keys that
# kvsessions uses itself, values JSON tells apart (1, 1.0, True), nesting, odd text.
RUN_ITEMS: list[Any] = [
    {"content": "What is the weather in Paris?", "role": "user"},
    {
        "arguments": '{"city": "Paris"}',
        "call_id": "call_1",
        "name": "get_weather",
        "type": "function_call",
        "id": "fc_1",
        "status": "completed",
    },
    {"call_id": "call_1", "output": "sunny in Paris", "type": "function_call_output"},
    {
        "id": "msg_1",
        "content": [{"annotations": [], "text": "It is sunny ☀ in Paris.", "type": "output_text"}],
        "role": "assistant",
        "status": "completed",
        "type": "message",
    },
]
ODD_ITEMS: list[Any] = [
    {
        "role": "user",
        "content": {"nested": {"deep": [1, 1.0, True, None, "x", {"e": []}]}},
        "timestamp": "2020-01-01T00:00:00Z",
        "seq": -5,
        "extras": {"a": 1},
        "tool_call_id": 7,
        "r": "?",
        "c": [],
        "t": 0,
        "x": {},
        "q": None,
    },
    {"role": "", "content": "an empty role", "type": ""},
    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "a\u0000b \U0001f600"},
    {"role": ["not", "a", "str"], "content": 2**63, "amount": -0.5e-300},
    {},
]
ITEMS = RUN_ITEMS + ODD_ITEMS


def exact(value: Any) -> str:
    """A form that tells 1, 1.0 and True (and key orders) apart."""
    return repr(value)


def fresh_prefix() -> str:
    return f"oa{uuid.uuid4().hex[:10]}:"


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> SessionStore:
    if kind == "memory":
        return MemorySessionStore()
    if kind == "lmdb":
        return LMDBSessionStore(tmp_path / "s.lmdb", durability="fast")
    if kind == "sqlite":
        return SQLiteSessionStore(tmp_path / "s.db", durability="fast")
    if kind == "redis":
        return RedisSessionStore(request.getfixturevalue("redis_server").url, prefix=fresh_prefix())
    from .custom_store import DictStore

    return DictStore()


@pytest.fixture(params=ALL_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SessionStore:
    return open_store(request.param, tmp_path, request)


@pytest.fixture(params=BUILT_IN)
def kv_store(request: pytest.FixtureRequest, tmp_path: Path) -> SessionStore:
    return open_store(request.param, tmp_path, request)


def run(store: SessionStore, body: Callable[[SessionStore], Awaitable[Any]]) -> Any:
    """Run ``body(store)`` in a fresh event loop, then close the store's shared manager."""

    async def main() -> Any:
        try:
            return await body(store)
        finally:
            await KVSession("closer", store=store).manager.close()

    return asyncio.run(main())


# -- the protocol ----------------------------------------------------------------------


def test_is_an_sdk_session() -> None:
    session = KVSession("conv_1", store=MemorySessionStore())
    assert isinstance(session, SDKSession)
    assert session.session_id == "conv_1"
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None
    for name in ("get_items", "add_items", "pop_item", "clear_session"):
        assert inspect.iscoroutinefunction(getattr(session, name)), name
    assert inspect.signature(session.get_items).parameters["limit"].default is None


def test_constructor_checks_its_arguments(tmp_path: Path) -> None:
    store = MemorySessionStore()
    with pytest.raises(StoreConfigError, match="exactly one"):
        KVSession("c")
    with pytest.raises(StoreConfigError, match="exactly one"):
        KVSession("c", store=store, manager=AsyncSessionManager(store))
    with pytest.raises(StoreConfigError, match="AsyncSessionManager"):
        KVSession("c", manager=SessionManager(store))  # type: ignore[arg-type]
    with pytest.raises(StoreConfigError, match="SessionStore"):
        KVSession("c", store="sessions.lmdb")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        KVSession("", store=store)
    with pytest.raises(InvalidIdError):
        KVSession("c", store=store, user_id="a\x00b")
    settings = KVSession("c", store=store, session_settings={"limit": 3}).session_settings
    assert isinstance(settings, SessionSettings) and settings.limit == 3
    # sessions on one store share one manager; a given manager is used as is
    assert KVSession("a", store=store).manager is KVSession("b", store=store).manager
    manager = AsyncSessionManager(store)
    assert KVSession("a", manager=manager).manager is manager


# -- the SDK's semantics, on every store ---------------------------------------------------


def test_items_round_trip_unchanged(store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        session = KVSession("conv_rt", store=store)
        await session.add_items(RUN_ITEMS)
        await session.add_items(ODD_ITEMS)
        got = await session.get_items()
        assert exact(got) == exact(ITEMS)
        got[0]["content"] = "changed by the caller"  # results are copies, not the stored items
        again = await KVSession("conv_rt", store=store).get_items()
        assert exact(again) == exact(ITEMS)

    run(store, body)


@pytest.mark.parametrize("limit", [None, 0, 1, 2, 5, 9, 10, 100, -1])
def test_limits_match_sqlite_session(store: SessionStore, limit: int | None) -> None:
    async def body(store: SessionStore) -> None:
        ours, theirs = KVSession("conv_lim", store=store), SQLiteSession("conv_lim")
        try:
            for session in (ours, theirs):
                await session.add_items(ITEMS[:3])
                for item in ITEMS[3:]:
                    await session.add_items([item])
            expected = await theirs.get_items(limit)
            assert exact(await ours.get_items(limit)) == exact(expected)
        finally:
            theirs.close()
        # what the SDK documents, spelled out: the latest N, oldest first
        if limit is None or limit < 0:
            assert exact(expected) == exact(ITEMS)
        else:
            assert exact(expected) == exact(ITEMS[max(0, len(ITEMS) - limit) :] if limit else [])

    run(store, body)


def test_session_settings_limit(store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        await KVSession("conv_set", store=store).add_items(ITEMS)
        limited = KVSession("conv_set", store=store, session_settings=SessionSettings(limit=2))
        assert exact(await limited.get_items()) == exact(ITEMS[-2:])
        assert exact(await limited.get_items(limit=4)) == exact(ITEMS[-4:])  # explicit wins
        limited.session_settings = SessionSettings(limit=None)
        assert exact(await limited.get_items()) == exact(ITEMS)
        from_dict = KVSession("conv_set", store=store, session_settings={"limit": 1})
        assert exact(await from_dict.get_items()) == exact(ITEMS[-1:])

    run(store, body)


def test_pop_item(store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        session = KVSession("conv_pop", store=store)
        assert await session.pop_item() is None  # never written
        await session.add_items(ITEMS[:4])
        assert exact(await session.pop_item()) == exact(ITEMS[3])
        assert exact(await session.pop_item()) == exact(ITEMS[2])
        assert exact(await session.get_items()) == exact(ITEMS[:2])
        await session.add_items([ITEMS[5]])
        assert exact(await session.get_items()) == exact([*ITEMS[:2], ITEMS[5]])
        assert exact(await session.pop_item()) == exact(ITEMS[5])
        assert exact(await session.pop_item()) == exact(ITEMS[1])
        assert exact(await session.pop_item()) == exact(ITEMS[0])
        assert await session.pop_item() is None  # emptied
        assert await session.pop_item() is None
        assert await session.get_items() == []

    run(store, body)


def test_sessions_are_isolated_by_id(store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        ids = ["conv", "conv ", "Conv", "conv/1", "conv:1", "c\u00f6nv", "co\u0308nv"]
        sessions = [KVSession(sid, store=store) for sid in ids]
        for number, session in enumerate(sessions):
            await session.add_items([{"role": "user", "content": f"to {number}"}] * (number + 1))
        for number, session in enumerate(sessions):
            got = await session.get_items()
            assert got == [{"role": "user", "content": f"to {number}"}] * (number + 1)
        await sessions[0].clear_session()
        assert await sessions[1].pop_item() == {"role": "user", "content": "to 1"}
        assert await sessions[0].get_items() == []
        assert len(await sessions[1].get_items()) == 1
        for number, session in enumerate(sessions[2:], start=2):
            assert len(await session.get_items()) == number + 1

    run(store, body)


def test_clear_session(store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        session = KVSession("conv_clear", store=store)
        await session.clear_session()  # nothing there yet: fine
        await session.add_items(ITEMS)
        other = KVSession("conv_clear", store=store)  # another handle on the same history
        assert len(await other.get_items()) == len(ITEMS)
        await other.clear_session()
        assert await session.get_items() == []
        assert await session.pop_item() is None
        # the kvsessions session is deleted, not emptied; the next add creates it again
        assert await session.manager.get_session("conv_clear") is None
        session.user_id = "alice"
        await session.add_items(ITEMS[:1])
        assert exact(await other.get_items()) == exact(ITEMS[:1])
        stored = await session.manager.get_session("conv_clear")
        assert stored is not None and stored.user_id == "alice"

    run(store, body)


def test_stored_as_messages_created_lazily(store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        session = KVSession("conv_lazy", store=store)
        manager = session.manager
        assert await session.get_items() == []
        assert await session.pop_item() is None
        await session.add_items([])
        await session.clear_session()
        assert await manager.get_session("conv_lazy") is None  # nothing created by reads
        await session.add_items(ITEMS)
        stored = await manager.get_session("conv_lazy")
        assert stored is not None and stored.user_id == DEFAULT_USER_ID
        assert [m.role for m in stored.messages] == [
            "user",
            "function_call",
            "function_call_output",
            "assistant",
            "user",
            "item",
            "reasoning",
            "item",
            "item",
        ]
        assert exact([m.content for m in stored.messages]) == exact(ITEMS)
        assert [m.extras for m in stored.messages][:4] == [{}, {}, {"tool_call_id": "call_1"}, {}]
        assert all(not m.extras for m in stored.messages[4:])
        mine = KVSession("conv_user", store=store, user_id="user-7")
        await mine.add_items(ITEMS[:1])
        listed = await manager.get_sessions_for_user("user-7")
        assert [s.session_id for s in listed] == ["conv_user"]

    run(store, body)


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "user", "content": {1, 2}},
        {"role": "user", "content": ("a", "tuple")},
        {"role": "user", "content": float("nan")},
        {"role": "user", 1: "int key"},
        "a string item",
        [{"role": "user", "content": "a list in a list"}],
    ],
    ids=["set", "tuple", "nan", "int-key", "str", "list"],
)
def test_bad_items_write_nothing(store: SessionStore, bad: Any) -> None:
    async def body(store: SessionStore) -> None:
        session = KVSession("conv_bad", store=store)
        with pytest.raises(InvalidValueError, match="session item 1"):
            await session.add_items([ITEMS[0], bad, ITEMS[1]])
        assert await session.get_items() == []
        assert await session.manager.get_session("conv_bad") is None
        with pytest.raises(InvalidValueError, match="list of items"):
            await session.add_items(ITEMS[0])  # type: ignore[arg-type]
        await session.add_items(ITEMS[:2])  # still usable
        with pytest.raises(InvalidValueError):
            await session.add_items([bad])
        assert exact(await session.get_items()) == exact(ITEMS[:2])

    run(store, body)


class RecordingManager(AsyncSessionManager):
    """Notes which reads the adapter asks for."""

    calls: list[tuple[Any, ...]]

    async def get_session(self, session_id: str, *, messages: int | None = None) -> Any:
        self.calls.append(("get_session", session_id, messages))
        return await super().get_session(session_id, messages=messages)

    async def get_messages(self, session_id: str, limit: int | None = None, **kw: Any) -> Any:
        self.calls.append(("get_messages", session_id, limit, kw))
        return await super().get_messages(session_id, limit, **kw)

    async def pop_message(self, session_id: str) -> Any:
        self.calls.append(("pop_message", session_id))
        return await super().pop_message(session_id)


def test_reads_are_windows_never_the_whole_history(tmp_path: Path) -> None:
    async def main() -> None:
        async with RecordingManager(LMDBSessionStore(tmp_path / "s.lmdb")) as manager:
            manager.calls = []
            session = KVSession("conv_w", manager=manager)
            await session.add_items(ITEMS[:3])
            await session.add_items(ITEMS[3:])
            assert exact(await session.get_items(3)) == exact(ITEMS[-3:])
            assert exact(await session.get_items()) == exact(ITEMS)
            assert exact(await session.pop_item()) == exact(ITEMS[-1])
            assert manager.calls == [
                ("get_session", "conv_w", 0),  # the header only, to append
                ("get_session", "conv_w", 0),
                ("get_messages", "conv_w", 3, {}),
                ("get_messages", "conv_w", None, {}),
                ("pop_message", "conv_w"),
            ]

    asyncio.run(main())


# -- concurrency (built-in stores: merging appends, atomic pops) -------------------------


def test_concurrent_add_items_lose_nothing(kv_store: SessionStore) -> None:
    writers, calls = 8, 15

    async def write(session: KVSession, writer: int) -> None:
        for call in range(calls):
            await session.add_items(
                [
                    {"role": "user", "content": f"w{writer} c{call} q"},
                    {"role": "assistant", "content": f"w{writer} c{call} a"},
                ]
            )

    async def body(store: SessionStore) -> None:
        shared = KVSession("conv_many", store=store)  # half the writers share one object
        sessions = [shared if w % 2 else KVSession("conv_many", store=store) for w in range(8)]
        await asyncio.gather(*(write(s, w) for w, s in enumerate(sessions)))
        texts = [item["content"] for item in await shared.get_items()]
        assert len(texts) == writers * calls * 2
        assert sorted(texts) == sorted(
            f"w{w} c{c} {kind}" for w in range(writers) for c in range(calls) for kind in "qa"
        )
        for position in range(0, len(texts), 2):  # one call's items stay together, in order
            assert texts[position].endswith(" q")
            assert texts[position + 1] == texts[position][:-1] + "a"
        for writer in range(writers):  # and each writer's calls in the order it made them
            own = [t for t in texts if t.startswith(f"w{writer} ")]
            assert own == [f"w{writer} c{c} {k}" for c in range(calls) for k in "qa"]

    run(kv_store, body)


def test_concurrent_pops_never_return_the_same_item(kv_store: SessionStore) -> None:
    count = 40

    async def drain(session: KVSession) -> list[int]:
        popped = []
        while (item := await session.pop_item()) is not None:
            popped.append(item["n"])
        return popped

    async def body(store: SessionStore) -> None:
        session = KVSession("conv_pops", store=store)
        await session.add_items([{"role": "user", "n": n} for n in range(count)])
        first, second = await asyncio.gather(session.pop_item(), session.pop_item())
        assert first is not None and second is not None
        assert {first["n"], second["n"]} == {count - 1, count - 2}
        handles = [KVSession("conv_pops", store=store) for _ in range(3)] + [session]
        results = await asyncio.gather(*(drain(h) for h in handles))
        popped = [n for result in results for n in result]
        assert sorted(popped) == list(range(count - 2))  # each exactly once
        for result in results:  # everyone pops newest first
            assert result == sorted(result, reverse=True)
        assert await session.get_items() == []

    run(kv_store, body)


def test_a_cancelled_write_still_completes(kv_store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        session = KVSession("conv_cancel", store=store)
        task = asyncio.ensure_future(session.add_items(ITEMS[:2]))
        await asyncio.sleep(0)  # it has started its write
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert exact(await session.get_items()) == exact(ITEMS[:2])  # whole, not maybe
        task = asyncio.ensure_future(session.pop_item())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert exact(await session.get_items()) == exact(ITEMS[:1])

    run(kv_store, body)


# -- Runner.run end to end, with a scripted model ------------------------------------------


class ScriptedModel(Model):
    """Answers with canned outputs, one per call, and records the input of each call."""

    def __init__(self, outputs: list[Any]) -> None:
        self.outputs = list(outputs)
        self.inputs: list[Any] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: Any,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: Any,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
        **kwargs: Any,
    ) -> ModelResponse:
        self.inputs.append(json.loads(json.dumps(input)))
        return ModelResponse(output=[self.outputs.pop(0)], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the scripted model does not stream")


def say(text: str, number: int) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{number}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


CALL_WEATHER = ResponseFunctionToolCall(
    id="fc_1",
    call_id="call_1",
    type="function_call",
    name="get_weather",
    arguments='{"city": "Paris"}',
    status="completed",
)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def one_turn(session: KVSession, question: str, outputs: list[Any], **config: Any) -> Any:
    model = ScriptedModel(outputs)
    agent = Agent(name="weather", instructions="Answer briefly.", model=model, tools=[get_weather])
    result = await Runner.run(
        agent, question, session=session, run_config=RunConfig(tracing_disabled=True, **config)
    )
    return result.final_output, model.inputs


def test_runner_keeps_history_and_applies_the_limit(kv_store: SessionStore) -> None:
    async def body(store: SessionStore) -> None:
        session = KVSession("conv_run", store=store)
        final, inputs = await one_turn(
            session, "What is the weather in Paris?", [CALL_WEATHER, say("It is sunny.", 1)]
        )
        assert final == "It is sunny."
        assert inputs[0] == [{"content": "What is the weather in Paris?", "role": "user"}]
        assert [i.get("type") for i in inputs[1][1:]] == ["function_call", "function_call_output"]
        final, inputs = await one_turn(session, "Thanks!", [say("You're welcome.", 2)])
        assert len(inputs[0]) == 5 and inputs[0][-1] == {"content": "Thanks!", "role": "user"}
        history = await session.get_items()
        assert [i.get("role") or i.get("type") for i in history] == [
            "user",
            "function_call",
            "function_call_output",
            "assistant",
            "user",
            "assistant",
        ]
        # RunConfig.session_settings: the model sees the newest 2 items, then the question
        _, inputs = await one_turn(
            session, "Bye", [say("Bye!", 3)], session_settings=SessionSettings(limit=2)
        )
        assert inputs[0] == [*history[-2:], {"content": "Bye", "role": "user"}]
        assert len(await session.get_items()) == 8  # the limit bounds reads, not the history

    run(kv_store, body)


def _worker(path: str, turn: int) -> None:
    """One process, one turn of the conversation ``conv_123`` on the LMDB store at ``path``."""
    questions = {1: "What is the weather in Paris?", 2: "And tomorrow?"}
    scripts = {1: [CALL_WEATHER, say("It is sunny in Paris.", 1)], 2: [say("Sunny again.", 2)]}

    async def main() -> dict[str, Any]:
        session = KVSession("conv_123", store=LMDBSessionStore(path))
        try:
            final, inputs = await one_turn(session, questions[turn], scripts[turn])
        finally:
            await session.manager.close()
        return {"final": final, "inputs": inputs, "pid": os.getpid()}

    print(json.dumps(asyncio.run(main())))


def test_runner_history_survives_a_process_restart(tmp_path: Path) -> None:
    path = tmp_path / "sessions.lmdb"
    # no API key and no tracing, so nothing can leave the machine
    env = {"OPENAI_AGENTS_DISABLE_TRACING": "1", "OPENAI_API_KEY": None}

    def turn(number: int) -> dict[str, Any]:
        args = ["-m", "tests.test_integration_openai_agents", str(path), str(number)]
        return run_json(args, env=env, cwd=ROOT)

    first, second = turn(1), turn(2)
    assert first["pid"] != second["pid"]
    assert first["final"] == "It is sunny in Paris." and second["final"] == "Sunny again."
    assert first["inputs"][0] == [{"content": "What is the weather in Paris?", "role": "user"}]
    # the second process's model gets the first process's whole turn, then the new question
    assert second["inputs"] == [
        [
            {"content": "What is the weather in Paris?", "role": "user"},
            {
                "arguments": '{"city": "Paris"}',
                "call_id": "call_1",
                "name": "get_weather",
                "type": "function_call",
                "id": "fc_1",
                "status": "completed",
            },
            {"call_id": "call_1", "output": "sunny in Paris", "type": "function_call_output"},
            {
                "id": "msg_1",
                "content": [
                    {"annotations": [], "text": "It is sunny in Paris.", "type": "output_text"}
                ],
                "role": "assistant",
                "status": "completed",
                "type": "message",
            },
            {"content": "And tomorrow?", "role": "user"},
        ]
    ]
    with SessionManager(store=LMDBSessionStore(path)) as manager:
        stored = manager.get_session("conv_123")
    assert stored is not None and stored.message_count == 6
    assert stored.messages[-1].content["content"][0]["text"] == "Sunny again."


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))
