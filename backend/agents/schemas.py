from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.prompts.schemas import (
    MAX_DEMONSTRATION_TURNS,
    MAX_INSTRUCTIONS_CHARS,
    Turn,
    check_demonstrations,
)
from backend.scoring.spec import RewardSpec

# The slug is the `model` of OpenAI requests: keep it URL- and log-safe.
SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_TOKENS_LIMIT = 32_768
MAX_PROMPT_TOKENS_LIMIT = 1_000_000
PROMPT_CAP_DESCRIPTION = (
    "Most prompt tokens (the agent's instructions and demonstrations plus the request's "
    "messages) of one chat request; a longer prompt is a 400 `context_length_exceeded`. "
    "null: only the deployment's context window applies."
)


class FastLoopSettings(BaseModel):
    """How the fast loop (prompt optimisation from feedback) treats this agent."""

    model_config = ConfigDict(extra="forbid")
    pinned: bool = Field(False, description="No automatic prompt changes while pinned.")
    min_new_feedback: int = Field(
        10, ge=1, le=100_000, description="Run after this many new ratings (N)..."
    )
    max_wait_minutes: float = Field(
        15.0, gt=0, le=10_080, description="...or this long after the first new rating (M)."
    )
    budget: int = Field(48, ge=4, le=10_000, description="Answers generated per run.")
    margin: float = Field(
        0.02, ge=0, le=1, description="Validation gain over the live version needed to go live."
    )
    max_tokens: int = Field(96, ge=1, le=4096, description="Answer length while optimising.")
    validation_fraction: float = Field(0.4, gt=0, lt=1)
    min_examples: int = Field(4, ge=2, le=10_000, description="Fewer rated questions: no run.")
    max_examples: int = Field(200, ge=2, le=10_000, description="Most recent rated questions used.")
    demonstrations: int = Field(2, ge=0, le=8, description="Example exchanges in a candidate.")
    population_size: int = Field(4, ge=1, le=16, description="Candidates kept for the slow loop.")


