"""The docs name every setting, and the README's commands exist."""

from __future__ import annotations

from backend.config import Settings
from tests.support import REPO


def test_every_setting_is_documented() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"`FASTSLOW_{n.upper()}`" not in text]
    assert missing == [], f"document these settings in docs/configuration.md: {missing}"


def test_readme_commands_are_real() -> None:
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for target in ("up", "test"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
