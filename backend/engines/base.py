"""The engine contract: what the platform needs from a model server.

Two implementations satisfy it: `local` (transformers + peft in-process, the embedded default)
and `vllm` (a vLLM OpenAI-compatible server with runtime LoRA loading). One contract test suite
(`tests/backend/engines/test_contract.py`) runs against both.

Adapters are addressed by an engine-side name that is unique per adapter *version* and never
reused, so no engine can serve a stale copy of an older version under a live name.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict, runtime_checkable


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter as the engine sees it: a unique name and a directory it can read."""

    name: str
    path: str


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[ChatMessage]
    sampling: SamplingParams
    adapter: AdapterRef | None = None


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class StreamChunk:
    """A piece of streamed text; the last chunk of a stream carries the whole `generation`."""

    text: str
    generation: Generation | None = field(default=None)


class EngineError(Exception):
    """The engine failed to serve a request (a bug or a bad adapter, not an outage)."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached or is not ready; the caller should retry later (503)."""


class AdapterLoadError(EngineError):
    """An adapter could not be loaded (missing files, wrong base model, bad rank...)."""


@runtime_checkable
class Engine(Protocol):
    """A model server for one base model.

    `generate` and `stream` load the request's adapter on first use if it is not resident, so
    a restarted engine recovers the live adapters by itself. Failures raise the errors above;
    nothing else escapes.
    """

    @property
    def base_model(self) -> str:
        """The served name of the base model."""
        ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamChunk, None]:
        """Yield text as it is produced; the last chunk has `generation` set.

        Closing the iterator early (the client went away) stops the generation.
        """
        ...

    async def load_adapter(self, adapter: AdapterRef) -> None:
        """Make `adapter` resident; loading a name that is already resident is a no-op."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Drop `name`; unloading a name that is not resident is a no-op."""
        ...

    async def list_adapters(self) -> list[str]: ...

    async def health(self) -> None:
        """Return if the engine can serve now, else raise `EngineUnavailable`."""
        ...

    async def aclose(self) -> None: ...
