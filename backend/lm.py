"""The language model the learning loops talk to (prompt reflection, LLM judge).

Any OpenAI-compatible endpoint (`FASTSLOW_REFLECTION_LM_URL`), or by default the served base
model through the platform's own engine. Its answers are data to be checked, never trusted:
callers see the finish reason, so a truncated answer can be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from backend.config import Settings
from backend.engines import ChatMessage, Engine, EngineError, GenerationRequest, SamplingParams


@dataclass(frozen=True)
class Completion:
    text: str
    truncated: bool  # stopped by the token limit, not by the model


class LMError(Exception):
    """The LM could not answer (unreachable, refused); the caller treats it as no proposal."""


class TextLM(Protocol):
    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> Completion: ...


class EngineLM:
    """The served base model (no adapter), through the platform's engine."""

    def __init__(self, engine: Engine, *, temperature: float = 0.7, seed: int | None = 0) -> None:
        self.engine = engine
        self.temperature = temperature
        self.seed = seed

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> Completion:
        sampling = SamplingParams(
            max_tokens=max_tokens, temperature=self.temperature, seed=self.seed
        )
        try:
            generation = await self.engine.generate(GenerationRequest(messages, sampling))
        except EngineError as exc:
            raise LMError(str(exc)) from exc
        return Completion(generation.text, generation.finish_reason == "length")


class OpenAICompatibleLM:
    def __init__(
        self, base_url: str, model: str, *, api_key: str | None, timeout_s: float = 120.0
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s
        )

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> Completion:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        try:
            response = await self._client.post("/chat/completions", json=body)
            response.raise_for_status()
            choice = response.json()["choices"][0]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise LMError(f"reflection LM failed: {exc}") from exc
        return Completion(
            choice["message"].get("content") or "", choice.get("finish_reason") == "length"
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def reflection_lm(settings: Settings, engine: Engine) -> TextLM:
    if settings.reflection_lm_url:
        key = settings.reflection_lm_api_key
        return OpenAICompatibleLM(
            settings.reflection_lm_url,
            settings.reflection_lm_model,
            api_key=key.get_secret_value() if key else None,
        )
    return EngineLM(engine)
