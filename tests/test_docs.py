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


def test_the_ui_client_is_generated_from_the_current_schema() -> None:
    """The UI's typed client comes from frontend/src/api/openapi.json; it must be the API's."""
    import json

    from backend.app import create_app
    from backend.config import Settings

    committed = json.loads((REPO / "frontend" / "src" / "api" / "openapi.json").read_text())
    current = json.loads(json.dumps(create_app(Settings()).openapi(), sort_keys=True))
    assert committed == current, "run `make frontend` to regenerate the UI's API client"
