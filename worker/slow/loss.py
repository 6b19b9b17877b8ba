"""The slow loop's objective, as pure tensor functions (tested against hand-computed numbers).

For a group of G answers to one question with rewards r_i:
    A_i = (r_i - mean(r)) / (std(r) + eps)                     group-normalised advantage
Per completion token t of answer i, with rho_t = pi(y_t) / pi_old(y_t):
    CISPO: l_t = -sg(min(rho_t, tau)) * A_i * log pi(y_t)      (importance weight clipped from
                                                                above and detached)
    GRPO:  l_t = -min(rho_t * A_i, clip(rho_t, 1-eps, 1+eps) * A_i)
    KL:    k_t = exp(q_t - log pi(y_t)) - (q_t - log pi(y_t)) - 1, q_t = log pi_base(y_t)
           (the non-negative k3 estimator of KL(pi || pi_base); pi_base is the same model
           with the adapter disabled)
    loss = sum_t (l_t + beta * k_t) / number of completion tokens in the batch
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

ADVANTAGE_EPS = 1e-6


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Rewards of consecutive groups of `group_size` answers -> advantages (same shape).
    A group whose answers all scored the same carries no signal: its advantages are 0."""
    groups = rewards.view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, unbiased=False, keepdim=True)
    return ((groups - mean) / (std + ADVANTAGE_EPS)).view(-1)


@dataclass(frozen=True)
class LossParts:
    loss: torch.Tensor
    policy: float
    kl: float
    clipped_fraction: float
    ratio_mean: float


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    algorithm: Literal["cispo", "grpo"],
    kl_coef: float,
    clip_ratio_max: float = 2.0,
    clip_epsilon: float = 0.2,
) -> LossParts:
    """All tensors [batch, tokens]; `advantages` [batch]; `mask` 1 on completion tokens."""
    mask = mask.to(logp.dtype)
    adv = advantages.unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    if algorithm == "cispo":
        weight = torch.clamp(ratio, max=clip_ratio_max).detach()
        per_token = -weight * adv * logp
        clipped = (ratio > clip_ratio_max).to(logp.dtype)
    else:
        unclipped = ratio * adv
        clipped_term = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * adv
        per_token = -torch.minimum(unclipped, clipped_term)
        clipped = (clipped_term < unclipped).to(logp.dtype)
    delta = ref_logp - logp
    kl = torch.exp(delta) - delta - 1
    tokens = mask.sum().clamp(min=1)
    policy = (per_token * mask).sum() / tokens
    kl_mean = (kl * mask).sum() / tokens
    return LossParts(
        loss=policy + kl_coef * kl_mean,
        policy=float(policy.detach()),
        kl=float(kl_mean.detach()),
        clipped_fraction=float(((clipped * mask).sum() / tokens).detach()),
        ratio_mean=float(((ratio * mask).sum() / tokens).detach()),
    )


def completion_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    chunk_tokens: int = 256,
) -> torch.Tensor:
    """log pi(token) of every completion token, [batch, tokens] (0 elsewhere).

    Memory: the vocabulary (49k entries) times every position would dominate, so the output
    layer runs only on completion positions, a chunk at a time. `model` is a causal LM (a peft
    model works: its adapter applies, or not inside `disable_adapter()`).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    # The state at position t predicts token t + 1.
    targets = completion_mask[:, 1:].bool()
    states = hidden[:, :-1][targets]
    next_tokens = input_ids[:, 1:][targets]
    head = base.get_output_embeddings()
    pieces = []
    for start in range(0, states.shape[0], chunk_tokens):
        logits = head(states[start : start + chunk_tokens]).float()
        chosen = logits.gather(1, next_tokens[start : start + chunk_tokens].unsqueeze(1))
        pieces.append(chosen.squeeze(1) - torch.logsumexp(logits, dim=1))
    flat = torch.cat(pieces) if pieces else states.new_zeros(0)
    out = torch.zeros(input_ids.shape, dtype=flat.dtype, device=flat.device)
    out[:, 1:][targets] = flat
    return out
