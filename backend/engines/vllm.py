"""The `vllm` engine: a vLLM OpenAI-compatible server with runtime LoRA loading.

The server must run with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, and serve
the base model under `--served-model-name <base model name>`. Adapters are requested by their
engine name; an adapter the server does not know (it restarted, or another replica loaded it)
is loaded on first use, which is also how a restarted server gets the live adapters back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx

from backend.engines.base import (
    AdapterLoadError,
    AdapterRef,
    EngineError,
    EngineUnavailable,
    FinishReason,
    Generation,
    GenerationRequest,
    StreamChunk,
)
from backend.engines.lora import AdapterValidator
from backend.errors import Invalid

logger = logging.getLogger(__name__)


class _UnknownModel(Exception):
    """The server does not know the requested adapter name (yet)."""


class VllmEngine:
    def __init__(
        self,
        base_url: str,
        served_name: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        adapter_validator: AdapterValidator | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._name = served_name
        # vLLM reads the adapter's files itself: they are checked here before it is told the
        # path. None only where the platform cannot see the base model (then vLLM's own checks).
        self._validator = adapter_validator
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    @property
    def base_model(self) -> str:
        return self._name

    # -- adapters -------------------------------------------------------------------------

    async def load_adapter(self, adapter: AdapterRef) -> None:
        if self._validator is not None:
            try:
                await asyncio.to_thread(self._validator.validate, Path(adapter.path))
            except Invalid as exc:
                raise AdapterLoadError(f"adapter {adapter.name} refused: {exc.message}") from exc
        response = await self._post(
            "/v1/load_lora_adapter", {"lora_name": adapter.name, "lora_path": adapter.path}
        )
        if response.status_code == 200:
            logger.info("vLLM loaded adapter %s from %s", adapter.name, adapter.path)
            return
        detail = _error_message(response)
        if "already" in detail.lower() and "loaded" in detail.lower():
            return
        raise AdapterLoadError(f"vLLM refused adapter {adapter.name}: {detail}")

    async def unload_adapter(self, name: str) -> None:
        response = await self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code in (200, 404):
            return
        detail = _error_message(response)
        if "not" in detail.lower() and ("found" in detail.lower() or "exist" in detail.lower()):
            return
        raise EngineError(f"vLLM could not unload adapter {name}: {detail}")

    async def list_adapters(self) -> list[str]:
        response = await self._request("GET", "/v1/models")
        if response.status_code != 200:
            raise EngineError(f"vLLM /v1/models: {_error_message(response)}")
        return [m["id"] for m in response.json()["data"] if m.get("parent")]

    # -- generation -----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        body = self._body(request, stream=False)
        response = await self._post_with_adapter(request, "/v1/chat/completions", body)
        data = response.json()
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Generation(
            text=choice["message"].get("content") or "",
            finish_reason=_finish(choice.get("finish_reason")),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamChunk, None]:
        body = self._body(request, stream=True)
        for attempt in (1, 2):
            try:
                # aclosing: a consumer that stops early closes the HTTP stream at once, which
                # makes vLLM abort the request.
                async with contextlib.aclosing(self._stream_once(body)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            except _UnknownModel:
                if attempt == 2 or request.adapter is None:
                    raise EngineError(f"vLLM does not serve {body['model']}") from None
                await self.load_adapter(request.adapter)

    async def _stream_once(self, body: dict[str, Any]) -> AsyncGenerator[StreamChunk, None]:
        text: list[str] = []
        finish: FinishReason = "stop"
        usage: dict[str, Any] = {}
        try:
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._raise_for(response, body["model"])
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if piece:
                            text.append(piece)
                            yield StreamChunk(piece)
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"vLLM unreachable: {exc}") from exc
        yield StreamChunk(
            "",
            generation=Generation(
                text="".join(text),
                finish_reason=finish,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
            ),
        )

    def _body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": request.adapter.name if request.adapter else self._name,
            "messages": list(request.messages),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": stream,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def _post_with_adapter(
        self, request: GenerationRequest, path: str, body: dict[str, Any]
    ) -> httpx.Response:
        for attempt in (1, 2):
            response = await self._post(path, body)
            try:
                self._raise_for(response, body["model"])
                return response
            except _UnknownModel:
                if attempt == 2 or request.adapter is None:
                    raise EngineError(f"vLLM does not serve {body['model']}") from None
                await self.load_adapter(request.adapter)
        raise AssertionError("unreachable")

    def _raise_for(self, response: httpx.Response, model: str) -> None:
        if response.status_code == 200:
            return
        detail = _error_message(response)
        if response.status_code == 404 and model in detail:
            raise _UnknownModel(model)
        if response.status_code in (502, 503, 504):
            raise EngineUnavailable(f"vLLM not ready ({response.status_code}): {detail}")
        raise EngineError(f"vLLM error {response.status_code}: {detail}")

    # -- plumbing -------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self._request("POST", path, json=body)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"vLLM unreachable at {self._client.base_url}: {exc}") from exc

    async def health(self) -> None:
        response = await self._request("GET", "/health")
        if response.status_code != 200:
            raise EngineUnavailable(f"vLLM /health answered {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _finish(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "message" in data:
            return str(data["message"])
        if "detail" in data:
            return str(data["detail"])
    return response.text[:500]
