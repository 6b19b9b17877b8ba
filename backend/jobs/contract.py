"""The job contract: what the API (which creates jobs) and the workers (which run them) agree
on, and the only job module both import.

- the job kinds, the queue each runs on, and the Celery task names;
- each kind's parameters as a typed model (`validate_params`: the API checks them when a job
  is started, the worker again before it runs one);
- what a handler is given (its worker's resources, the job, its parameters, a reporter) and
  what it returns (`JobOutcome`).

Plumbing only: nothing here imports FastAPI, the runtime or a worker module, so importing
it costs an API process nothing and a worker nothing heavy (no torch).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from backend.errors import Invalid

if TYPE_CHECKING:
    from backend.adapters.storage import AdapterStore
    from backend.config import Settings
    from backend.db import Database
    from backend.engines import Engine


class JobKind(enum.StrEnum):
    EVALUATE = "evaluate"
    OPTIMIZE = "optimize"
    TRAIN = "train"


# -- queues and tasks ----------------------------------------------------------------------

# `fast`: prompt optimisation and evaluation (CPU is fine); `train`: LoRA RL (GPU workers);
# `maintenance`: small periodic housekeeping.
FAST_QUEUE, TRAIN_QUEUE, MAINTENANCE_QUEUE = "fast", "train", "maintenance"
QUEUES = (FAST_QUEUE, TRAIN_QUEUE, MAINTENANCE_QUEUE)
QUEUE_OF_KIND: dict[JobKind, str] = {
    JobKind.EVALUATE: FAST_QUEUE,
    JobKind.OPTIMIZE: FAST_QUEUE,
    JobKind.TRAIN: TRAIN_QUEUE,
}

# Every job runs through one task, sent to its kind's queue; the worker picks the handler.
RUN_TASK = "fastslow.jobs.run"
# Periodic tasks (beat), all on `maintenance`.
REAP_TASK = "fastslow.jobs.reap_stale"
FAST_LOOP_TRIGGER_TASK = "fastslow.fast_loop.dispatch_due"
SCHEDULES_TASK = "fastslow.schedules.fire_due"


def parse_kind(kind: str) -> JobKind:
    try:
        return JobKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in JobKind)
        raise Invalid(f"unknown job kind {kind!r} (known: {known})", param="kind") from None


def queue_of(kind: str) -> str:
    return QUEUE_OF_KIND[parse_kind(kind)]


def job_payload(job_id: uuid.UUID, kind: str) -> dict[str, str]:
    """A job message carries its id and kind (for routing); the worker reads the rest, its
    parameters included, from the database."""
    return {"job_id": str(job_id), "kind": parse_kind(kind).value}


# -- parameters ----------------------------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluateOptions(_Params):
    """What an admin chooses for an evaluation (the body of `POST .../evaluate`)."""

    prompts: list[str] | None = Field(
        None,
        max_length=200,
        description="Questions to ask; default: the agent's recent distinct questions.",
    )
    limit: int = Field(20, ge=1, le=200, description="Most recent questions to use.")
    max_tokens: int = Field(128, ge=1, le=4096)

    @field_validator("prompts")
    @classmethod
    def _some_question(cls, prompts: list[str] | None) -> list[str] | None:
        if prompts is not None and not [p for p in prompts if p.strip()]:
            raise ValueError("prompts must hold at least one non-empty question")
        return prompts


class EvaluateParams(EvaluateOptions):
    retry_of: uuid.UUID | None = None


class Trigger(enum.StrEnum):
    """Who started a learning run: an admin (or a retry of one), a schedule (slow loop), or
    new feedback (the fast loop's trigger); `why` says more (the schedule's decision, the
    feedback counted)."""

    ADMIN = "admin"
    SCHEDULE = "schedule"
    FEEDBACK = "feedback"


# Before the contract, the fast loop's trigger stored its reason as the trigger itself
# ("12 new ratings", "3 new ratings, oldest 0:31:00 ago"); such rows still validate.
_LEGACY_FEEDBACK_TRIGGER = re.compile(r"\d+ new ratings\b.*")


class _LearningParams(_Params):
    trigger: Trigger
    why: str | None = None
    retry_of: uuid.UUID | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_trigger(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            trigger = data.get("trigger")
            if (
                isinstance(trigger, str)
                and "why" not in data
                and _LEGACY_FEEDBACK_TRIGGER.fullmatch(trigger)
            ):
                return {**data, "trigger": Trigger.FEEDBACK.value, "why": trigger}
        return data


class OptimizeParams(_LearningParams):
    """A fast-loop run (prompt optimisation)."""


class TrainParams(_LearningParams):
    """A slow-loop run (LoRA RL)."""


JobParams = EvaluateParams | OptimizeParams | TrainParams
PARAMS_OF_KIND: dict[JobKind, type[JobParams]] = {
    JobKind.EVALUATE: EvaluateParams,
    JobKind.OPTIMIZE: OptimizeParams,
    JobKind.TRAIN: TrainParams,
}


def validate_params(kind: str, params: BaseModel | Mapping[str, Any]) -> JobParams:
    """`params` as the kind's model; Invalid naming the first offending field otherwise."""
    job_kind = parse_kind(kind)
    raw = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    try:
        return PARAMS_OF_KIND[job_kind].model_validate(raw)
    except ValidationError as exc:
        field, message = _first_error(exc.errors())
        where = f"{field}: " if field else ""
        raise Invalid(
            f"invalid {job_kind.value} parameters: {where}{message}", param=field
        ) from None


def stored_params(params: JobParams) -> dict[str, Any]:
    """How parameters are kept in `Job.params` (JSON; unset optional fields left out)."""
    return params.model_dump(mode="json", exclude_none=True)


def _first_error(errors: list[ErrorDetails]) -> tuple[str | None, str]:
    first = errors[0]
    field = ""
    for part in first["loc"]:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else part)
    ctx = first.get("ctx") or {}
    # A validator's own message without pydantic's "Value error, " in front of it.
    own = first["type"] == "value_error" and "error" in ctx
    message = str(ctx["error"]) if own else first["msg"]
    return field or None, message


# -- running -------------------------------------------------------------------------------


class JobCancelled(Exception):
    """Raised by long-running code at a safe point once an admin asked to cancel the job."""


class JobReporter(Protocol):
    """All that learning code sees of the job system: progress, log lines (each report is
    also a heartbeat) and safe points at which an admin's cancel takes effect."""

    @property
    def job_id(self) -> uuid.UUID: ...

    def progress(self, step: int, total: int, metrics: dict[str, Any] | None = None) -> None: ...

    def log(self, line: str) -> None: ...

    def check_cancelled(self) -> None:
        """Raises JobCancelled once an admin asked for it."""
        ...


@dataclass(frozen=True)
class JobOutcome:
    result: dict[str, Any]
    metrics: dict[str, Any]


class JobResources(Protocol):
    """What a handler may use of the worker process running it (worker/resources.py)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def database(self) -> Database: ...

    @property
    def store(self) -> AdapterStore: ...

    @property
    def engine(self) -> Engine: ...


J = TypeVar("J")  # the job row (backend.jobs.models.Job, which imports this module)
P = TypeVar("P", bound=BaseModel)
# A job kind's handler: given its worker's resources, the claimed job, its validated
# parameters and a reporter, it does the work and returns the outcome.
Handler = Callable[[JobResources, J, P, JobReporter], Coroutine[Any, Any, JobOutcome]]
