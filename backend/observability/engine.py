"""An engine that counts its failures: the serving path's engine, wrapped once per process."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from backend.engines import (
    AdapterLoadError,
    AdapterRef,
    Engine,
    EngineError,
    EngineUnavailable,
    Generation,
    GenerationRequest,
    StreamChunk,
)
from backend.observability.metrics import ENGINE_ERRORS

T = TypeVar("T")


def _error_label(exc: EngineError) -> str:
    if isinstance(exc, EngineUnavailable):
        return "unavailable"
    if isinstance(exc, AdapterLoadError):
        return "adapter_load"
    return "failed"


@asynccontextmanager
async def _counted(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except EngineError as exc:
        ENGINE_ERRORS.labels(operation, _error_label(exc)).inc()
        raise


class InstrumentedEngine:
    """Delegates every call to `inner` and counts the `EngineError`s it raises."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def base_model(self) -> str:
        return self.inner.base_model

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        async with _counted(operation):
            return await call

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._call("generate", self.inner.generate(request))

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamChunk, None]:
        chunks = self.inner.stream(request)
        try:
            async with _counted("stream"):
                async for chunk in chunks:
                    yield chunk
        finally:
            await chunks.aclose()  # stops the engine when the consumer goes away

    async def load_adapter(self, adapter: AdapterRef) -> None:
        await self._call("load_adapter", self.inner.load_adapter(adapter))

    async def unload_adapter(self, name: str) -> None:
        await self._call("unload_adapter", self.inner.unload_adapter(name))

    async def list_adapters(self) -> list[str]:
        return await self._call("list_adapters", self.inner.list_adapters())

    async def health(self) -> None:
        await self._call("health", self.inner.health())

    async def aclose(self) -> None:
        await self.inner.aclose()
