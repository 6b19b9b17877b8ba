"""Prometheus metrics of a process that forks or spawns workers (`fastslow api --workers N`,
`fastslow worker`): each child writes its samples to files in one directory, and a scrape adds
them up (prometheus_client's multiprocess mode).

This module must not import prometheus_client: the directory has to be set before the first
import, which fixes how every metric of the process stores its values.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess_metrics(prefix: str) -> str:
    """Point this process and its future children at a fresh, empty samples directory."""
    if ENV in os.environ:  # an operator's own choice (e.g. a mounted tmpfs) wins
        return os.environ[ENV]
    path = tempfile.mkdtemp(prefix=f"fastslow-{prefix}-metrics-")
    os.environ[ENV] = path
    parent = os.getpid()

    def remove() -> None:
        if os.getpid() == parent:  # forked children may run atexit handlers too
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(ENV))
