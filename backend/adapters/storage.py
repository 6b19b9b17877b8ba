"""Where adapter versions live: one directory per version, written once, never changed.

`LocalAdapterStore` keeps them under the data dir; a directory shared by every engine replica
(NFS, a mounted bucket) makes it work across machines.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from safetensors import safe_open

from backend.errors import Invalid

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def validate_adapter_dir(directory: Path, *, max_rank: int) -> dict[str, Any]:
    """Check that `directory` holds a peft LoRA adapter we can serve; return its config."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise Invalid(f"{CONFIG_FILE} is not readable JSON: {exc}", param="config") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise Invalid(f"{CONFIG_FILE} must describe a LoRA adapter (peft_type LORA)")
    rank = config.get("r")
    if not isinstance(rank, int) or not 0 < rank <= max_rank:
        raise Invalid(f"LoRA rank must be an integer in 1..{max_rank}, got {rank!r}")
    if not config.get("target_modules"):
        raise Invalid(f"{CONFIG_FILE} names no target_modules")
    try:
        with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as weights:
            shapes = {name: weights.get_slice(name).get_shape() for name in weights.keys()}  # noqa: SIM118
    except Exception as exc:
        raise Invalid(f"{WEIGHTS_FILE} is not a safetensors file: {exc}", param="weights") from exc
    if not any("lora_A" in n for n in shapes) or not any("lora_B" in n for n in shapes):
        raise Invalid(f"{WEIGHTS_FILE} holds no lora_A/lora_B tensors")
    # Engines do not all check this: vLLM serves a rank-mismatched adapter, silently wrong.
    # (With a per-module `rank_pattern`, ranks legitimately differ; peft checks those.)
    if not config.get("rank_pattern"):
        for name, shape in shapes.items():
            found = shape[0] if "lora_A" in name else shape[-1] if "lora_B" in name else rank
            if found != rank:
                raise Invalid(f"{name} has rank {found}, but adapter_config.json says r={rank}")
    return config


class LocalAdapterStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def staging_dir(self) -> Path:
        """A fresh directory on the same file system, to fill before `commit`."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def commit(
        self, staging: Path, *, tenant_id: uuid.UUID, agent_id: uuid.UUID, version_id: uuid.UUID
    ) -> Path:
        """Move a filled staging directory to its final place (atomic on one file system)."""
        target = self.root / tenant_id.hex / agent_id.hex / version_id.hex
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        return target

    @staticmethod
    def discard(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
