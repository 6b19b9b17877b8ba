"""An agent's reward spec: declarative checks a tenant admin writes, never code.

Both learning loops score answers with it (the fast loop reads the feedback text too, the slow
loop only the number). Unknown fields are refused, so a typo is a 422 and not a silent no-op.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import regex
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PATTERN_CHARS = 500


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, gt=0, le=100, description="Relative weight of this check.")


def _compile(pattern: str) -> str:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"pattern longer than {MAX_PATTERN_CHARS} characters")
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc
    return pattern


class StartsWith(_Check):
    """The answer begins with `text` (leading whitespace ignored)."""

    type: Literal["starts_with"]
    text: str = Field(min_length=1, max_length=200)
    case_sensitive: bool = False


class MaxWords(_Check):
    """The answer has between 1 and `limit` words (an empty answer meets no length rule)."""

    type: Literal["max_words"]
    limit: int = Field(gt=0, le=10_000)


class MinWords(_Check):
    """The answer has at least `limit` words."""

    type: Literal["min_words"]
    limit: int = Field(gt=0, le=10_000)


class Regex(_Check):
    """The answer matches `pattern` (or must not, with `must_match: false`)."""

    type: Literal["regex"]
    pattern: str = Field(min_length=1)
    must_match: bool = True

    _valid = field_validator("pattern")(_compile)


class JsonSchema(_Check):
    """The answer is a JSON document valid against `json_schema` (draft 2020-12)."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any]

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from exc
        return value


class RepeatsEntity(_Check):
    """Every match of `pattern` in the user's last message also appears in the answer
    (e.g. an order number `#\\d{5}`). Passes trivially when the question has none."""

    type: Literal["repeats_entity"]
    pattern: str = Field(min_length=1)

    _valid = field_validator("pattern")(_compile)


Check = Annotated[
    StartsWith | MaxWords | MinWords | Regex | JsonSchema | RepeatsEntity,
    Field(discriminator="type"),
]


class Judge(BaseModel):
    """An LLM judge grading the answer against a rubric (used by the learning loops)."""

    model_config = ConfigDict(extra="forbid")
    rubric: str = Field(min_length=1, max_length=4000)
    weight: float = Field(1.0, gt=0, le=100)


class RewardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checks: list[Check] = Field(default_factory=list, max_length=50)
    judge: Judge | None = None
    correction_weight: float = Field(
        1.0, ge=0, le=100, description="Weight of similarity to a user's correction, if any."
    )
