"""One fast-loop run for one agent: optimise its context with GEPA on its rated rollouts, keep
the Pareto population, and promote the best candidate only if it beats the live version on the
validation set by the agent's margin.

    load the rated examples -> search_population (GEPA; worker/fast/program.py runs candidates)
    -> record (worker/fast/population.py: store the population, decide, activate)

Runs without Celery: `optimize_agent` takes the database, the engine, the LM and a reporter.
GEPA is synchronous, so it runs in a thread while this event loop serves its engine calls.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from gepa.api import optimize
from gepa.core.callbacks import (
    BudgetUpdatedEvent,
    ErrorEvent,
    GEPACallback,
    IterationEndEvent,
    ValsetEvaluatedEvent,
)
from gepa.core.result import GEPAResult
from gepa.utils import StopperProtocol

from backend.adapters.activation import adapter_ref
from backend.adapters.storage import AdapterStore
from backend.agents.models import Agent
from backend.agents.schemas import FastLoopSettings
from backend.agents.service import agent_by_id, fast_loop_settings
from backend.db import Database
from backend.engines import AdapterRef, Engine, EngineUnavailable, SamplingParams
from backend.errors import Invalid
from backend.jobs.contract import JobCancelled, JobOutcome, JobReporter
from backend.jobs.models import Job
from backend.lm import TextLM
from backend.prompts.context import Context, encode_demonstrations
from backend.scoring.scorer import Scorer, recurring_complaints
from backend.scoring.spec import RewardSpec
from worker.dataset import Example, load_examples, split
from worker.fast.demonstrations import demonstration_pool
from worker.fast.guards import ProposalRejected
from worker.fast.population import Member, record
from worker.fast.program import DEMONSTRATIONS, INSTRUCTIONS, ContextProgram

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CONSECUTIVE_ERRORS = 3
PERFECT_SCORE = 1.0


class _Progress(StopperProtocol):
    """GEPA callback + logger + stopper: reports to the job, stops on repeated system errors."""

    def __init__(
        self, reporter: JobReporter, budget: int, program: ContextProgram, report_progress: bool
    ) -> None:
        self.reporter = reporter
        self.report_progress = report_progress
        self.budget = budget
        self.program = program
        self.metric_calls = 0
        self.candidates = 1
        self.seed_score: float | None = None
        self.best_score: float | None = None
        self.consecutive_errors = 0
        self.last_error: Exception | None = None
        self.cancelled = False

    # LoggerProtocol: GEPA's own log lines go to the job's log tail, which the tenant reads;
    # the tracebacks and exception texts it logs go to the server log only.
    def log(self, message: str) -> None:
        public = _public_log_line(message)
        if public != message:
            logger.warning("job %s: %s", self.reporter.job_id, message)
        if public:
            self.reporter.log(public)

    # StopperProtocol: stop on repeated system errors, or once a candidate is perfect on the
    # validation set (nothing can beat it; the rest of the budget would be spent for nothing).
    def __call__(self, gepa_state: Any) -> bool:
        perfect = self.best_score is not None and self.best_score >= PERFECT_SCORE
        try:
            self.reporter.check_cancelled()
        except JobCancelled:
            self.cancelled = True
        return perfect or self.cancelled or self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS

    def metrics(self) -> dict[str, Any]:
        return {
            "metric_calls": self.metric_calls,
            "candidates": self.candidates,
            "seed_score": self.seed_score,
            "best_score": self.best_score,
            "proposals": self.program.stats.as_dict(),
        }

    def on_budget_updated(self, event: BudgetUpdatedEvent) -> None:
        self.metric_calls = int(event["metric_calls_used"])
        if self.report_progress:
            self.reporter.progress(min(self.metric_calls, self.budget), self.budget, self.metrics())

    def on_valset_evaluated(self, event: ValsetEvaluatedEvent) -> None:
        score = float(event["average_score"])
        if event["candidate_idx"] == 0:
            self.seed_score = score
        else:
            self.candidates += 1
        self.best_score = max(score, self.best_score or score)

    def on_iteration_end(self, event: IterationEndEvent) -> None:
        self.consecutive_errors = 0 if self.last_error is None else self.consecutive_errors
        self.last_error = None

    def on_error(self, event: ErrorEvent) -> None:
        exc = event["exception"]
        if isinstance(exc, ProposalRejected):
            return
        self.last_error = exc
        self.consecutive_errors += 1


# GEPA's lines that carry an exception's text: "Iteration 3: Exception during optimization: ...",
# "Batched reflection failed (...); retrying per task."
_EXCEPTION_LINE = re.compile(r"^(.*?(?:[Ee]xception[^:]*|failed)):? ?[(:].*", re.DOTALL)


def _public_log_line(message: str) -> str:
    """A GEPA log line as the tenant may see it: no traceback, no exception text."""
    if message.lstrip().startswith("Traceback (most recent call last)"):
        return ""
    found = _EXCEPTION_LINE.match(message)
    if found is not None:
        return f"{found.group(1)} (details in the server log)"
    return message


def _population(result: Any, size: int, refused: Collection[int] = ()) -> list[Member]:
    """The Pareto front (candidates best on some validation question), best average first,
    topped up with the best of the rest, at most `size`; never a `refused` candidate."""
    front: set[int] = set()
    for winners in result.per_val_instance_best_candidates.values():
        front |= set(winners)
    ranked = sorted(
        (i for i in range(len(result.candidates)) if i not in refused),
        key=lambda i: (-result.val_aggregate_scores[i], i),
    )
    chosen = [i for i in ranked if i in front][:size]
    chosen += [i for i in ranked if i not in chosen][: size - len(chosen)]
    chosen.sort(key=lambda i: (-result.val_aggregate_scores[i], i))
    return [
        Member(
            result.candidates[i][INSTRUCTIONS],
            result.candidates[i].get(DEMONSTRATIONS, "[]"),
            float(result.val_aggregate_scores[i]),
            i,
        )
        for i in chosen
    ]


@dataclass(frozen=True)
class Search:
    """What one GEPA run found: the population (best first) and how it got there."""

    members: list[Member]
    seed_score: float
    metrics: dict[str, Any]


async def search_population(
    *,
    engine: Engine,
    lm: TextLM,
    spec: RewardSpec,
    examples: list[Example],
    seed_context: Context,
    lora: AdapterRef | None,
    settings: FastLoopSettings,
    max_tokens: int,
    reporter: JobReporter,
    seed: int,
    report_progress: bool = True,
) -> Search:
    """Optimise a context with GEPA on rated examples, answered by `engine` with the LoRA
    `lora` (None: the base model), starting from `seed_context`.

    The fast loop runs it on the live adapter; the slow loop on its in-training adapter, to
    refresh the contexts it samples (FST interleaving).
    """
    complaints = recurring_complaints([c for e in examples if e.user_score < 0 for c in e.comments])
    scorer = Scorer(spec, judge_lm=lm, complaints=complaints)
    usable = [e for e in examples if scorer.applies(has_correction=e.correction is not None)]
    if len(usable) < settings.min_examples:
        raise Invalid(
            f"not enough rated questions to optimise on: {len(usable)} usable, "
            f"{settings.min_examples} needed (a question is usable when the reward spec has "
            "checks or a judge, or when the user gave a correction)"
        )
    train, validation = split(usable, settings.validation_fraction)
    pool = demonstration_pool(train)
    reporter.log(
        f"optimising the context: {len(train)} train / {len(validation)} validation "
        f"questions, {len(pool)} gold demonstrations, budget {settings.budget} answers"
    )

    loop = asyncio.get_running_loop()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    seed_candidate = {
        INSTRUCTIONS: seed_context.instructions,
        DEMONSTRATIONS: encode_demonstrations(seed_context.demonstrations),
    }
    program = ContextProgram(
        run=run,
        engine=engine,
        scorer=scorer,
        lora=lora,
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        lm=lm,
        pool=pool,
        demonstrations_per_candidate=settings.demonstrations,
        seed=seed,
        seed_candidate=seed_candidate,
    )
    progress = _Progress(reporter, settings.budget, program, report_progress)

    def run_gepa() -> GEPAResult[str, int]:
        return optimize(
            seed_candidate=seed_candidate,
            trainset=train,
            valset=validation,
            adapter=program,  # GEPA's name for it
            max_metric_calls=settings.budget,
            reflection_minibatch_size=min(3, len(train)),
            candidate_selection_strategy="pareto",
            # Context is instructions and demonstrations together: for a small model neither
            # alone moves answers much, both do (see the field notes), so mutate both at once.
            module_selector="all",
            skip_perfect_score=True,
            perfect_score=PERFECT_SCORE,
            raise_on_exception=False,
            stop_callbacks=[progress],
            # GEPA calls the callback methods an object has (duck typing); ours has four.
            callbacks=[cast(GEPACallback, progress)],
            logger=progress,
            display_progress_bar=False,
            seed=0,
        )

    result = await asyncio.to_thread(run_gepa)
    if progress.cancelled:
        raise JobCancelled("cancelled by an admin; nothing was recorded or activated")
    if progress.consecutive_errors >= MAX_CONSECUTIVE_ERRORS and progress.last_error is not None:
        error = progress.last_error
        if isinstance(error, EngineUnavailable):
            raise error
        raise RuntimeError(f"optimisation stopped after repeated errors: {error}") from error

    # The last gate before anything is stored or promoted: every text of every candidate.
    refused = {
        i
        for i, candidate in enumerate(result.candidates)
        if i and program.refusal(candidate) is not None
    }
    if refused:
        reporter.log(f"{len(refused)} candidate(s) refused by the guards; not kept")
    members = _population(result, settings.population_size, refused)
    seed_score = float(result.val_aggregate_scores[0])
    metrics = {
        **progress.metrics(),
        "metric_calls": result.total_metric_calls,
        "seed_score": seed_score,
        "best_score": members[0].score,
        "candidates": result.num_candidates,
    }
    return Search(members, seed_score, metrics)


async def optimize_agent(
    database: Database,
    engine: Engine,
    store: AdapterStore,
    lm: TextLM,
    job: Job,
    reporter: JobReporter,
) -> JobOutcome:
    def load() -> tuple[Agent, FastLoopSettings, list[Example]]:
        with database.session() as session:
            agent = agent_by_id(session, tenant_id=job.tenant_id, agent_id=job.agent_id)
            settings = fast_loop_settings(agent)
            examples = load_examples(
                session, tenant_id=agent.tenant_id, agent_id=agent.id, limit=settings.max_examples
            )
            return agent, settings, examples

    agent, settings, examples = await asyncio.to_thread(load)
    live = agent.live_prompt
    if live is None:
        raise Invalid("the agent has no live prompt version")
    live_lora = await asyncio.to_thread(adapter_ref, agent.live_adapter, store)
    reporter.log(f"seed: live prompt v{live.version}")
    search = await search_population(
        engine=engine,
        lm=lm,
        spec=RewardSpec.model_validate(agent.reward or {}),
        examples=examples,
        seed_context=Context.of(live),
        lora=live_lora,
        settings=settings,
        max_tokens=min(settings.max_tokens, agent.max_tokens_cap),
        reporter=reporter,
        seed=int(uuid.UUID(str(job.id)).int % 2**31),
    )
    outcome = await asyncio.to_thread(
        record, database, agent.id, live.id, job.id, search.members, search.seed_score, settings
    )
    reporter.progress(settings.budget, settings.budget, search.metrics)
    reporter.log(outcome["reason"])
    return JobOutcome(result=outcome, metrics=search.metrics)
