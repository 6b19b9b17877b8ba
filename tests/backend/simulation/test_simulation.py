"""The simulator: reproducible question sets and user feedback for a seed, and the demo."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

from backend.simulation import PREFERENCES, Preference, UserModel, question_set, split
from backend.simulation.users import JsonAnswer, MentionsOrder, ShortAnswers, StartsWith
from tests.support import VENV_BIN, free_port


def test_question_sets_are_realistic_and_reproducible() -> None:
    questions = question_set(300, seed=3)
    assert len(questions) == 300
    assert len({q.text for q in questions}) == 300
    assert question_set(300, seed=3) == questions
    assert question_set(300, seed=4) != questions
    asked, held_out = split(questions)
    assert 0.1 < len(held_out) / len(questions) < 0.3
    assert not {q.text for q in asked} & {q.text for q in held_out}
    with_orders = [q for q in questions if "order" in q.entities]
    assert with_orders and all(q.entities["order"] in q.text for q in with_orders)
    assert {q.category for q in questions} >= {"orders", "returns", "shipping", "payments"}


def test_preferences_check_complain_and_correct() -> None:
    question = next(q for q in question_set(50, seed=1) if "order" in q.entities)
    long = "Thank you for reaching out to us about your order, we will look into it very soon."
    cases: list[Preference] = [ShortAnswers(12), StartsWith("Sure"), MentionsOrder(), JsonAnswer()]
    for preference in cases:
        assert not preference.satisfied(question, long), preference.name
        fixed = preference.corrected(question, long)
        assert preference.satisfied(question, fixed), (preference.name, fixed)
        assert preference.complaint(question, long)
        assert "type" in preference.reward_check()
    assert set(PREFERENCES) == {"short", "starts-with", "mentions-order", "json"}


def test_user_feedback_is_reproducible_for_a_seed_and_noisy() -> None:
    questions = question_set(200, seed=0)
    answers = ["Sure, it ships today." if i % 3 else "A long answer " * 5 for i in range(200)]

    def run(seed: int) -> list[object]:
        users = UserModel(ShortAnswers(12), seed=seed)
        return [
            users.feedback(q, f"c{i}", a)
            for i, (q, a) in enumerate(zip(questions, answers, strict=True))
        ]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    skipped = sum(f is None for f in first)
    assert 0 < skipped < 60, "some users do not rate"
    rated = [f for f in first if isinstance(f, dict)]
    bad = [f for f in rated if f["score"] == -1]
    assert any("comment" in f for f in bad) and any("correction" in f for f in bad)
    assert any("comment" not in f for f in bad), "comments are frequent, not universal"
    long_answers = [i for i in range(200) if i % 3 == 0 and isinstance(first[i], dict)]
    inconsistent = [i for i in long_answers if first[i]["score"] == 1]  # type: ignore[index]
    assert len(inconsistent) < len(long_answers) / 4, "noise stays noise"


@pytest.mark.slow
def test_demo_runs_and_the_fast_loop_improves_satisfaction(
    tmp_path: Path, base_model_dir: Path
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FASTSLOW_DATABASE_URL", "FASTSLOW_BROKER_URL", "FASTSLOW_ENGINE")
    }
    env.update(FASTSLOW_DATA_DIR=str(tmp_path / "data"), FASTSLOW_BASE_MODEL=str(base_model_dir))
    plot = tmp_path / "demo.png"
    done = subprocess.run(
        [
            str(VENV_BIN / "fastslow"),
            "demo",
            "--port",
            str(free_port()),
            # The demo's own default. With 12 the validation split can be two questions; one of
            # the seeded users' ratings is inconsistent (+1 for a long answer), and where it
            # lands there the seed scores 0.5, which no candidate beat in a CI run.
            "--questions",
            "16",
            "--train-steps",
            "1",
            "--plot",
            str(plot),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    rates = {
        line.split("]")[0].strip("["): int(line.rsplit(" ", 1)[1].rstrip("%"))
        for line in out.splitlines()
        if line.startswith("[") and "satisfaction" in line
    }
    assert set(rates) == {"before", "after fast loop", "after slow loop"}, out
    assert rates["after fast loop"] > rates["before"], out
    assert "fast loop: promoted" in out, out
    # The slow loop ran to a gate decision (a failed run prints "None (None)" and KL nan).
    slow = re.search(r"^slow loop: (promoted|kept) \((.+)\); KL to base (\d+\.\d+)", out, re.M)
    assert slow, out
    outcome, reason, kl = slow.group(1), slow.group(2), float(slow.group(3))
    assert math.isfinite(kl) and kl >= 0, out
    if outcome == "promoted":
        before, after = map(float, re.findall(r"\d+\.\d+", reason)[:2])
        assert after > before, reason
    else:
        assert any(why in reason for why in ("does not beat", "KL to the base", "base-skill"))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.dumps(rates)
