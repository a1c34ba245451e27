"""KVChatMessageHistory against langchain-core itself, on every store kind.

Every message type round-trips exactly, through the blocking and the asyncio methods (the
asyncio ones never touch the blocking manager, and the reverse); sessions are isolated,
created lazily, cleared without losing their metadata; concurrent adds lose nothing (on a
user's whole-session store too, from threads and event loops at once); the ``a*`` methods
convert long lists in a thread, off the loop; and ``RunnableWithMessageHistory`` around a
fake chat model keeps the conversation across two processes on one LMDB path, and across
``ainvoke`` calls.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

import kvsessions
from kvsessions import (
    AsyncSessionManager,
    CorruptRecordError,
    InvalidIdError,
    InvalidSessionError,
    InvalidValueError,
    KVSessionStore,
    LMDBSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SessionManager,
    SessionStore,
    SQLiteSessionStore,
    UnsupportedOperationError,
)
from kvsessions.integrations.langchain import KVChatMessageHistory, from_langchain, to_langchain

from .child_process import run_json
from .custom_store import DictStore

# RunnableWithMessageHistory and BaseChatMessageHistory are deprecated in langchain-core
# 1.x (removal planned for 2.0) but still its documented chat-history interface.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KV_KINDS = ["memory", "lmdb", "sqlite", "redis"]


def _open(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> SessionStore:
    if kind == "memory":
        return MemorySessionStore()
    if kind == "lmdb":
        return LMDBSessionStore(tmp_path / "s.lmdb", durability="fast")
    if kind == "sqlite":
        return SQLiteSessionStore(tmp_path / "s.db", table_name="chat", durability="fast")
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return RedisSessionStore(server.url, prefix=f"lc{uuid.uuid4().hex[:10]}:")
    assert kind == "custom"
    return DictStore()


@pytest.fixture(params=KV_KINDS)
def kv_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """Each built-in store kind."""
    store = _open(request.param, tmp_path, request)
    yield store
    store.close()


@pytest.fixture(params=[*KV_KINDS, "custom"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """Each built-in store kind, and a user's own whole-session store."""
    store = _open(request.param, tmp_path, request)
    yield store
    store.close()


