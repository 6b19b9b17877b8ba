"""The slow loop's math and gate, on hand-computed numbers and on the real model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from backend.agents.schemas import SlowLoopSettings
from backend.engines import ChatMessage
from backend.prompts.context import Context
from worker.slow.assess import gate
from worker.slow.checkpoints import TrainingState
from worker.slow.loss import completion_logprobs, group_advantages, policy_loss
from worker.slow.update import step_kind


def test_group_advantages_normalise_within_each_group() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    advantages = group_advantages(rewards, 4)
    # Group 1: mean 0.5, population std 0.5 -> +-1. Group 2: all equal -> no signal.
    assert torch.allclose(advantages, torch.tensor([1.0, -1.0, -1.0, 1.0, 0, 0, 0, 0]), atol=1e-5)


def tiny() -> dict[str, torch.Tensor]:
    return {
        "logp": torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -1.5, -3.0]], requires_grad=True),
        "old": torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -1.0, -2.0]]),
        "ref": torch.tensor([[-1.0, -2.5, 0.0], [-1.0, -1.5, -2.5]]),
        "adv": torch.tensor([2.0, -1.0]),
        "mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
    }


def k3(ref: float, logp: float) -> float:
    return math.exp(ref - logp) - (ref - logp) - 1


def test_cispo_loss_matches_the_formula() -> None:
    t = tiny()
    parts = policy_loss(
        t["logp"],
        t["old"],
        t["ref"],
        t["adv"],
        t["mask"],
        algorithm="cispo",
        kl_coef=0.1,
        clip_ratio_max=1.5,
    )
    # ratios: row 1: e^0.5 = 1.6487 (clipped to 1.5), e^-1 = 0.3679; row 2: 1, e^-0.5, e^-1
    w = [[1.5, math.exp(-1.0)], [1.0, math.exp(-0.5), math.exp(-1.0)]]
    logp = [[-1.0, -2.0], [-0.5, -1.5, -3.0]]
    ref = [[-1.0, -2.5], [-1.0, -1.5, -2.5]]
    adv = [2.0, -1.0]
    terms = [-w[i][j] * adv[i] * logp[i][j] for i in range(2) for j in range(len(logp[i]))]
    kls = [k3(ref[i][j], logp[i][j]) for i in range(2) for j in range(len(logp[i]))]
    expected = sum(terms) / 5 + 0.1 * sum(kls) / 5
    assert parts.loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts.kl == pytest.approx(sum(kls) / 5, rel=1e-5)
    assert parts.clipped_fraction == pytest.approx(1 / 5)
    # The weight is detached: the gradient of token (i, j) is -w * A / tokens.
    parts.loss.backward()  # type: ignore[no-untyped-call]
    grad = t["logp"].grad
    assert grad is not None
    expected_grad = -1.5 * 2.0 / 5 + 0.1 * (1 - math.exp(-1.0 - -1.0)) / 5
    assert grad[0, 0].item() == pytest.approx(expected_grad, rel=1e-5)
    assert grad[0, 2].item() == 0, "padding gets no gradient"


def test_grpo_loss_matches_the_formula() -> None:
    t = tiny()
    parts = policy_loss(
        t["logp"],
        t["old"],
        t["ref"],
        t["adv"],
        t["mask"],
        algorithm="grpo",
        kl_coef=0.0,
        clip_epsilon=0.2,
    )
    ratio = [[math.exp(0.5), math.exp(-1.0)], [1.0, math.exp(-0.5), math.exp(-1.0)]]
    adv = [2.0, -1.0]
    terms = [-min(r * adv[i], max(min(r, 1.2), 0.8) * adv[i]) for i in range(2) for r in ratio[i]]
    assert parts.loss.item() == pytest.approx(sum(terms) / 5, rel=1e-5)


def test_chunked_logprobs_equal_a_full_softmax(base_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356], [1, 4093, 198, 1780, 314, 2, 2]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    completion = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        chunked = completion_logprobs(model, ids, attention, completion, chunk_tokens=2)
        full = torch.log_softmax(model(input_ids=ids, attention_mask=attention).logits, dim=-1)
    for row in range(2):
        for t in range(1, 7):
            if completion[row, t]:
                assert chunked[row, t].item() == pytest.approx(
                    full[row, t - 1, ids[row, t]].item(), abs=1e-4
                )
            else:
                assert chunked[row, t].item() == 0


def test_gate_decides_both_ways() -> None:
    settings = SlowLoopSettings(margin=0.05, kl_budget=0.2, retention_tolerance=0.1)
    good = {"candidate_reward": 0.6, "live_reward": 0.4, "kl_to_base": 0.05, "retention_drop": 0.0}
    assert gate(good, settings)[0]
    assert not gate({**good, "candidate_reward": 0.42}, settings)[0], "below the margin"
    assert not gate({**good, "candidate_reward": 0.4}, settings)[0], "a tie changes nothing"
    assert not gate({**good, "kl_to_base": 0.5}, settings)[0], "too far from the base"
    refused, reason = gate({**good, "retention_drop": 0.3}, settings)
    assert not refused and "base-skill" in reason
    # A broken measurement (NaN) never promotes.
    for key in ("candidate_reward", "kl_to_base", "retention_drop"):
        assert not gate({**good, key: math.nan}, settings)[0], key


def test_an_anchor_step_pulls_a_drifted_adapter_back_toward_the_base(base_model_dir: Path) -> None:
    from worker.slow.policy import Policy, Sequence

    torch.manual_seed(0)
    policy = Policy(base_model_dir, SlowLoopSettings(learning_rate=5e-3), device="cpu")
    messages: list[ChatMessage] = [{"role": "user", "content": "Where is my order?"}]
    sequences = [
        Sequence(messages, "It ships today.", stopped=True),
        Sequence(messages, "Your order is on its way to you now, it left our store.", stopped=True),
    ]
    batch = policy.batch(sequences)
    assert policy.kl_to_base(batch) == pytest.approx(0.0, abs=1e-6), "a fresh LoRA is the base"
    for _ in range(3):  # reward the short answer: the adapter moves away from the base
        policy.update(sequences, torch.tensor([1.0, -1.0]))
    drifted = policy.kl_to_base(batch)
    assert drifted > 0.05
    metrics = [policy.anchor(sequences) for _ in range(4)]
    assert metrics[0]["kl"] == pytest.approx(drifted, rel=1e-3), "the step's KL is the exact KL"
    assert metrics[0]["loss"] == pytest.approx(0.04 * drifted, rel=1e-3), "scaled by kl_coef"
    assert policy.kl_to_base(batch) < 0.7 * drifted


def test_micro_batches_take_the_same_step_as_the_whole_batch(base_model_dir: Path) -> None:
    from worker.slow.policy import Policy, Sequence

    messages: list[ChatMessage] = [{"role": "user", "content": "Where is my order?"}]
    answers = ["It ships today.", "Your order left our store this morning.", "Soon.", "Sure!"]
    sequences = [Sequence(messages, a, stopped=i != 2) for i, a in enumerate(answers)]
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    steps = {}
    for micro_batch in (0, 1, 3):
        torch.manual_seed(0)
        policy = Policy(base_model_dir, SlowLoopSettings(micro_batch=micro_batch), device="cpu")
        with torch.no_grad():  # away from the base, so the KL term has a gradient too
            for name, weights in policy.model.named_parameters():
                if "lora_B" in name:
                    weights.normal_(0.0, 0.02)
        metrics = policy.update(sequences, advantages)
        # The gradient the optimiser stepped on (after clipping), compared directly: Adam's
        # normalised step would magnify float noise in near-zero entries.
        grads = {
            n: p.grad.detach().clone()
            for n, p in policy.model.named_parameters()
            if p.grad is not None
        }
        steps[micro_batch] = (metrics, grads)
    whole, whole_grads = steps[0]
    assert whole["kl"] > 0
    assert len(whole_grads) > 0
    for micro_batch in (1, 3):
        metrics, grads = steps[micro_batch]
        for key in ("loss", "kl", "grad_norm", "trained_tokens"):
            assert metrics[key] == pytest.approx(whole[key], rel=1e-3, abs=1e-6), key
        assert grads.keys() == whole_grads.keys()
        # Relative to the whole gradient: padding to another width changes float32 sums, which
        # moves a near-cancelling entry by a few 1e-6; a mis-weighted piece is off by percents.
        for name, grad in grads.items():
            error = torch.linalg.vector_norm(grad - whole_grads[name])
            assert error <= 1e-3 * torch.linalg.vector_norm(whole_grads[name]), name


def test_old_logprobs_are_the_pass_own_with_one_pass_and_fixed_before_more(
    base_model_dir: Path,
) -> None:
    """With one pass the importance ratio is exactly 1 (no extra forward); with two, the second
    pass sees weights the first moved, so its ratio to the fixed old log-probs is not 1."""
    from worker.slow.policy import Policy, Sequence

    messages: list[ChatMessage] = [{"role": "user", "content": "Where is my order?"}]
    sequences = [Sequence(messages, a, stopped=True) for a in ("It ships today.", "Soon.")]
    advantages = torch.tensor([1.0, -1.0])
    ratios = {}
    for passes in (1, 2):
        torch.manual_seed(0)
        settings = SlowLoopSettings(updates_per_step=passes, learning_rate=1e-2)
        policy = Policy(base_model_dir, settings, device="cpu")
        ratios[passes] = policy.update(sequences, advantages)["ratio_mean"]
    assert ratios[1] == 1.0
    assert abs(ratios[2] - 1.0) > 1e-4


def test_a_step_trains_on_reward_spread_anchors_when_solved_and_skips_when_all_failed() -> None:
    on, off = SlowLoopSettings(anchor_solved_steps=True), SlowLoopSettings()
    spread = [1.0, 0.0, 1.0, 1.0]
    assert step_kind(spread, group_advantages(torch.tensor(spread), 4), on) == "reward"
    solved, failed, half = [1.0] * 4, [0.0] * 4, [0.5] * 4
    assert step_kind(solved, torch.zeros(4), on) == "anchor"
    assert step_kind(solved, torch.zeros(4), off) == "none"
    assert step_kind(failed, torch.zeros(4), on) == "none"
    assert step_kind(half, torch.zeros(4), on) == "none"


def test_a_checkpointed_state_resumes_the_same_draws_and_contexts() -> None:
    live = Context("Be brief.", [{"role": "user", "content": "q"}], 3)
    state = TrainingState.restore(None, seed=7, contexts=[live])
    assert (state.step, state.contexts, state.curves) == (0, [live], {})
    state.rng.random()
    state.step = 2
    state.contexts = [Context.from_candidate("Refreshed.", "[]")]
    state.record({"reward": 0.5, "loss": 0.1})
    resumed = TrainingState.restore(
        json.loads(json.dumps(state.snapshot())), seed=7, contexts=[live]
    )
    assert (resumed.step, resumed.contexts, resumed.curves) == (2, state.contexts, state.curves)
    assert [resumed.rng.random() for _ in range(3)] == [state.rng.random() for _ in range(3)]
