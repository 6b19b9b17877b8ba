"""Adapters are data, never configuration.

A tenant's adapter directory is untrusted: peft and vLLM read `adapter_config.json` as options
(regexes they run, initialisations that rewrite base weights, extra modules to replace) and load
every tensor of `adapter_model.safetensors` into the model with `strict=False`, so one tenant's
file could change the base model every tenant shares, or hang the engine. Here an adapter is
accepted only as what it should be: LoRA A/B matrices for the base model's known projections,
with shapes that match the base model and finite values, and a config rebuilt from an allowlist.

`AdapterValidator.sanitize` runs at registration (uploads and the trainer's adapters alike) and
replaces the stored config with the rebuilt one; `AdapterValidator.validate` runs again wherever
an engine or the trainer loads an adapter, so nothing stored before these rules is obeyed either.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.config import Settings
from backend.errors import Invalid

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MAX_CONFIG_BYTES = 64 * 1024
FLOAT_DTYPES = frozenset({"F32", "F16", "BF16"})

# Llama-style decoders (Llama, Mistral, Qwen2/3, SmolLM2): projection -> its parent module.
_PROJECTIONS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_LLAMA_STYLE = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_TENSOR = re.compile(
    r"base_model\.model\.model\.layers\.(?P<layer>0|[1-9]\d{0,4})\."
    r"(?P<parent>self_attn|mlp)\.(?P<module>[a-z_]+)\.lora_(?P<side>[AB])\.weight"
)
# Keys that describe the file rather than configure the model: read by nobody we serve with.
_METADATA = frozenset(
    {
        "base_model_name_or_path",
        "revision",
        "peft_version",
        "auto_mapping",
        "inference_mode",
        "megatron_core",
        "qalora_group_size",
    }
)
# Keys we read (and rebuild); every other key must hold an inert value (unset, false, empty).
_READ = frozenset(
    {
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "bias",
        "use_rslora",
        "init_lora_weights",
        "fan_in_fan_out",
    }
)


@dataclass(frozen=True)
class LoraTargets:
    """What a LoRA may adapt in one base model: its layers and, per projection, the
    (in_features, out_features) of the linear layer."""

    model_name: str
    num_layers: int
    shapes: dict[str, tuple[int, int]]

    @classmethod
    def from_checkpoint(cls, model_dir: Path) -> LoraTargets:
        return _targets(model_dir.resolve())


@lru_cache
def _targets(model_dir: Path) -> LoraTargets:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise Invalid(f"the base model's config.json cannot be read: {exc}") from exc
    if config.get("model_type") not in _LLAMA_STYLE:
        raise Invalid(
            f"adapters are supported for Llama-style base models, not {config.get('model_type')!r}"
        )
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config["intermediate_size"])
    shapes = {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    return LoraTargets(model_dir.name, int(config["num_hidden_layers"]), shapes)


def _inert(value: Any) -> bool:
    return value is None or value is False or value in ({}, [], "")


@dataclass(frozen=True)
class AdapterValidator:
    """The rules one base model and the platform's limits set for adapters. The base model's
    config is read on first use (and once per process)."""

    model_dir: Path
    max_rank: int
    max_alpha: float

    @classmethod
    def for_base_model(
        cls, model_dir: Path, *, max_rank: int | None = None, max_alpha: float | None = None
    ) -> AdapterValidator:
        """The rules for `model_dir`'s base model (limits: the settings' defaults unless given)."""
        fields = Settings.model_fields
        return cls(
            model_dir,
            fields["max_lora_rank"].default if max_rank is None else max_rank,
            fields["max_lora_alpha"].default if max_alpha is None else max_alpha,
        )

    @property
    def targets(self) -> LoraTargets:
        return LoraTargets.from_checkpoint(self.model_dir)

    def validate(self, directory: Path) -> dict[str, Any]:
        """Check the adapter in `directory`; return its rebuilt config. Invalid names the
        first offending key or tensor."""
        config = self._config(directory)
        self._weights(directory, rank=config["r"], modules=config["target_modules"])
        return config

    def sanitize(self, directory: Path) -> dict[str, Any]:
        """Validate, then replace the directory's config with the rebuilt one, so the file an
        engine reads holds nothing but what was checked."""
        config = self.validate(directory)
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        return config

    # -- the config -----------------------------------------------------------------------

    def _config(self, directory: Path) -> dict[str, Any]:
        path = directory / CONFIG_FILE
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise Invalid(f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise Invalid(f"{CONFIG_FILE} is not readable JSON: {exc}", param="config") from exc
        if not isinstance(raw, dict):
            raise Invalid(f"{CONFIG_FILE} must be a JSON object", param="config")
        for key, value in raw.items():
            if key not in _READ and key not in _METADATA and not _inert(value):
                raise Invalid(
                    f"{CONFIG_FILE}: option {key!r} is not accepted (only plain LoRA on the "
                    "base model's projections is served)",
                    param=key,
                )
        if raw.get("peft_type") != "LORA":
            raise Invalid(f"{CONFIG_FILE} must describe a LoRA adapter (peft_type LORA)")
        if raw.get("task_type") not in (None, "CAUSAL_LM"):
            raise Invalid(f"{CONFIG_FILE}: task_type must be CAUSAL_LM", param="task_type")
        rank = raw.get("r")
        if type(rank) is not int or not 0 < rank <= self.max_rank:
            raise Invalid(f"LoRA rank must be an integer in 1..{self.max_rank}, got {rank!r}")
        alpha = raw.get("lora_alpha", 8)
        if not _number(alpha) or not 0 < alpha <= self.max_alpha:
            raise Invalid(
                f"lora_alpha must be a number in (0, {self.max_alpha}], got {alpha!r}",
                param="lora_alpha",
            )
        dropout = raw.get("lora_dropout", 0.0)
        if not _number(dropout) or not 0 <= dropout < 1:
            raise Invalid(f"lora_dropout must be in [0, 1), got {dropout!r}", param="lora_dropout")
        if raw.get("bias", "none") != "none":
            # "all"/"lora_only" would load bias tensors into the shared base layers.
            raise Invalid(f"{CONFIG_FILE}: bias must be 'none'", param="bias")
        for flag in ("use_rslora", "fan_in_fan_out"):
            if not isinstance(raw.get(flag, False), bool):
                raise Invalid(f"{CONFIG_FILE}: {flag} must be true or false", param=flag)
        if raw.get("fan_in_fan_out", False):
            raise Invalid(
                f"{CONFIG_FILE}: fan_in_fan_out is for GPT-2 style layers", param="fan_in_fan_out"
            )
        if not isinstance(raw.get("init_lora_weights", True), bool):
            # "pissa", "olora", "loftq", ... initialise by rewriting the base model's weights.
            raise Invalid(
                f"{CONFIG_FILE}: init_lora_weights must be true or false",
                param="init_lora_weights",
            )
        return {
            "peft_type": "LORA",
            "task_type": raw.get("task_type"),
            "r": rank,
            "lora_alpha": alpha,
            "lora_dropout": float(dropout),
            "target_modules": self._modules(raw.get("target_modules")),
            "bias": "none",
            "use_rslora": raw.get("use_rslora", False),
            # Every tensor is present (checked below), so initialisation never runs for real.
            "init_lora_weights": True,
            "fan_in_fan_out": False,
            "inference_mode": True,
            "base_model_name_or_path": self.targets.model_name,
        }

    def _modules(self, value: Any) -> list[str]:
        known = self.targets.shapes
        if value == "all-linear":
            return sorted(known)
        # A string is a regex to peft (re.fullmatch on every module name): never accepted.
        if not isinstance(value, list) or not value or len(value) > len(known):
            raise Invalid(
                f"{CONFIG_FILE}: target_modules must be a list of projection names "
                f"({', '.join(sorted(known))})",
                param="target_modules",
            )
        for name in value:
            if name not in known:
                raise Invalid(
                    f"{CONFIG_FILE}: target module {name!r} is not one of the base model's "
                    f"projections ({', '.join(sorted(known))})",
                    param="target_modules",
                )
        return sorted(set(value))

    # -- the weights ----------------------------------------------------------------------

    def _weights(self, directory: Path, *, rank: int, modules: list[str]) -> None:
        from safetensors import safe_open

        expected = {
            f"base_model.model.model.layers.{layer}.{_PROJECTIONS[m]}.{m}.lora_{side}.weight"
            for layer in range(self.targets.num_layers)
            for m in modules
            for side in "AB"
        }
        try:
            with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as weights:
                names = list(weights.keys())
                for name in names:
                    if name not in expected:
                        raise Invalid(_why_not(name, modules), param=name)
                    self._tensor(name, weights, rank=rank)
        except Invalid:
            raise
        except Exception as exc:
            raise Invalid(
                f"{WEIGHTS_FILE} is not a safetensors file: {exc}", param="weights"
            ) from exc
        missing = sorted(expected - set(names))
        if missing:
            raise Invalid(
                f"{WEIGHTS_FILE} lacks {len(missing)} LoRA tensors of its target modules, "
                f"e.g. {missing[0]}",
                param="weights",
            )

    def _tensor(self, name: str, weights: Any, *, rank: int) -> None:
        import torch

        match = _TENSOR.fullmatch(name)
        assert match is not None  # every expected name has this form
        fan_in, fan_out = self.targets.shapes[match["module"]]
        want = (rank, fan_in) if match["side"] == "A" else (fan_out, rank)
        sliced = weights.get_slice(name)
        shape = tuple(sliced.get_shape())
        if sliced.get_dtype() not in FLOAT_DTYPES:
            raise Invalid(f"{name} has dtype {sliced.get_dtype()}, not a float", param=name)
        if shape != want:
            raise Invalid(f"{name} has shape {list(shape)}, expected {list(want)}", param=name)
        if not bool(torch.isfinite(weights.get_tensor(name)).all()):
            raise Invalid(f"{name} holds non-finite values (NaN or infinity)", param=name)


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _why_not(name: str, modules: list[str]) -> str:
    match = _TENSOR.fullmatch(name)
    if match is None:
        return f"{WEIGHTS_FILE}: tensor {name!r} is not a LoRA A/B matrix of a projection"
    if match["module"] not in modules:
        return f"{WEIGHTS_FILE}: tensor {name!r} is for a module outside target_modules"
    return f"{WEIGHTS_FILE}: tensor {name!r} does not belong to the base model"
