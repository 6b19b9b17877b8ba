"""Checks shared by the deployment tests: settings and commands named in deployment files
must be real."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from typer.testing import CliRunner

from backend.cli import app as cli
from backend.config import Settings
from backend.jobs.contract import QUEUES

SETTINGS = {f"FASTSLOW_{name.upper()}" for name in Settings.model_fields}


def unknown_settings(names: Iterable[str]) -> list[str]:
    """The FASTSLOW_* names that are no setting (a typo would be silently ignored)."""
    return sorted(n for n in names if n.startswith("FASTSLOW_") and n not in SETTINGS)


def check_fastslow_command(argv: list[str]) -> None:
    """`argv` (`fastslow ...`) names a real command with real options and queues."""
    assert argv[0] == "fastslow", argv
    args = [a for part in argv[1:] for a in (shlex.split(part) if " " in part else [part])]
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, f"{argv}: {result.output}"
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--queues=") else None
        if arg == "--queues":
            value = args[i + 1]
        if value is not None:
            assert set(value.split(",")) <= set(QUEUES), f"unknown queue in {argv}"


def env_names(text: str) -> set[str]:
    return set(re.findall(r"\bFASTSLOW_[A-Z0-9_]+\b", text))