class SlowLoopSettings(BaseModel):
    """How the slow loop (LoRA RL on the agent's rollouts, Fast-Slow Training) runs."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(8, ge=1, le=10_000, description="Optimiser steps per run.")
    questions_per_step: int = Field(4, ge=1, le=1024)
    group_size: int = Field(4, ge=2, le=64, description="Answers per question (G).")
    max_tokens: int = Field(48, ge=1, le=4096, description="Answer length while training.")
    temperature: float = Field(1.0, gt=0, le=2.0, description="Sampling temperature of rollouts.")
    algorithm: Literal["cispo", "grpo"] = "cispo"
    clip_ratio_max: float = Field(
        2.0, gt=1, description="CISPO: importance weights are clipped from above at this."
    )
    clip_epsilon: float = Field(0.2, gt=0, lt=1, description="GRPO: PPO clip range.")
    kl_coef: float = Field(0.04, ge=0, description="Weight of the KL penalty to the base model.")
    learning_rate: float = Field(2e-4, gt=0, le=1)
    anchor_solved_steps: bool = Field(
        False,
        description="A step in which every answer earned the full reward has nothing left to "
        "learn: take it on the exact KL to the base alone, pulling the weights back toward the "
        "base while the contexts keep the reward (off: such a step changes nothing). Off by "
        "default: no measured gain yet, and its first step is as large as a reward step.",
    )
    updates_per_step: int = Field(1, ge=1, le=16, description="Gradient passes over a batch.")
    micro_batch: int = Field(
        4,
        ge=0,
        le=1024,
        description="Answers per forward/backward pass; gradients accumulate over the step's "
        "batch, so the step is the same and activation memory is bounded by this "
        "(0: the whole batch at once).",
    )
    lora_rank: int = Field(16, ge=1, le=256)
    lora_alpha: int = Field(32, ge=1, le=1024)
    contexts: Literal["population", "live", "none"] = Field(
        "population",
        description="Contexts of the rollouts: sampled from the fast loop's population and "
        "mixed within a group (Fast-Slow Training), the live prompt only, or none.",
    )
    refresh_every: int = Field(
        0,
        ge=0,
        le=10_000,
        description="FST interleaving: every T steps a fast-loop round on the current policy "
        "refreshes the population of contexts (0: off; needs `contexts: population`).",
    )
    refresh_budget: int = Field(
        24, ge=4, le=10_000, description="Answers a population refresh may generate."
    )
    checkpoint_every: int = Field(2, ge=1, description="Save a resumable checkpoint every K steps.")
    seed: int | None = Field(
        None, description="Fixes sampling and initialisation, for reproducible runs."
    )
    min_questions: int = Field(6, ge=2, description="Fewer distinct questions: no run.")
    max_questions: int = Field(500, ge=2)
    validation_fraction: float = Field(0.3, gt=0, lt=1)
    eval_questions: int = Field(8, ge=1, le=500, description="Validation questions evaluated.")
    margin: float = Field(
        0.0, ge=0, le=1, description="Reward gain over the live adapter needed to go live."
    )
    kl_budget: float = Field(0.5, gt=0, description="Largest mean per-token KL to the base.")
    retention_tolerance: float = Field(
        0.1, ge=0, le=1, description="Largest drop of base-skill accuracy allowed."
    )


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str = Field(pattern=SLUG_PATTERN, description="Lowercase name; the chat `model`.")
    system_prompt: str = Field(max_length=MAX_INSTRUCTIONS_CHARS)
    demonstrations: list[Turn] = Field(default_factory=list, max_length=MAX_DEMONSTRATION_TURNS)
    base_model: str | None = Field(None, description="Defaults to the deployment's base model.")
    reward: RewardSpec | None = None
    max_tokens_cap: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)
    max_prompt_tokens: int | None = Field(
        None, gt=0, le=MAX_PROMPT_TOKENS_LIMIT, description=PROMPT_CAP_DESCRIPTION
    )
    description: str = Field("", max_length=500)
    fast_loop: FastLoopSettings | None = None
    slow_loop: SlowLoopSettings | None = None

    _pairs = field_validator("demonstrations")(check_demonstrations)


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=500)
    reward: RewardSpec | None = None
    max_tokens_cap: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)
    max_prompt_tokens: int | None = Field(
        None,
        ge=0,
        le=MAX_PROMPT_TOKENS_LIMIT,
        description="The agent's prompt-token cap (see AgentCreate); 0 removes it.",
    )
    fast_loop: FastLoopSettings | None = Field(
        None, description="Only the fields sent change; the others keep their values."
    )
    slow_loop: SlowLoopSettings | None = Field(
        None, description="Only the fields sent change; the others keep their values."
    )


class AgentRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    slug: str
    description: str
    base_model: str
    reward: dict[str, Any]
    max_tokens_cap: int
    max_prompt_tokens: int | None = Field(description=PROMPT_CAP_DESCRIPTION)
    fast_loop: FastLoopSettings
    slow_loop: SlowLoopSettings
    population: list[dict[str, Any]]
    live_prompt_version: int | None
    live_adapter_version: int | None
    created_at: datetime
    updated_at: datetime


class FastLoopStatusRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    pinned: bool
    new_ratings: int = Field(description="Ratings since the last optimisation run.")
    min_new_feedback: int
    due_at: datetime | None = Field(description="When the wait for more ratings ends.")
    due_reason: str | None = Field(description="Why it runs on beat's next tick, if it does.")
    running_job_id: uuid.UUID | None
    last_job_id: uuid.UUID | None


class ActivationRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    kind: str
    from_version: int | None
    to_version: int | None
    reason: str
    actor_key_id: uuid.UUID | None
    job_id: uuid.UUID | None
    created_at: datetime
