"""A slow-loop run's state between steps, and the checkpoints that make a run resumable.

Every K steps the policy (adapter and optimiser state, `Policy.save_checkpoint`) is written
with a `TrainingState`: the steps done, the curves, the sampling RNG's state (a resumed run
samples the questions and contexts the uninterrupted one would have), the contexts being
sampled from (a population refresh replaces them) and the answers refreshes generated.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.prompts.context import Context
from worker.slow.policy import Policy

# What the job's progress shows per step and the adapter's metrics keep.
CURVES = ("reward", "reward_std", "kl", "loss", "tokens_per_s", "context_rollouts")


@dataclass
class TrainingState:
    step: int  # steps done
    rng: random.Random  # draws questions, contexts, sampling and refresh seeds
    contexts: list[Context]
    curves: dict[str, list[float | None]]
    context_rollouts: int = 0

    def record(self, metrics: dict[str, float]) -> None:
        """A step's metrics join the curves."""
        for name in CURVES:
            self.curves.setdefault(name, []).append(metrics.get(name))

    def snapshot(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "curves": self.curves,
            "rng": list(self.rng.getstate()),
            "contexts": [
                [c.instructions, c.demonstrations, c.prompt_version] for c in self.contexts
            ],
            "context_rollouts": self.context_rollouts,
        }

    @classmethod
    def restore(
        cls, snapshot: dict[str, Any] | None, *, seed: int, contexts: list[Context]
    ) -> TrainingState:
        """The state a checkpoint kept, or a fresh one (RNG from `seed`, the plan's contexts)."""
        snapshot = snapshot or {}
        rng = random.Random(seed)
        if snapshot.get("rng") is not None:
            version, internal, gauss = snapshot["rng"]
            rng.setstate((version, tuple(internal), gauss))
        kept = [Context(c[0], c[1], c[2]) for c in snapshot.get("contexts") or []]
        return cls(
            step=int(snapshot.get("step", 0)),
            rng=rng,
            contexts=kept or contexts,
            curves=snapshot.get("curves", {}),
            context_rollouts=int(snapshot.get("context_rollouts", 0)),
        )


class Checkpoints:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.latest = root / "latest"

    def snapshot(self) -> dict[str, Any] | None:
        path = self.latest / "state.json"
        state: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
        return state

    def adapter(self, state: TrainingState) -> Path | None:
        """The checkpointed adapter a resumed run continues from (None: a fresh run)."""
        return self.latest / "adapter" if state.step else None

    def save(self, policy: Policy, state: TrainingState) -> None:
        policy.save_checkpoint(self.latest, state.snapshot())

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
