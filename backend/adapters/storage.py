"""Where adapter versions live: one directory per version, written once, never changed.

- `LocalAdapterStore` (default): `<data_dir>/adapters/<tenant>/<agent>/<version>/`. On several
  machines, make that a shared file system mounted at the same path everywhere (API, workers,
  vLLM).
- `FsspecAdapterStore` (`FASTSLOW_ADAPTER_STORE_URL`, e.g. `s3://bucket/adapters` with `s3fs`
  installed): the store of record is any fsspec URL; each process materialises a version into
  `FASTSLOW_ADAPTER_CACHE_DIR` before an engine loads it. A vLLM server on another host must see
  that cache directory (a shared mount).

Engines always get a local directory (`local_dir`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import fsspec
from safetensors import safe_open

from backend.config import Settings
from backend.errors import Invalid

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FILES = (CONFIG_FILE, WEIGHTS_FILE)


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


class AdapterStore(Protocol):
    """Stores adapter versions. A location (what `AdapterVersion.path` records) is opaque
    outside the store; `local_dir` turns it into a directory an engine can read."""

    def staging_dir(self) -> Path:
        """A fresh local directory to fill with the adapter's files before `commit`."""
        ...

    def commit(
        self, staging: Path, *, tenant_id: uuid.UUID, agent_id: uuid.UUID, version_id: uuid.UUID
    ) -> str:
        """Store a filled staging directory for good; returns its location. The staging
        directory is consumed either way."""
        ...

    def discard(self, location: str) -> None: ...

    def local_dir(self, location: str) -> Path: ...


class LocalAdapterStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def staging_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        # Same file system as the target, so commit is an atomic rename.
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def commit(
        self, staging: Path, *, tenant_id: uuid.UUID, agent_id: uuid.UUID, version_id: uuid.UUID
    ) -> str:
        target = self.root / tenant_id.hex / agent_id.hex / version_id.hex
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        return str(target)

    def discard(self, location: str) -> None:
        shutil.rmtree(location, ignore_errors=True)

    def local_dir(self, location: str) -> Path:
        return Path(location)


class FsspecAdapterStore:
    def __init__(self, url: str, cache_dir: Path) -> None:
        self.url = url.rstrip("/")
        self.cache_dir = cache_dir
        self.fs, self.base = fsspec.core.url_to_fs(self.url)

    def staging_dir(self) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.cache_dir))

    def commit(
        self, staging: Path, *, tenant_id: uuid.UUID, agent_id: uuid.UUID, version_id: uuid.UUID
    ) -> str:
        key = f"{tenant_id.hex}/{agent_id.hex}/{version_id.hex}"
        try:
            self.fs.makedirs(f"{self.base}/{key}", exist_ok=True)  # object stores: a no-op
            for name in FILES:
                self.fs.put_file(str(staging / name), f"{self.base}/{key}/{name}")
        except Exception:
            with contextlib.suppress(Exception):
                self.fs.rm(f"{self.base}/{key}", recursive=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return f"{self.url}/{key}"

    def discard(self, location: str) -> None:
        fs, path = fsspec.core.url_to_fs(location)
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def local_dir(self, location: str) -> Path:
        key = location.removeprefix(self.url).strip("/")
        target = self.cache_dir / key
        if all((target / name).exists() for name in FILES):
            return target
        fs, path = fsspec.core.url_to_fs(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        download = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            for name in FILES:
                fs.get_file(f"{path}/{name}", str(download / name))
            # Another process may have materialised it meanwhile; either copy is the same.
            if not target.exists():
                download.rename(target)
        finally:
            shutil.rmtree(download, ignore_errors=True)
        return target


def adapter_store(settings: Settings) -> AdapterStore:
    """The store the settings name (one instance per configuration)."""
    return _store(settings.adapter_store_url, settings.adapters_dir, settings.adapter_cache_path)


@lru_cache
def _store(url: str, adapters_dir: Path, cache_dir: Path) -> AdapterStore:
    if not url:
        return LocalAdapterStore(adapters_dir)
    return FsspecAdapterStore(url, cache_dir)
