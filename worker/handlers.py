"""The handler of each job kind, imported only when a job of that kind runs.

Each loader imports its kind's code inside it, and `load_handler` calls it the first time the
kind runs in a process: a fast worker (`-Q fast`) never imports the trainer (torch, peft,
transformers), nor a train worker the fast loop's optimiser (GEPA).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from backend.errors import Invalid
from backend.jobs.contract import (
    EvaluateParams,
    Handler,
    JobKind,
    JobOutcome,
    JobReporter,
    JobResources,
    OptimizeParams,
    TrainParams,
    parse_kind,
    validate_params,
)
from backend.jobs.models import Job


def _evaluate() -> Handler[Job, EvaluateParams]:
    from worker.evaluation import evaluate_agent

    async def evaluate(
        res: JobResources, job: Job, params: EvaluateParams, reporter: JobReporter
    ) -> JobOutcome:
        return await evaluate_agent(res.database, res.engine, res.store, job, params, reporter)

    return evaluate


def _optimize() -> Handler[Job, OptimizeParams]:
    from backend.lm import reflection_lm
    from worker.fast.optimizer import optimize_agent

    async def optimize(
        res: JobResources, job: Job, params: OptimizeParams, reporter: JobReporter
    ) -> JobOutcome:
        lm = reflection_lm(res.settings, res.engine)
        return await optimize_agent(res.database, res.engine, res.store, lm, job, reporter)

    return optimize


def _train() -> Handler[Job, TrainParams]:
    from backend.lm import reflection_lm
    from worker.slow.trainer import train_agent

    async def train(
        res: JobResources, job: Job, params: TrainParams, reporter: JobReporter
    ) -> JobOutcome:
        lm = reflection_lm(res.settings, res.engine)
        return await train_agent(
            res.database, res.engine, res.store, lm, job, reporter, res.settings
        )

    return train


LOADERS: dict[JobKind, Callable[[], Handler[Job, Any]]] = {
    JobKind.EVALUATE: _evaluate,
    JobKind.OPTIMIZE: _optimize,
    JobKind.TRAIN: _train,
}


@cache
def load_handler(kind: JobKind) -> Handler[Job, Any]:
    """The kind's handler; its modules are imported on the first call."""
    return LOADERS[kind]()


async def run_handler(
    res: JobResources, job: Job, reporter: JobReporter, *, kind: str
) -> JobOutcome:
    """The work of a claimed job: its stored parameters checked against the contract again
    (a row that does not match fails, naming the field), then its kind's handler. `kind`: the
    kind the message was routed by."""
    if job.kind != kind:
        raise Invalid(f"the message was for a {kind} job, but job {job.id} is a {job.kind} job")
    job_kind = parse_kind(job.kind)
    params = validate_params(job_kind, job.params)
    return await load_handler(job_kind)(res, job, params, reporter)
