"""Model servers behind one interface; `build_engine` picks the one the settings name."""

from __future__ import annotations

from backend.config import Settings
from backend.engines.base import (
    AdapterLoadError,
    AdapterRef,
    ChatMessage,
    Engine,
    EngineError,
    EngineUnavailable,
    Generation,
    GenerationRequest,
    SamplingParams,
    StreamChunk,
)

__all__ = [
    "AdapterLoadError",
    "AdapterRef",
    "ChatMessage",
    "Engine",
    "EngineError",
    "EngineUnavailable",
    "Generation",
    "GenerationRequest",
    "SamplingParams",
    "StreamChunk",
    "build_engine",
]


def build_engine(settings: Settings) -> Engine:
    """The engine of this process. The local one loads the model: call it once per process."""
    from backend.engines.lora import AdapterValidator

    validator = AdapterValidator.for_base_model(
        settings.base_model_path,
        max_rank=settings.max_lora_rank,
        max_alpha=settings.max_lora_alpha,
    )
    if settings.engine == "vllm":
        from backend.engines.vllm import VllmEngine

        key = settings.engine_api_key.get_secret_value() if settings.engine_api_key else None
        return VllmEngine(
            settings.engine_url,
            settings.base_model_name,
            api_key=key,
            timeout_s=settings.engine_timeout_s,
            adapter_validator=validator,
        )
    from backend.engines.local import LocalEngine

    return LocalEngine(
        settings.base_model_path,
        settings.base_model_name,
        max_adapters=settings.local_engine_max_adapters,
        max_batch=settings.local_engine_max_batch,
        threads=settings.local_engine_threads,
        device=settings.torch_device,
        adapter_validator=validator,
    )
