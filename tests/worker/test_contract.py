"""The job contract (backend/jobs/contract.py): each kind's parameters, the field a bad one
names, one task routed by kind, and what a fast worker imports (no torch, no peft)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from backend.config import Settings
from backend.errors import Invalid
from backend.jobs.contract import (
    QUEUE_OF_KIND,
    REAP_TASK,
    RUN_TASK,
    EvaluateParams,
    JobKind,
    OptimizeParams,
    TrainParams,
    Trigger,
    job_payload,
    stored_params,
    validate_params,
)
from backend.jobs.queue import dispatch_job, make_celery
from tests.support import REPO, free_port


def test_each_kind_has_its_parameters() -> None:
    assert validate_params("evaluate", {}) == EvaluateParams(prompts=None, limit=20, max_tokens=128)
    asked = validate_params(JobKind.EVALUATE, {"prompts": ["Hi?"], "limit": 5, "max_tokens": 9})
    assert isinstance(asked, EvaluateParams)
    assert (asked.prompts, asked.limit, asked.max_tokens) == (["Hi?"], 5, 9)

    admin = validate_params("optimize", {"trigger": "admin"})
    assert admin == OptimizeParams(trigger=Trigger.ADMIN)
    retry_of = uuid.uuid4()
    scheduled = validate_params(
        "train", {"trigger": "schedule", "why": "12 new rollouts", "retry_of": str(retry_of)}
    )
    assert scheduled == TrainParams(
        trigger=Trigger.SCHEDULE, why="12 new rollouts", retry_of=retry_of
    )
    feedback = validate_params("optimize", {"trigger": "feedback", "why": "5 new ratings"})
    assert isinstance(feedback, OptimizeParams) and feedback.trigger == Trigger.FEEDBACK


def test_parameters_stored_before_the_contract_still_validate() -> None:
    """Fast-loop jobs stored their reason as the trigger; retrying one must still work."""
    legacy = validate_params("optimize", {"trigger": "3 new ratings, oldest 0:31:00 ago"})
    assert legacy == OptimizeParams(
        trigger=Trigger.FEEDBACK, why="3 new ratings, oldest 0:31:00 ago"
    )
    assert validate_params("evaluate", {"prompts": None, "limit": 20, "max_tokens": 128})


@pytest.mark.parametrize(
    ("kind", "params", "field", "says"),
    [
        ("evaluate", {"limit": 0}, "limit", "greater than or equal to 1"),
        ("evaluate", {"max_tokens": 5000}, "max_tokens", "less than or equal to 4096"),
        ("evaluate", {"prompts": ["  ", ""]}, "prompts", "at least one non-empty question"),
        ("evaluate", {"prompts": ["ok", 3]}, "prompts[1]", "valid string"),
        ("evaluate", {"prompts": ["x"] * 201}, "prompts", "at most 200"),
        ("evaluate", {"limit": 5, "steps": 3}, "steps", "Extra inputs are not permitted"),
        ("optimize", {}, "trigger", "Field required"),
        ("optimize", {"trigger": "somebody"}, "trigger", "'admin', 'schedule' or 'feedback'"),
        ("train", {"trigger": "admin", "retry_of": "job 7"}, "retry_of", "UUID"),
        ("train", {"trigger": "admin", "budget": 3}, "budget", "Extra inputs"),
        ("cleanup", {}, "kind", "unknown job kind 'cleanup'"),
    ],
)
def test_a_bad_parameter_is_invalid_naming_its_field(
    kind: str, params: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(Invalid) as refused:
        validate_params(kind, params)
    assert refused.value.param == field
    assert field in refused.value.message and says in refused.value.message, refused.value.message
    assert "Value error," not in refused.value.message


def test_stored_parameters_validate_again_as_they_were() -> None:
    for kind, model in (
        ("evaluate", EvaluateParams(prompts=["Hi?"], retry_of=uuid.uuid4())),
        ("optimize", OptimizeParams(trigger=Trigger.FEEDBACK, why="5 new ratings")),
        ("train", TrainParams(trigger=Trigger.ADMIN)),
    ):
        stored = stored_params(validate_params(kind, model))
        assert json.loads(json.dumps(stored)) == stored
        assert validate_params(kind, stored) == model
    assert stored_params(TrainParams(trigger=Trigger.ADMIN)) == {"trigger": "admin"}


def test_one_job_task_routed_to_its_kinds_queue() -> None:
    app = make_celery(Settings(broker_url="memory://"))
    router = app.amqp.router
    for kind, queue in QUEUE_OF_KIND.items():
        route = router.route({}, RUN_TASK, (), job_payload(uuid.uuid4(), kind))
        assert route["queue"].name == queue, kind
    assert router.route({}, REAP_TASK, (), {})["queue"].name == "maintenance"
    assert (QUEUE_OF_KIND[JobKind.EVALUATE], QUEUE_OF_KIND[JobKind.OPTIMIZE]) == ("fast", "fast")
    assert QUEUE_OF_KIND[JobKind.TRAIN] == "train"

    sent: list[tuple[str, dict[str, Any], str]] = []

    def send_task(name: str, *, kwargs: dict[str, Any], queue: str) -> None:
        sent.append((name, kwargs, queue))

    app.send_task = send_task
    job_id = uuid.uuid4()
    dispatch_job(app, job_id=job_id, kind="train")
    assert sent == [(RUN_TASK, {"job_id": str(job_id), "kind": "train"}, "train")]


_HEAVY = ("torch", "peft", "transformers")
_IMPORTS = """
import json, sys
heavy = {heavy!r}
seen = {{}}
import worker.app
from worker.app import celery_app
celery_app.loader.import_default_modules()  # what a starting worker imports: worker.tasks
import worker.tasks
from backend.jobs.contract import RUN_TASK, JobKind
from worker.handlers import load_handler
from worker.resources import resources
assert RUN_TASK in celery_app.tasks
load_handler(JobKind.EVALUATE)
load_handler(JobKind.OPTIMIZE)
res = resources()
engine = res.engine
seen["engine"] = type(engine).__name__
seen["fast"] = sorted(m for m in heavy if m in sys.modules)
fast_handlers = ("worker.evaluation", "worker.fast.optimizer")
seen["fast handlers"] = [m for m in fast_handlers if m in sys.modules]
load_handler(JobKind.TRAIN)
seen["train"] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(seen))
"""


def test_a_fast_worker_imports_no_torch(tmp_path: Path) -> None:
    """In a fresh process set up like a fast worker on vLLM: importing the tasks, loading the
    evaluate and optimize handlers and building the worker's resources (its vLLM engine: nothing
    has to answer) import neither torch nor peft; loading the train handler does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSLOW_")}
    env.update(
        FASTSLOW_DATA_DIR=str(tmp_path),
        FASTSLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'fastslow.db'}",
        FASTSLOW_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        FASTSLOW_ENGINE="vllm",
        FASTSLOW_ENGINE_URL=f"http://127.0.0.1:{free_port()}/v1",  # nobody listens
    )
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS.format(heavy=_HEAVY)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["engine"] == "VllmEngine"
    assert seen["fast handlers"] == ["worker.evaluation", "worker.fast.optimizer"]
    assert seen["fast"] == [], f"a fast worker imported {seen['fast']}"
    assert {"torch", "peft"} <= set(seen["train"]), "the train handler brings the trainer in"


def test_the_contract_imports_no_api_runtime_or_worker_code() -> None:
    code = (
        "import sys, backend.jobs.contract, backend.jobs.models\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'worker', 'torch')\n"
        "       or m.startswith(('backend.api', 'backend.http', 'backend.runtime'))]\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_messages_queued_under_the_old_task_names_still_run() -> None:
    """A version before the single task queued one task name per kind (job id only)."""
    import worker.tasks  # noqa: F401  (registers the tasks)
    from worker.app import celery_app

    for kind in ("evaluate", "optimize", "train"):
        assert f"fastslow.jobs.{kind}" in celery_app.tasks, kind
