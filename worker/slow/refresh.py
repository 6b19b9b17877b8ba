"""FST interleaving: every `refresh_every` steps a fast-loop round, answered by the policy being
trained, re-fits the population of contexts to what the weights now do."""

from __future__ import annotations

from backend.agents.schemas import SlowLoopSettings
from backend.engines import AdapterRef, Engine
from backend.errors import Invalid
from backend.jobs.contract import JobReporter
from backend.lm import TextLM
from backend.prompts.context import Context
from worker.fast.optimizer import search_population
from worker.slow.plan import Plan


def refresh_due(settings: SlowLoopSettings, steps_done: int) -> bool:
    """After this many steps, is the population refreshed? (Never after the last.)"""
    return (
        settings.refresh_every > 0
        and settings.contexts == "population"
        and steps_done % settings.refresh_every == 0
        and steps_done < settings.steps
    )


async def refresh_contexts(
    engine: Engine,
    lm: TextLM,
    plan: Plan,
    contexts: list[Context],
    lora: AdapterRef,
    reporter: JobReporter,
    seed: int,
) -> tuple[list[Context], int]:
    """A GEPA search from the best of `contexts`, answered with `lora`. Returns the new
    population (`contexts` where the search cannot run) and the answers it generated."""
    try:
        search = await search_population(
            engine=engine,
            lm=lm,
            spec=plan.spec,
            examples=plan.examples,
            seed_context=contexts[0],
            lora=lora,
            settings=plan.fast_loop.model_copy(update={"budget": plan.settings.refresh_budget}),
            max_tokens=min(plan.settings.max_tokens, plan.max_tokens_cap),
            reporter=reporter,
            seed=seed,
            report_progress=False,
        )
    except Invalid as exc:
        reporter.log(f"population not refreshed: {exc}")
        return contexts, 0
    refreshed = [Context.from_candidate(m.instructions, m.demonstrations) for m in search.members]
    reporter.log(
        f"population refreshed on the current policy: {len(refreshed)} contexts, best "
        f"validation {search.metrics['best_score']:.3f} (seed {search.seed_score:.3f})"
    )
    return refreshed, int(search.metrics["metric_calls"])
