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
import shutil
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import fsspec

from backend.config import Settings
from backend.engines.lora import CONFIG_FILE, WEIGHTS_FILE, AdapterValidator

FILES = (CONFIG_FILE, WEIGHTS_FILE)


def adapter_validator(settings: Settings) -> AdapterValidator:
    """The adapter rules of this platform: its base model and its limits."""
    return AdapterValidator.for_base_model(
        settings.base_model_path, max_rank=settings.max_lora_rank, max_alpha=settings.max_lora_alpha
    )


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
