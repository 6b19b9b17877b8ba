"""A step's update: group-normalised advantages from the scored rollouts (loss.py), then the
objective, the KL anchor alone, or nothing (`step_kind`)."""

from __future__ import annotations

import asyncio
from typing import Literal

import torch

from backend.agents.schemas import SlowLoopSettings
from worker.slow.loss import group_advantages
from worker.slow.policy import Policy
from worker.slow.rollouts import Group


def step_kind(
    rewards: list[float], advantages: torch.Tensor, settings: SlowLoopSettings
) -> Literal["reward", "anchor", "none"]:
    """What a step trains on: the objective where some group has a reward spread; the KL term
    alone (Policy.anchor) where every answer earned the full reward, so nothing is left to
    learn; nothing where all answers failed alike: with Adam an anchor step is as large as a
    reward step, and anchoring those undid the rare signal RL alone gets at the start
    (benchmarks/learning.py: RL alone then never learned the rule)."""
    if advantages.abs().sum() > 0:
        return "reward"
    if settings.anchor_solved_steps and min(rewards) >= 1.0:
        return "anchor"
    return "none"


def reward_metrics(groups: list[Group]) -> dict[str, float]:
    """A step's rollout rewards and answer tokens; `flat_groups`: the share of groups whose
    answers all scored the same (no signal)."""
    rewards = torch.tensor([r for g in groups for r in g.rewards])
    per_group = rewards.view(len(groups), -1)
    return {
        "reward": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=False)),
        "flat_groups": float((per_group.std(dim=1, unbiased=False) == 0).float().mean()),
        "completion_tokens": float(
            sum(r.generation.completion_tokens for g in groups for r in g.rollouts)
        ),
    }


async def update(
    policy: Policy, groups: list[Group], settings: SlowLoopSettings
) -> dict[str, float]:
    """Train the policy on one step's scored groups; returns the update's metrics."""
    rewards = [r for g in groups for r in g.rewards]
    advantages = group_advantages(torch.tensor(rewards), settings.group_size)
    kind = step_kind(rewards, advantages, settings)
    sequences = [r.sequence for g in groups for r in g.rollouts]
    if kind == "reward":
        return await asyncio.to_thread(policy.update, sequences, advantages)
    if kind == "anchor":
        return {**await asyncio.to_thread(policy.anchor, sequences), "anchored": 1.0}
    return {"loss": 0.0, "trained_tokens": 0.0}  # no signal: no update (the step still counts)
