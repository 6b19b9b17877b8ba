"""Deterministic scoring of an answer against the verifiable checks of a reward spec."""

from __future__ import annotations

import json
from dataclasses import dataclass

import regex
from jsonschema import Draft202012Validator

from backend.scoring.spec import (
    JsonSchema,
    MaxWords,
    MinWords,
    Regex,
    RepeatsEntity,
    RewardSpec,
    StartsWith,
)

# A tenant's pattern must not stall a worker: the `regex` module enforces a time limit.
REGEX_TIMEOUT_S = 0.2


@dataclass(frozen=True)
class CheckOutcome:
    check: str
    passed: bool
    weight: float
    feedback: str


@dataclass(frozen=True)
class ChecksScore:
    score: float | None  # weighted pass rate in [0, 1]; None when the spec has no checks
    outcomes: list[CheckOutcome]

    @property
    def feedback(self) -> str:
        return "\n".join(f"- {o.feedback}" for o in self.outcomes if not o.passed)


def _search(pattern: str, text: str) -> list[str]:
    try:
        return [m.group(0) for m in regex.finditer(pattern, text, timeout=REGEX_TIMEOUT_S)]
    except TimeoutError:
        return []


def _outcome(check: object, answer: str, question: str) -> tuple[bool, str]:
    words = len(answer.split())
    match check:
        case StartsWith(text=text, case_sensitive=case_sensitive):
            head = answer.lstrip()
            ok = head.startswith(text) if case_sensitive else head.lower().startswith(text.lower())
            return ok, f"the answer must begin with {text!r}"
        case MaxWords(limit=limit):
            # An empty answer meets no length rule: otherwise RL can collapse to saying nothing.
            ok = 0 < words <= limit
            return ok, f"the answer must have between 1 and {limit} words (it has {words})"
        case MinWords(limit=limit):
            return words >= limit, f"the answer must have at least {limit} words (it has {words})"
        case Regex(pattern=pattern, must_match=must_match):
            found = bool(_search(pattern, answer))
            verb = "must match" if must_match else "must not match"
            return found == must_match, f"the answer {verb} the pattern {pattern!r}"
        case JsonSchema(json_schema=schema):
            try:
                document = json.loads(answer)
            except ValueError:
                return False, "the answer must be a JSON document"
            errors = list(Draft202012Validator(schema).iter_errors(document))
            detail = errors[0].message if errors else ""
            return not errors, f"the answer's JSON does not fit the required shape: {detail}"
        case RepeatsEntity(pattern=pattern):
            missing = [e for e in _search(pattern, question) if e not in answer]
            return not missing, f"the answer must repeat {', '.join(missing)} from the question"
    raise TypeError(f"unknown check {check!r}")


def describe(check: object) -> str:
    """A check as an instruction to the assistant (what the fast loop may state as a rule)."""
    match check:
        case StartsWith(text=text):
            return f"Begin every answer with {text!r}."
        case MaxWords(limit=limit):
            return f"Answer in at most {limit} words."
        case MinWords(limit=limit):
            return f"Answer in at least {limit} words."
        case Regex(pattern=pattern, must_match=True):
            return f"Your answer must match the regular expression {pattern!r}."
        case Regex(pattern=pattern, must_match=False):
            return f"Your answer must not match the regular expression {pattern!r}."
        case JsonSchema(json_schema=schema):
            return f"Answer only with JSON that follows this JSON schema: {json.dumps(schema)}"
        case RepeatsEntity(pattern=pattern):
            return f"Repeat every {pattern!r} the user mentions (for example order numbers)."
    raise TypeError(f"unknown check {check!r}")


def score_checks(spec: RewardSpec, *, question: str, answer: str) -> ChecksScore:
    outcomes: list[CheckOutcome] = []
    for check in spec.checks:
        passed, feedback = _outcome(check, answer, question)
        outcomes.append(CheckOutcome(check.type, passed, check.weight, feedback))
    total = sum(o.weight for o in outcomes)
    if not total:
        return ChecksScore(None, outcomes)
    return ChecksScore(sum(o.weight for o in outcomes if o.passed) / total, outcomes)
