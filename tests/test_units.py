"""Narrow unit tests of pure pieces: settings, reward checks, stop handling, context building."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.config import Settings
from backend.engines.local import StopTrimmer
from backend.prompts.context import Context
from backend.scoring.checks import score_checks
from backend.scoring.spec import RewardSpec


def test_embedded_defaults_need_no_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FASTSLOW_DATABASE_URL", "FASTSLOW_BROKER_URL", "FASTSLOW_BASE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'fastslow.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert settings.engine == "local"
    assert settings.base_model_path == tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert settings.base_model_name == "SmolLM2-135M-Instruct"


def test_production_refuses_to_start_without_a_platform_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PLATFORM_KEY"):
        Settings(data_dir=tmp_path, environment="production", platform_key=None)
    Settings(data_dir=tmp_path, environment="production", platform_key="s3cret")


def test_settings_read_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSLOW_ENGINE", "vllm")
    monkeypatch.setenv("FASTSLOW_ENGINE_URL", "http://vllm:8000")
    monkeypatch.setenv("FASTSLOW_BASE_MODEL", str(tmp_path / "my-model"))
    settings = Settings(data_dir=tmp_path)
    assert settings.engine == "vllm"
    assert settings.engine_url == "http://vllm:8000"
    assert settings.base_model_name == "my-model"
    monkeypatch.setenv("FASTSLOW_ENGINE", "tgi")
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path)


def spec(*checks: dict[str, object]) -> RewardSpec:
    return RewardSpec.model_validate({"checks": list(checks)})


def test_checks_score_and_explain() -> None:
    rules = spec(
        {"type": "starts_with", "text": "Certainly:"},
        {"type": "max_words", "limit": 5, "weight": 3},
        {"type": "repeats_entity", "pattern": r"#\d{5}"},
    )
    good = score_checks(rules, question="Where is #12345?", answer=" certainly: #12345 ships.")
    assert good.score == 1.0
    assert good.feedback == ""
    bad = score_checks(rules, question="Where is #12345?", answer="It ships soon.")
    assert bad.score == 3 / 5  # only max_words (weight 3 of 5) passes
    assert "begin with 'Certainly:'" in bad.feedback
    assert "#12345" in bad.feedback
    assert score_checks(spec(), question="q", answer="a").score is None
    # An empty answer meets no length rule (or RL could collapse to saying nothing).
    short = spec({"type": "max_words", "limit": 5})
    for empty in ("", "  \n "):
        assert score_checks(short, question="q", answer=empty).score == 0.0


def test_regex_and_json_checks() -> None:
    must_not = spec({"type": "regex", "pattern": r"(?i)\bsorry\b", "must_match": False})
    assert score_checks(must_not, question="", answer="Sorry!").score == 0.0
    assert score_checks(must_not, question="", answer="Done.").score == 1.0
    shape = spec(
        {
            "type": "json_schema",
            "json_schema": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"enum": ["open", "closed"]}},
            },
        }
    )
    assert score_checks(shape, question="", answer='{"status": "open"}').score == 1.0
    assert score_checks(shape, question="", answer='{"status": "lost"}').score == 0.0
    assert score_checks(shape, question="", answer="not json").score == 0.0
    with pytest.raises(ValidationError):
        spec({"type": "json_schema", "json_schema": {"type": "no-such-type"}})


def test_catastrophic_pattern_cannot_stall_scoring() -> None:
    evil = spec({"type": "regex", "pattern": r"(a+)+$"})
    result = score_checks(evil, question="", answer="a" * 40 + "b")
    assert result.score == 0.0  # timed out counts as no match, and returns


def test_stop_trimmer_holds_back_partial_stops() -> None:
    trimmer = StopTrimmer(("END",))
    out = [trimmer.feed(p) for p in ("Hello E", "N", "D and more")]
    assert "".join(out) == "Hello "
    assert trimmer.stopped
    plain = StopTrimmer(("END",))
    assert "".join([plain.feed("Hello E"), plain.feed("NOUGH"), plain.flush()]) == "Hello ENOUGH"


def test_context_puts_instructions_first_and_demonstrations_as_turns() -> None:
    demos = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
    ]
    messages = Context("Be brief.", demos).messages(  # type: ignore[arg-type]
        [{"role": "system", "content": "User is on mobile."}, {"role": "user", "content": "q2"}],
    )
    assert messages == [
        {"role": "system", "content": "Be brief.\n\nUser is on mobile."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert Context().messages([{"role": "user", "content": "q"}]) == [
        {"role": "user", "content": "q"}
    ]
