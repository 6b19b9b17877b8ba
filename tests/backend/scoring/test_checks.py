"""The verifiable checks of a reward spec."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.scoring.checks import score_checks
from backend.scoring.spec import RewardSpec


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