def arun(store: SessionStore, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` in a fresh event loop (the store closes that loop's Redis clients
    when the loop shuts down)."""
    return asyncio.run(main())


def every_kind_of_message() -> list[BaseMessage]:
    return [
        SystemMessage("You are terse.", id="sys-1"),
        HumanMessage(
            "hello",
            id="h-1",
            name="ada",
            additional_kwargs={"lang": "en", "scores": [1, 2.5, None, True]},
        ),
        HumanMessage(
            content=[
                {"type": "text", "text": "what is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                "and a plain string part",
            ]
        ),
        AIMessage(
            "",
            id="run-42",
            tool_calls=[
                {"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1"},
                {"name": "lookup", "args": {"q": "ünïcode ✓"}, "id": "call_2"},
            ],
            invalid_tool_calls=[
                {
                    "name": "broken",
                    "args": "{oops",
                    "id": "call_3",
                    "error": "bad json",
                    "type": "invalid_tool_call",
                }
            ],
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": 7,
                "total_tokens": 19,
                "input_token_details": {"cache_read": 4},
            },
            response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"},
            additional_kwargs={"refusal": None},
        ),
        ToolMessage("3", tool_call_id="call_1", name="add", id="t-1"),
        ToolMessage(
            [{"type": "text", "text": "found"}],
            tool_call_id="call_2",
            artifact={"rows": [1, 2, 3]},
            status="error",
        ),
        FunctionMessage(name="legacy_fn", content='{"ok": true}'),
        ChatMessage(role="critic", content="too long", additional_kwargs={"score": 0.25}),
        AIMessageChunk(
            content="partial",
            tool_call_chunks=[{"name": "add", "args": '{"a": 1', "id": "c9", "index": 0}],
        ),
        AIMessage("The answer is 3.", name="bot", id="run-43"),
    ]


EXPECTED_ROLES = [
    "system",
    "user",
    "user",
    "assistant",
    "tool",
    "tool",
    "function",
    "critic",
    "assistant",
    "assistant",
]


def assert_same(got: list[BaseMessage], sent: list[BaseMessage]) -> None:
    assert [type(m) for m in got] == [type(m) for m in sent]
    assert [message_to_dict(m) for m in got] == [message_to_dict(m) for m in sent]
    assert got == sent


# -- round trips -----------------------------------------------------------------------


def test_every_message_type_round_trips_sync(store: SessionStore) -> None:
    sent = every_kind_of_message()
    history = KVChatMessageHistory("conv-1", store=store, user_id="u1")
    history.add_messages(sent[:4])
    history.add_message(sent[4])
    history.add_messages(sent[5:])
    assert_same(history.messages, sent)
    # a fresh history object (as RunnableWithMessageHistory makes per call) sees the same
    assert_same(KVChatMessageHistory("conv-1", store=store).messages, sent)
    # one kvsessions message per LangChain message, role from its type
    stored = SessionManager(store).get_session("conv-1")
    assert stored is not None and stored.user_id == "u1"
    assert [m.role for m in stored.messages] == EXPECTED_ROLES
    assert stored.messages[1].content == "hello"


def test_every_message_type_round_trips_async(store: SessionStore) -> None:
    sent = every_kind_of_message()

    async def main() -> list[BaseMessage]:
        history = KVChatMessageHistory("conv-1", store=store, user_id="u1")
        await history.aadd_messages(sent[:5])
        await history.aadd_messages(sent[5:])
        return await history.aget_messages()

    assert_same(arun(store, main), sent)
    # what the asyncio path wrote, the blocking path reads (and the reverse)
    history = KVChatMessageHistory("conv-1", store=store)
    assert_same(history.messages, sent)
    history.add_messages([HumanMessage("one more")])

    async def read() -> list[BaseMessage]:
        return await KVChatMessageHistory("conv-1", store=store).aget_messages()

    assert_same(arun(store, read), [*sent, HumanMessage("one more")])


def _poison(monkeypatch: pytest.MonkeyPatch, manager_class: type) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{manager_class.__name__} must not be used here")

    for name in ("get_session", "get_messages", "save", "replace_messages", "create_session"):
        monkeypatch.setattr(manager_class, name, boom)


def test_async_methods_use_the_asyncio_manager_only(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No executor wrapper around the blocking methods: those would hit the poisoned manager."""
    _poison(monkeypatch, SessionManager)
    history = KVChatMessageHistory("conv-a", store=store)
    assert type(history).aget_messages is not BaseChatMessageHistory.aget_messages

    async def main() -> list[list[BaseMessage]]:
        seen = [await history.aget_messages()]
        await history.aadd_messages([HumanMessage("a"), AIMessage("b")])
        seen.append(await history.aget_messages())
        await history.aclear()
        seen.append(await history.aget_messages())
        return seen

    assert arun(store, main) == [[], [HumanMessage("a"), AIMessage("b")], []]


def test_sync_methods_use_the_blocking_manager_only(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison(monkeypatch, AsyncSessionManager)
    history = KVChatMessageHistory("conv-s", store=store)
    history.add_messages([HumanMessage("a"), AIMessage("b")])
    assert history.messages == [HumanMessage("a"), AIMessage("b")]
    history.clear()
    assert history.messages == []


# -- sessions: lazy creation, isolation, clear -----------------------------------------


def test_session_is_created_on_first_add_only(store: SessionStore) -> None:
    manager = SessionManager(store)
    history = KVChatMessageHistory("lazy", store=store, user_id="alice")
    assert history.messages == []
    history.clear()
    history.add_messages([])
    assert manager.get_session("lazy") is None  # reading, clearing, adding nothing: no session
    history.add_message(HumanMessage("hi"))
    session = manager.get_session("lazy")
    assert session is not None and session.user_id == "alice" and session.message_count == 1
    assert [s.session_id for s in manager.get_sessions_for_user("alice")] == ["lazy"]
    # user_id only matters at creation: another history object appends to the same session
    KVChatMessageHistory("lazy", store=store, user_id="bob").add_message(AIMessage("hello"))
    session = manager.get_session("lazy")
    assert session is not None and session.user_id == "alice" and session.message_count == 2


def test_sessions_are_isolated_by_id(store: SessionStore) -> None:
    first = KVChatMessageHistory("a", store=store)
    second = KVChatMessageHistory("a/b", store=store)  # ids that share a prefix
    third = KVChatMessageHistory("a\x01", store=store)
    first.add_messages([HumanMessage("for a")])
    second.add_messages([HumanMessage("for a/b"), AIMessage("ok")])
    assert first.messages == [HumanMessage("for a")]
    assert second.messages == [HumanMessage("for a/b"), AIMessage("ok")]
    assert third.messages == []
    first.clear()
    assert first.messages == []
    assert second.messages == [HumanMessage("for a/b"), AIMessage("ok")]

    async def main() -> tuple[list[BaseMessage], list[BaseMessage]]:
        await third.aadd_messages([HumanMessage("for a\\x01")])
        await second.aclear()
        return await third.aget_messages(), await second.aget_messages()

    assert arun(store, main) == ([HumanMessage("for a\\x01")], [])
    assert first.messages == []


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_clear_removes_messages_but_keeps_the_session(store: SessionStore, use_async: bool) -> None:
    manager = SessionManager(store)
    history = KVChatMessageHistory("keep", store=store, user_id="carol")
    history.add_messages([HumanMessage("1"), AIMessage("2"), HumanMessage("3")])
    session = manager.get_session("keep")
    assert session is not None
    session.metadata["topic"] = "billing"
    session.set_state("step", 4)
    manager.save(session)

    if use_async:
        arun(store, history.aclear)
    else:
        history.clear()
    assert history.messages == []
    kept = manager.get_session("keep")
    assert kept is not None and kept.message_count == 0
    assert kept.metadata == {"topic": "billing"} and kept.state == {"step": 4}
    assert [s.session_id for s in manager.get_sessions_for_user("carol")] == ["keep"]

    history.add_messages([HumanMessage("after")])
    assert history.messages == [HumanMessage("after")]
    after = manager.get_session("keep")
    assert after is not None and after.message_count == 1
    if isinstance(store, KVSessionStore):  # seqs are never reused after a clear
        assert after.messages[0].seq == 3


# -- windows -----------------------------------------------------------------------------


def _tool_conversation() -> list[BaseMessage]:
    return [
        HumanMessage("add 1+2 and 3+4"),
        AIMessage(
            "",
            tool_calls=[
                {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"},
                {"name": "add", "args": {"a": 3, "b": 4}, "id": "c2"},
            ],
        ),
        ToolMessage("3", tool_call_id="c1"),
        ToolMessage("7", tool_call_id="c2"),
        AIMessage("3 and 7"),
        HumanMessage("thanks"),
    ]


def test_window_never_starts_on_a_cut_off_tool_result(kv_store: SessionStore) -> None:
    conversation = _tool_conversation()
    KVChatMessageHistory("w", store=kv_store).add_messages(conversation)
    assert KVChatMessageHistory("w", store=kv_store, window=2).messages == conversation[-2:]
    # the newest 3 start on a tool result: widened back to the call that asked for it
    assert KVChatMessageHistory("w", store=kv_store, window=3).messages == conversation[1:]
    assert KVChatMessageHistory("w", store=kv_store, window=100).messages == conversation
    assert KVChatMessageHistory("w", store=kv_store, window=0).messages == []

    async def main() -> list[BaseMessage]:
        return await KVChatMessageHistory("w", store=kv_store, window=4).aget_messages()

    assert arun(kv_store, main) == conversation[1:]


def test_window_needs_a_built_in_store() -> None:
    with pytest.raises(UnsupportedOperationError, match="window=None"):
        KVChatMessageHistory("w", store=DictStore(), window=5)
    with pytest.raises(InvalidSessionError, match="window"):
        KVChatMessageHistory("w", store=MemorySessionStore(), window=-1)


# -- concurrency -------------------------------------------------------------------------


def _check_nothing_lost(messages: list[BaseMessage], writers: int, adds: int) -> None:
    assert len(messages) == writers * adds * 2
    texts = [m.content for m in messages]
    assert sorted(texts) == sorted(
        f"{kind} {w}.{i}" for w in range(writers) for i in range(adds) for kind in ("q", "a")
    )
    for w in range(writers):  # each writer's adds in its order, each add's pair together
        mine = [t for t in texts if t.split()[1].split(".")[0] == str(w)]
        assert mine == [f"{kind} {w}.{i}" for i in range(adds) for kind in ("q", "a")]
    for position in range(0, len(texts), 2):
        assert texts[position].startswith("q ")
        assert texts[position + 1] == "a " + texts[position][2:]


def test_concurrent_async_adds_lose_nothing(store: SessionStore) -> None:
    writers, adds = 8, 6

    async def writer(number: int) -> None:
        for i in range(adds):
            history = KVChatMessageHistory("busy", store=store)  # one per call, like LC
            await history.aadd_messages(
                [HumanMessage(f"q {number}.{i}"), AIMessage(f"a {number}.{i}")]
            )
            await asyncio.sleep(0)

    async def main() -> list[BaseMessage]:
        # the session does not exist yet: the first adds race to create it
        await asyncio.gather(*(writer(n) for n in range(writers)))
        return await KVChatMessageHistory("busy", store=store).aget_messages()

    _check_nothing_lost(arun(store, main), writers, adds)
    assert SessionManager(store).get_session("busy").message_count == writers * adds * 2  # type: ignore[union-attr]


def test_concurrent_threads_adds_lose_nothing(store: SessionStore) -> None:
    writers, adds = 4, 5
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(number: int) -> None:
        try:
            start.wait()
            for i in range(adds):
                KVChatMessageHistory("busy", store=store).add_messages(
                    [HumanMessage(f"q {number}.{i}"), AIMessage(f"a {number}.{i}")]
                )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    _check_nothing_lost(KVChatMessageHistory("busy", store=store).messages, writers, adds)


class SlowDictStore(DictStore):
    """A user's store whose loads and saves take ``delay`` seconds: a write that overlaps
    another's load-and-save would overwrite it."""

    delay = 0.002

    async def get(self, session_id: str) -> kvsessions.Session | None:
        await asyncio.sleep(self.delay)
        return await super().get(session_id)

    async def save(self, session: kvsessions.Session) -> None:
        await asyncio.sleep(self.delay)
        await super().save(session)


def test_a_users_store_loses_no_add_from_threads_and_loops_at_once() -> None:
    """Blocking adds from threads and asyncio adds from two event loops take turns."""
    store, adds = SlowDictStore(), 4
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def add(number: int, i: int) -> list[BaseMessage]:
        return [HumanMessage(f"q {number}.{i}"), AIMessage(f"a {number}.{i}")]

    def blocking_writer(number: int) -> None:
        start.wait()
        for i in range(adds):
            KVChatMessageHistory("busy", store=store).add_messages(add(number, i))

    async def task_writer(number: int) -> None:
        for i in range(adds):
            await KVChatMessageHistory("busy", store=store).aadd_messages(add(number, i))

    async def tasks(first: int) -> None:
        await asyncio.gather(task_writer(first), task_writer(first + 1))

    def loop_writer(first: int) -> None:
        start.wait()
        asyncio.run(tasks(first))

    def reported(target: Callable[[int], None], number: int) -> None:
        try:
            target(number)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    jobs = [(blocking_writer, 0), (blocking_writer, 1), (loop_writer, 2), (loop_writer, 4)]
    threads = [threading.Thread(target=reported, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    _check_nothing_lost(KVChatMessageHistory("busy", store=store).messages, 6, adds)


def test_a_users_store_add_waits_for_a_running_clear() -> None:
    store = SlowDictStore()
    history = KVChatMessageHistory("c", store=store)
    history.add_messages([HumanMessage("old")])

    async def main() -> None:
        clearing = asyncio.create_task(history.aclear())
        await asyncio.sleep(0)  # the clear is loading the session
        await history.aadd_messages([HumanMessage("new")])  # else it saves "old" again
        await clearing

    asyncio.run(main())
    assert history.messages == [HumanMessage("new")]  # the clear, then the add


def test_a_blocking_add_under_its_own_loops_add_is_refused_not_hung() -> None:
    store = SlowDictStore()
    store.delay = 0.05
    history = KVChatMessageHistory("c", store=store)

    async def main() -> None:
        adding = asyncio.create_task(history.aadd_messages([HumanMessage("a")]))
        await asyncio.sleep(0.01)  # the task holds the session's turn, waiting on the store
        with pytest.raises(UnsupportedOperationError, match="aadd_messages"):
            history.add_messages([HumanMessage("b")])  # would wait for that task forever
        await adding

    asyncio.run(main())
    assert history.messages == [HumanMessage("a")]


# -- the asyncio methods convert long lists off the loop -------------------------------


def test_async_methods_convert_long_lists_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread hop costs more than converting a few messages, so short lists stay."""
    threads: dict[str, set[int]] = {"from": set(), "to": set()}

    def spy(name: str, convert: Callable[..., Any]) -> Callable[..., Any]:
        def spied(*args: Any) -> Any:
            threads[name].add(threading.get_ident())
            return convert(*args)

        return spied

    adapter = "kvsessions.integrations.langchain"
    monkeypatch.setattr(f"{adapter}.from_langchain", spy("from", from_langchain))
    monkeypatch.setattr(f"{adapter}.to_langchain", spy("to", to_langchain))
    store = MemorySessionStore()
    short, long = [HumanMessage("q"), AIMessage("a")], [AIMessage(str(i)) for i in range(1000)]

    async def converted_in(call: Callable[[], Coroutine[Any, Any, Any]]) -> set[int]:
        threads["from"].clear()
        threads["to"].clear()
        await call()
        return threads["from"] | threads["to"]

    async def main() -> None:
        loop = {threading.get_ident()}
        assert (
            await converted_in(lambda: KVChatMessageHistory("s", store=store).aadd_messages(short))
            == loop
        )
        assert await converted_in(KVChatMessageHistory("s", store=store).aget_messages) == loop
        big = await converted_in(lambda: KVChatMessageHistory("l", store=store).aadd_messages(long))
        assert big and not big & loop
        big = await converted_in(KVChatMessageHistory("l", store=store).aget_messages)
        assert big and not big & loop

    asyncio.run(main())
    assert KVChatMessageHistory("l", store=store).messages == long


# -- what cannot be stored, and what was not stored by us ------------------------------


def test_refused_messages_write_nothing(store: SessionStore) -> None:
    history = KVChatMessageHistory("refused", store=store)
    bad = ToolMessage("done", tool_call_id="c1", artifact=b"\x89PNG")  # bytes: not JSON
    with pytest.raises(InvalidValueError, match=r"message 1 \(tool\).*artifact"):
        history.add_messages([HumanMessage("kept?"), bad])
    with pytest.raises(InvalidSessionError, match="BaseMessage"):
        history.add_messages([HumanMessage("kept?"), "a plain string"])  # type: ignore[list-item]
    assert history.messages == []
    assert SessionManager(store).get_session("refused") is None  # not even created


def test_bad_ids_and_stores_are_refused() -> None:
    store = MemorySessionStore()
    with pytest.raises(InvalidIdError):
        KVChatMessageHistory("", store=store)
    with pytest.raises(InvalidIdError):
        KVChatMessageHistory("ok", store=store, user_id="nul\x00")
    with pytest.raises(kvsessions.StoreConfigError, match="kvsessions store"):
        KVChatMessageHistory("ok", store={})  # type: ignore[arg-type]


def test_messages_written_by_plain_kvsessions_are_read_by_role(kv_store: SessionStore) -> None:
    manager = SessionManager(kv_store)
    session = manager.create_session("u", session_id="native")
    session.add_message("system", "be brief")
    session.add_message("user", "hi", channel="web")
    session.add_message("assistant", "hello", model="gpt-x")
    session.add_message("tool", "42", tool_call_id="call_9")
    session.add_message("critic", {"score": 3})
    manager.save(session)
    assert KVChatMessageHistory("native", store=kv_store).messages == [
        SystemMessage("be brief"),
        HumanMessage("hi", additional_kwargs={"channel": "web"}),
        AIMessage("hello", additional_kwargs={"model": "gpt-x"}),
        ToolMessage("42", tool_call_id="call_9"),
        ChatMessage(role="critic", content='{"score": 3}'),
    ]


def test_a_damaged_langchain_extra_is_a_typed_error(kv_store: SessionStore) -> None:
    manager = SessionManager(kv_store)
    session = manager.create_session("u", session_id="damaged")
    session.add_message("user", "hi", langchain={"type": "no-such-type", "data": {}})
    manager.save(session)
    with pytest.raises(CorruptRecordError, match="message 0 of session 'damaged'"):
        KVChatMessageHistory("damaged", store=kv_store).messages  # noqa: B018


# -- RunnableWithMessageHistory end to end ---------------------------------------------

_PROCESS = r"""
import json, sys
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import message_to_dict
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from kvsessions import LMDBSessionStore
from kvsessions.integrations.langchain import KVChatMessageHistory

path, session_id, question, answer = sys.argv[1:5]
store = LMDBSessionStore(path)
seen = []


def model_input(prompt):  # what the model is called with
    seen.extend(prompt.to_messages())
    return prompt


prompt = ChatPromptTemplate.from_messages(
    [("system", "You remember names."), MessagesPlaceholder("history"), ("human", "{question}")]
)
chain = prompt | RunnableLambda(model_input) | FakeListChatModel(responses=[answer])
with_history = RunnableWithMessageHistory(
    chain,
    lambda sid: KVChatMessageHistory(sid, store=store),
    input_messages_key="question",
    history_messages_key="history",
)
reply = with_history.invoke(
    {"question": question}, config={"configurable": {"session_id": session_id}}
)
print(json.dumps({"reply": message_to_dict(reply), "seen": [message_to_dict(m) for m in seen]}))
"""


def _run_process(path: Path, session_id: str, question: str, answer: str) -> dict[str, Any]:
    args = ["-c", _PROCESS, str(path), session_id, question, answer]
    return run_json(args, env={"PYTHONWARNINGS": "ignore"})


def test_runnable_with_message_history_across_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "chat.lmdb"
    first = _run_process(path, "conv-7", "Hi, I am Ada.", "Hello Ada!")
    assert [(m["type"], m["data"]["content"]) for m in first["seen"]] == [
        ("system", "You remember names."),
        ("human", "Hi, I am Ada."),
    ]
    second = _run_process(path, "conv-7", "What is my name?", "Your name is Ada.")
    # the second process's model call carries the first process's turn, exactly
    assert second["seen"] == [
        first["seen"][0],
        first["seen"][1],
        first["reply"],
        {"type": "human", "data": {**first["seen"][1]["data"], "content": "What is my name?"}},
    ]
    other = _run_process(path, "conv-8", "Who am I?", "No idea.")
    assert len(other["seen"]) == 2  # another session id: no history

    store = LMDBSessionStore(path)
    try:
        stored = KVChatMessageHistory("conv-7", store=store).messages
        assert [message_to_dict(m) for m in stored] == [
            first["seen"][1],
            first["reply"],
            second["seen"][3],
            second["reply"],
        ]
    finally:
        store.close()


@pytest.mark.parametrize("kind", KV_KINDS)
def test_runnable_with_message_history_ainvoke(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = _open(kind, tmp_path, request)
    _poison(monkeypatch, SessionManager)  # ainvoke must go through the asyncio methods
    seen: list[list[BaseMessage]] = []

    def model_input(messages: list[BaseMessage]) -> list[BaseMessage]:
        seen.append(list(messages))
        return messages

    model = FakeListChatModel(responses=["Hello Ada!", "Your name is Ada."])
    with_history = RunnableWithMessageHistory(
        RunnableLambda(model_input) | model,  # messages in, history prepended
        lambda session_id: KVChatMessageHistory(session_id, store=store),
    )
    config: Any = {"configurable": {"session_id": "conv-async"}}

    async def main() -> list[BaseMessage]:
        first = await with_history.ainvoke([HumanMessage("Hi, I am Ada.")], config=config)
        second = await with_history.ainvoke("What is my name?", config=config)
        assert (first.content, second.content) == ("Hello Ada!", "Your name is Ada.")
        return [first, second]

    try:
        first, second = arun(store, main)
        assert seen == [
            [HumanMessage("Hi, I am Ada.")],
            [HumanMessage("Hi, I am Ada."), first, HumanMessage("What is my name?")],
        ]
        monkeypatch.undo()
        assert KVChatMessageHistory("conv-async", store=store).messages == [
            HumanMessage("Hi, I am Ada."),
            first,
            HumanMessage("What is my name?"),
            second,
        ]
    finally:
        store.close()
