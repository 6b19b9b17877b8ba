"""Memory of one slow-loop training step, by `micro_batch` (answers per forward/backward pass).

Each configuration runs in a fresh process (peak resident memory cannot be reset within one):
the real base model with the trainer's LoRA, a batch shaped like a slow-loop step (questions x G
answers, each behind a context with demonstrations, as the population's are), one warm-up step,
then timed steps. Reported per configuration: peak resident memory of the process, how much of
it the step added over the loaded model, the step time, and the ratios to the whole batch at
once; on a GPU, peak allocated device memory too. Configurations alternate over rounds, so the
step-time ratio is measured side by side.

Run: .venv/bin/python benchmarks/trainer_memory.py [--micro-batch 0 8 4 1] [--answers 16]
Writes benchmarks/results/trainer_memory-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE_MODEL = os.environ.get(
    "FASTSLOW_BASE_MODEL", str(REPO / "data" / "models" / "SmolLM2-135M-Instruct")
)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(micro_batch: int, answers: int, answer_words: int, steps: int) -> dict[str, Any]:
    import torch

    from backend.agents.schemas import SlowLoopSettings
    from backend.engines import ChatMessage
    from backend.simulation import SUPPORT_QUESTIONS
    from worker.slow.policy import Policy, Sequence

    torch.manual_seed(0)
    settings = SlowLoopSettings(micro_batch=micro_batch, learning_rate=1e-4)
    policy = Policy(Path(BASE_MODEL), settings)
    loaded = peak_rss_mb()
    demonstrations: list[ChatMessage] = []
    for question in SUPPORT_QUESTIONS[:4]:
        demonstrations += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Sure. " + "We will sort that out for you. " * 4},
        ]
    system: ChatMessage = {
        "role": "system",
        "content": "You are a helpful customer support agent. Answer briefly and kindly; "
        "start with 'Sure'; never promise refunds you cannot give.",
    }
    sequences = [
        Sequence(
            [
                system,
                *demonstrations,
                {"role": "user", "content": SUPPORT_QUESTIONS[i % len(SUPPORT_QUESTIONS)]},
            ],
            " ".join(["word"] * answer_words),
            stopped=i % 2 == 0,
        )
        for i in range(answers)
    ]
    advantages = torch.tensor([1.0 if i % 2 else -1.0 for i in range(answers)])
    cuda = policy.device.type == "cuda"
    policy.update(sequences, advantages)  # warm-up
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        policy.update(sequences, advantages)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    batch = policy.batch(sequences)
    return {
        "micro_batch": micro_batch,
        "tokens": batch.tokens,
        "completion_tokens": batch.completion_tokens,
        "loaded_rss_mb": loaded,
        "peak_rss_mb": peak_rss_mb(),
        "step_rss_mb": peak_rss_mb() - loaded,
        "step_s": statistics.median(times),
        "device": str(policy.device),
        "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--micro-batch", type=int, nargs="+", default=[0, 8, 4, 1])
    parser.add_argument("--answers", type=int, default=16, help="questions x G in one step")
    parser.add_argument("--answer-words", type=int, default=40)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.answers, args.answer_words, args.steps)))
        return
    runs: dict[int, list[dict[str, Any]]] = {m: [] for m in args.micro_batch}
    for _ in range(args.rounds):
        for micro_batch in args.micro_batch:
            command = [
                sys.executable,
                __file__,
                "--child",
                str(micro_batch),
                "--answers",
                str(args.answers),
                "--answer-words",
                str(args.answer_words),
                "--steps",
                str(args.steps),
            ]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[micro_batch].append(json.loads(out.strip().splitlines()[-1]))
    first = runs[args.micro_batch[0]]
    reference = {
        "step_rss_mb": statistics.median(r["step_rss_mb"] for r in first),
        "step_s": statistics.median(r["step_s"] for r in first),
    }
    rows = []
    print(
        f"{args.answers} answers a step, {first[0]['tokens']} tokens "
        f"({first[0]['completion_tokens']} of them answers), on {first[0]['device']}"
    )
    print(
        f"{'micro_batch':>11} {'peak RSS MB':>12} {'step adds MB':>13} {'x':>6} "
        f"{'step s':>8} {'x':>6} {'device MB':>10}"
    )
    for micro_batch, measured in runs.items():
        row = {
            "micro_batch": micro_batch,
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in measured),
            "step_rss_mb": statistics.median(r["step_rss_mb"] for r in measured),
            "step_s": statistics.median(r["step_s"] for r in measured),
            "peak_device_mb": measured[0]["peak_device_mb"],
        }
        row["memory_ratio"] = row["step_rss_mb"] / max(reference["step_rss_mb"], 1e-9)
        row["time_ratio"] = row["step_s"] / reference["step_s"]
        rows.append(row)
        device = row["peak_device_mb"]
        print(
            f"{micro_batch or 'all':>11} {row['peak_rss_mb']:>12.0f} {row['step_rss_mb']:>13.0f} "
            f"{row['memory_ratio']:>6.2f} {row['step_s']:>8.2f} {row['time_ratio']:>6.2f} "
            f"{'-' if device is None else f'{device:.0f}':>10}"
        )
    result = {
        "date": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": {k: v for k, v in vars(args).items() if k != "child"},
        "rows": rows,
        "runs": {str(k): v for k, v in runs.items()},
    }
    folder = REPO / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"trainer_memory-{datetime.now(UTC).strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
