"""The agent runtime: a small LangGraph graph that serves one chat turn.

    build_context -> generate -> record

`build_context` puts the live prompt version in front of the user's conversation: the
instructions as the system message and the demonstrations as real user/assistant turns.
`generate` calls the engine with the live adapter (streaming text through LangGraph's custom
stream when asked). `record` stores the rollout, so every answer is stored before the response
ends. The graph holds no tenant data between calls; state is per request. Tool calls will be
new nodes between `generate` and `record`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from backend.engines import (
    AdapterRef,
    ChatMessage,
    Engine,
    Generation,
    GenerationRequest,
    SamplingParams,
)


@dataclass(frozen=True)
class ServingContext:
    """Everything resolved before generation: who asks, which agent, which versions serve."""

    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    agent_slug: str
    api_key_id: uuid.UUID | None
    prompt_version_id: uuid.UUID | None
    prompt_version: int | None
    instructions: str
    demonstrations: list[ChatMessage]
    adapter_version_id: uuid.UUID | None
    adapter_version: int | None
    adapter: AdapterRef | None
    sampling: SamplingParams
    stream: bool = False
    # The prompt's tokens as counted before generation; charged for a turn cut short, whose
    # engine never reported its own count.
    prompt_tokens: int = 0
    completion_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Outcome:
    """What the turn produced, whether it finished or was cut short."""

    text: str
    finish_reason: str  # stop | length | cancelled | error
    prompt_tokens: int = 0
    completion_tokens: int = 0


# Stores the rollout of a turn; runs in a worker thread (it does blocking database I/O).
Recorder = Callable[[ServingContext, list[ChatMessage], Outcome], None]


class TurnState(TypedDict, total=False):
    serving: ServingContext
    messages: list[ChatMessage]
    engine_messages: list[ChatMessage]
    generation: Generation | None  # None: the consumer went away before the end
    # Set when the consumer of a stream goes away. Closing LangGraph's stream does not stop
    # a running node, so generation watches this to stop the engine at once.
    abandoned: asyncio.Event


def build_context(
    instructions: str, demonstrations: list[ChatMessage], messages: list[ChatMessage]
) -> list[ChatMessage]:
    """System text + demonstration turns + the conversation.

    A client's own system message is kept, appended to the agent's instructions, so that
    templates that allow one system message (most) still get exactly one, first.
    """
    conversation = list(messages)
    system = instructions
    if conversation and conversation[0]["role"] == "system":
        client_system = conversation.pop(0)["content"]
        system = f"{system}\n\n{client_system}" if system else client_system
    head: list[ChatMessage] = [{"role": "system", "content": system}] if system else []
    return [*head, *demonstrations, *conversation]


def outcome_of(generation: Generation) -> Outcome:
    return Outcome(
        generation.text,
        generation.finish_reason,
        generation.prompt_tokens,
        generation.completion_tokens,
    )


def build_agent_graph(engine: Engine, recorder: Recorder) -> Any:
    """Compile the turn graph once per process; it is safe to run concurrently."""

    def context_node(state: TurnState) -> dict[str, Any]:
        serving = state["serving"]
        return {
            "engine_messages": build_context(
                serving.instructions, serving.demonstrations, state["messages"]
            )
        }

    async def generate_node(state: TurnState) -> dict[str, Any]:
        serving = state["serving"]
        request = GenerationRequest(
            messages=state["engine_messages"], sampling=serving.sampling, adapter=serving.adapter
        )
        if not serving.stream:
            return {"generation": await engine.generate(request)}
        write = get_stream_writer()
        abandoned = state["abandoned"]
        final: Generation | None = None
        async with contextlib.aclosing(engine.stream(request)) as chunks:
            async for chunk in chunks:
                if abandoned.is_set():
                    return {"generation": None}  # closing the stream stops the engine
                if chunk.text:
                    write(chunk.text)
                if chunk.generation is not None:
                    final = chunk.generation
        assert final is not None, "an engine stream must end with the whole generation"
        return {"generation": final}

    def record_node(state: TurnState) -> dict[str, Any]:
        generation = state["generation"]
        if generation is not None:  # an abandoned turn is recorded by whoever abandoned it
            recorder(state["serving"], state["messages"], outcome_of(generation))
        return {}

    graph = StateGraph(TurnState)
    graph.add_node("build_context", context_node)
    graph.add_node("generate", generate_node)
    graph.add_node("record", record_node)
    graph.add_edge(START, "build_context")
    graph.add_edge("build_context", "generate")
    graph.add_edge("generate", "record")
    graph.add_edge("record", END)
    return graph.compile()


class InFlight:
    """How many turns of this process are using each adapter name right now, so an adapter
    that was swapped out is unloaded only after the requests still using it have finished."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    @contextlib.contextmanager
    def track(self, adapter: AdapterRef | None) -> Iterator[None]:
        if adapter is None:
            yield
            return
        self._counts[adapter.name] += 1
        try:
            yield
        finally:
            self._counts[adapter.name] -= 1
            if not self._counts[adapter.name]:
                del self._counts[adapter.name]

    def count(self, name: str) -> int:
        return self._counts[name]

    async def drained(self, name: str, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        # Polled: this runs only after a swap, and an Event per adapter name is not worth it.
        while self._counts[name] and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return not self._counts[name]


class AgentRuntime:
    """Runs turns through the graph; the one entry point of the serving path."""

    def __init__(self, engine: Engine, recorder: Recorder) -> None:
        self.engine = engine
        self.recorder = recorder
        self.in_flight = InFlight()
        self._graph = build_agent_graph(engine, recorder)

    async def run(self, serving: ServingContext, messages: list[ChatMessage]) -> Generation:
        with self.in_flight.track(serving.adapter):
            state = await self._graph.ainvoke({"serving": serving, "messages": messages})
        generation: Generation | None = state["generation"]
        assert generation is not None, "a non-streamed turn always completes"
        return generation

    async def stream(
        self, serving: ServingContext, messages: list[ChatMessage]
    ) -> AsyncGenerator[str | Generation, None]:
        """Yield text pieces, then the final Generation once the rollout is recorded."""
        abandoned = asyncio.Event()
        state_in: TurnState = {"serving": serving, "messages": messages, "abandoned": abandoned}
        final: dict[str, Any] = {}
        try:
            with self.in_flight.track(serving.adapter):
                async for mode, chunk in self._graph.astream(
                    state_in, stream_mode=["custom", "values"]
                ):
                    if mode == "custom":
                        yield str(chunk)
                    else:
                        final = chunk
        finally:
            abandoned.set()  # no-op once the turn is complete
        generation: Generation | None = final.get("generation")
        assert generation is not None, "a turn that was not abandoned has a generation"
        yield generation
