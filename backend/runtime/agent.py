"""The agent runtime: a small LangGraph graph that serves one chat turn, and the one place
that records the turn's rollout.

    build_context -> generate        (then AgentRuntime records the outcome)

`build_context` puts the live prompt version in front of the user's conversation
(`backend.prompts.context.Context`). `generate` calls the engine with the live adapter
(streaming text through LangGraph's custom stream when asked). `AgentRuntime` stores the
rollout however the turn ended (complete, engine failure mid-stream, client gone), so every
answer is stored before the response ends. The graph holds no tenant data between calls; state
is per request. Tool calls will be new nodes after `generate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import anyio
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from backend.adapters.in_flight import InFlight
from backend.engines import (
    AdapterRef,
    ChatMessage,
    Engine,
    EngineError,
    Generation,
    GenerationRequest,
    SamplingParams,
)
from backend.prompts.context import Context

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingContext:
    """Everything resolved before generation: who asks, which agent, which versions serve."""

    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    agent_slug: str
    api_key_id: uuid.UUID | None
    prompt_version_id: uuid.UUID | None
    context: Context  # the live prompt version's instructions and demonstrations
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

    @property
    def prompt_version(self) -> int | None:
        return self.context.prompt_version


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


def outcome_of(generation: Generation) -> Outcome:
    return Outcome(
        generation.text,
        generation.finish_reason,
        generation.prompt_tokens,
        generation.completion_tokens,
    )


def build_agent_graph(engine: Engine) -> Any:
    """Compile the turn graph once per process; it is safe to run concurrently."""

    def context_node(state: TurnState) -> dict[str, Any]:
        return {"engine_messages": state["serving"].context.messages(state["messages"])}

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

    graph = StateGraph(TurnState)
    graph.add_node("build_context", context_node)
    graph.add_node("generate", generate_node)
    graph.add_edge(START, "build_context")
    graph.add_edge("build_context", "generate")
    graph.add_edge("generate", END)
    return graph.compile()


class AgentRuntime:
    """Runs turns through the graph; the one entry point of the serving path, and the one
    place a turn's rollout is recorded, however the turn ends: complete, cut short by the
    engine, or abandoned by its client."""

    def __init__(self, engine: Engine, recorder: Recorder) -> None:
        self.engine = engine
        self.recorder = recorder
        self.in_flight = InFlight()
        self._graph = build_agent_graph(engine)

    async def run(self, serving: ServingContext, messages: list[ChatMessage]) -> Generation:
        """The whole answer, recorded before it is returned (an engine error records nothing:
        there is no answer)."""
        with self.in_flight.track(serving.adapter):
            state = await self._graph.ainvoke({"serving": serving, "messages": messages})
        generation: Generation | None = state["generation"]
        assert generation is not None, "a non-streamed turn always completes"
        await self._record(serving, messages, outcome_of(generation))
        return generation

    async def stream(
        self, serving: ServingContext, messages: list[ChatMessage]
    ) -> AsyncGenerator[str | Generation, None]:
        """Yield text pieces, then the final Generation once the rollout is recorded. A turn
        that ends early (the engine failed, or the consumer closed this generator) is recorded
        with the text produced so far, if there was any."""
        abandoned = asyncio.Event()
        state_in: TurnState = {"serving": serving, "messages": messages, "abandoned": abandoned}
        pieces: list[str] = []
        generation: Generation | None = None
        cut_short = "cancelled"
        try:
            final: dict[str, Any] = {}
            with self.in_flight.track(serving.adapter):
                async for mode, chunk in self._graph.astream(
                    state_in, stream_mode=["custom", "values"]
                ):
                    if mode == "custom":
                        pieces.append(str(chunk))
                        yield str(chunk)
                    else:
                        final = chunk
            generation = final.get("generation")
            assert generation is not None, "a turn that was not abandoned has a generation"
        except EngineError:
            cut_short = "error"
            raise
        finally:
            abandoned.set()  # no-op once the turn is complete
            if generation is None and pieces:
                # Each piece took at least one token: a lower bound, charged to the quota.
                partial = Outcome(
                    "".join(pieces),
                    cut_short,
                    prompt_tokens=serving.prompt_tokens,
                    completion_tokens=len(pieces),
                )
                with anyio.CancelScope(shield=True):
                    try:
                        await self._record(serving, messages, partial)
                    except Exception:  # nobody is left to tell: the client is gone
                        logger.exception("partial rollout %s not stored", serving.completion_id)
        assert generation is not None
        await self._record(serving, messages, outcome_of(generation))
        yield generation

    async def _record(
        self, serving: ServingContext, messages: list[ChatMessage], outcome: Outcome
    ) -> None:
        await asyncio.to_thread(self.recorder, serving, messages, outcome)
