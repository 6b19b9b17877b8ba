"""Does the KL term pull a drifted adapter back when a step carries no reward signal?

On the real base model, side by side in one run: a fresh LoRA is pushed away from the base for
3 steps (one question; a short answer rewarded over a long one), then takes steps where every
answer scores alike, so only the KL term acts. After each step the exact KL(policy || base)
over the vocabulary is measured. The KL term is the k3 estimate on the sampled tokens (the
trainer's reward steps, and TRL's) or the exact KL over the vocabulary (`Policy.anchor`, the
trainer's optional `anchor_solved_steps`), in the drift steps and in the flat steps separately.

Why: this is how the form of that anchor was chosen (docs/slow-loop.md): what taking a flat
step does with each form of the penalty.

Run: .venv/bin/python benchmarks/kl_anchor.py [--lr 5e-3 1e-3] [--kl-coef 1] [--flat-steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Literal

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.agents.schemas import SlowLoopSettings  # noqa: E402
from backend.engines import ChatMessage  # noqa: E402
from worker.slow.loss import policy_loss  # noqa: E402
from worker.slow.policy import Policy, Sequence  # noqa: E402

BASE_MODEL = os.environ.get(
    "FASTSLOW_BASE_MODEL", str(REPO / "data" / "models" / "SmolLM2-135M-Instruct")
)
MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Where is my order?"}]
ANSWERS = ["It ships today.", "Your order is on its way to you now, it left our store."]
Penalty = Literal["k3", "exact"]


def step(policy: Policy, sequences: list[Sequence], advantages: torch.Tensor, kl: Penalty) -> None:
    if kl == "k3":
        policy.update(sequences, advantages)  # the trainer's reward step
        return
    if not advantages.any():
        policy.anchor(sequences)  # the trainer's flat step
        return
    batch = policy.batch(sequences)
    with torch.no_grad():
        old = policy.logprobs(batch)
    policy.optimizer.zero_grad(set_to_none=True)
    logp = policy.logprobs(batch)
    pg = policy_loss(
        logp, old, old, advantages, batch.completion_mask, algorithm="cispo", kl_coef=0.0
    )
    loss = pg.loss + policy.settings.kl_coef * policy.exact_kl(batch)
    loss.backward()  # type: ignore[no-untyped-call]
    params = [p for p in policy.model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    policy.optimizer.step()


def run(lr: float, kl_coef: float, drift: Penalty, flat: Penalty, flat_steps: int) -> list[float]:
    torch.manual_seed(0)
    settings = SlowLoopSettings(learning_rate=lr, kl_coef=kl_coef, seed=0)
    policy = Policy(Path(BASE_MODEL), settings, device="cpu")
    sequences = [Sequence(MESSAGES, answer, stopped=True) for answer in ANSWERS]
    batch = policy.batch(sequences)
    for _ in range(3):
        step(policy, sequences, torch.tensor([1.0, -1.0]), drift)
    kls = [policy.kl_to_base(batch)]
    for _ in range(flat_steps):
        step(policy, sequences, torch.zeros(len(sequences)), flat)
        kls.append(policy.kl_to_base(batch))
    return kls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, nargs="+", default=[5e-3, 1e-3])
    parser.add_argument("--kl-coef", type=float, default=1.0)
    parser.add_argument("--flat-steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = []
    print(f"{'lr':>7} {'drift':>6} {'flat':>6}  exact KL after drift -> after flat steps")
    for lr in args.lr:
        for drift in ("k3", "exact"):
            for flat in ("k3", "exact"):
                kls = run(lr, args.kl_coef, drift, flat, args.flat_steps)
                rows.append({"lr": lr, "drift": drift, "flat": flat, "kl": kls})
                print(
                    f"{lr:>7.0e} {drift:>6} {flat:>6}  {kls[0]:.2f} -> {kls[-1]:.2f}  "
                    f"({' '.join(f'{k:.2f}' for k in kls)})",
                    flush=True,
                )
    if args.out:
        args.out.write_text(json.dumps({"kl_coef": args.kl_coef, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
