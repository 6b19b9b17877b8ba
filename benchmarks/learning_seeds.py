"""Summarise several runs of `benchmarks/learning.py` (seeds, with and without the flat-step
anchor): one line per run and the mean per variant, so a claim rests on more than one seed.

Run: .venv/bin/python benchmarks/learning_seeds.py benchmarks/results/learning-cpu-*-seed*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

COLUMNS = (
    ("rollout_ratio_rl_over_fst", "RL/FST rollouts"),
    ("kl_ratio_fst_over_rl_at_rl_best", "KL FST/RL matched"),
    ("kl_ratio_fst_over_rl", "KL FST/RL end"),
    ("rl_kl", "KL RL"),
    ("fst_kl", "KL FST"),
    ("rl_facts", "facts RL"),
    ("fst_facts", "facts FST"),
)


def row(result: dict[str, Any]) -> dict[str, float | None]:
    arms = result["arms"]
    return {
        "rollout_ratio_rl_over_fst": result["rollout_ratio_rl_over_fst"],
        "kl_ratio_fst_over_rl_at_rl_best": result.get("kl_ratio_fst_over_rl_at_rl_best"),
        "kl_ratio_fst_over_rl": result["kl_ratio_fst_over_rl"],
        "rl_kl": arms["rl"]["kl_to_base"],
        "fst_kl": arms["fst"]["kl_to_base"],
        "rl_facts": arms["rl"]["fact_accuracy"],
        "fst_facts": arms["fst"]["fact_accuracy"],
    }


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    variants: dict[str, list[dict[str, float | None]]] = defaultdict(list)
    header = f"{'variant':10} {'seed':>4} " + " ".join(f"{label:>17}" for _, label in COLUMNS)
    print(header)
    for path in sorted(args.results):
        result = json.loads(path.read_text())
        config = result["config"]
        variant = "anchor" if config.get("anchor_solved_steps", False) else "no-anchor"
        values = row(result)
        variants[variant].append(values)
        print(
            f"{variant:10} {config['seed']:>4} "
            + " ".join(f"{cell(values[key]):>17}" for key, _ in COLUMNS)
        )
    for variant, rows in sorted(variants.items()):
        means = {}
        for key, _ in COLUMNS:
            present = [value for r in rows if (value := r[key]) is not None]
            means[key] = statistics.fmean(present) if present else None
        print(
            f"{variant + ' mean':15} "
            + " ".join(f"{cell(means[key]):>17}" for key, _ in COLUMNS)
            + f"   ({len(rows)} seeds)"
        )


if __name__ == "__main__":
    main()
