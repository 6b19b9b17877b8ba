"""The local engine answers concurrent requests as one batch, with the same answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from backend.engines import GenerationRequest, SamplingParams
from backend.engines.local import LocalEngine

pytestmark = pytest.mark.anyio

QUESTIONS = [
    "Where is my order #10001?",
    "Can I return my shoes?",
    "Hi",
    "Is there a discount for students? I study at the University of Oslo.",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_concurrent_requests_batch_to_the_same_answers(local_engine: LocalEngine) -> None:
    requests = [
        GenerationRequest(
            [{"role": "user", "content": q}], SamplingParams(max_tokens=24, temperature=0.0)
        )
        for q in QUESTIONS
    ]
    started = time.perf_counter()
    one_by_one = [await local_engine.generate(r) for r in requests]
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    together = await asyncio.gather(*(local_engine.generate(r) for r in requests))
    batched = time.perf_counter() - started
    assert [g.text for g in together] == [g.text for g in one_by_one]
    assert [g.completion_tokens for g in together] == [g.completion_tokens for g in one_by_one]
    assert [g.finish_reason for g in together] == [g.finish_reason for g in one_by_one]
    assert [g.prompt_tokens for g in together] == [g.prompt_tokens for g in one_by_one]
    # Not a benchmark (see benchmarks/), only a sign that batching happened at all.
    assert batched < sequential
