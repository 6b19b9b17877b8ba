"""The engine contract, run against the local engine and a real vLLM server alike.

Reference outputs come from plain transformers (+ peft) with greedy decoding: an engine that
serves an adapter must produce exactly what peft computes with that adapter, which proves the
adapter is really applied (a LoRA with B = 0 would prove nothing: these have B != 0).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from backend.engines import (
    AdapterLoadError,
    AdapterRef,
    ChatMessage,
    Engine,
    GenerationRequest,
    SamplingParams,
)
from tests.support import make_lora, reference_generate

pytestmark = pytest.mark.anyio

QUESTION: list[ChatMessage] = [{"role": "user", "content": "What is the capital of France?"}]
SUPPORT: list[ChatMessage] = [
    {"role": "system", "content": "You are a support agent. Begin with 'Certainly:'."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "Certainly: it ships tomorrow."},
    {"role": "user", "content": "Can I change the address?"},
]
MAX_TOKENS = 16


def greedy(
    messages: list[ChatMessage],
    adapter: AdapterRef | None = None,
    *,
    max_tokens: int = MAX_TOKENS,
    stop: tuple[str, ...] = (),
) -> GenerationRequest:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop)
    return GenerationRequest(messages=messages, sampling=params, adapter=adapter)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("contract-loras")
    return {
        "a": make_lora(base_model_dir, root / "a", seed=1),
        "b": make_lora(base_model_dir, root / "b", seed=2),
    }


@pytest.fixture(scope="module")
def references(base_model_dir: Path, adapters: dict[str, Path]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for which, path in (("base", None), ("a", adapters["a"]), ("b", adapters["b"])):
        for name, messages in (("question", QUESTION), ("support", SUPPORT)):
            turns = [{"role": m["role"], "content": m["content"]} for m in messages]
            out[(which, name)] = reference_generate(base_model_dir, turns, MAX_TOKENS, path)
    return out


def ref(adapters: dict[str, Path], which: str) -> AdapterRef:
    # A fresh name per test: names are never reused, as in production.
    return AdapterRef(name=f"test-{which}-{uuid.uuid4().hex[:8]}", path=str(adapters[which]))


async def test_base_model_matches_transformers(
    engine: Engine, references: dict[tuple[str, str], str]
) -> None:
    for name, messages in (("question", QUESTION), ("support", SUPPORT)):
        generation = await engine.generate(greedy(messages))
        assert generation.text == references[("base", name)], name
        assert generation.prompt_tokens > 0
        assert 0 < generation.completion_tokens <= MAX_TOKENS


async def test_stream_yields_the_same_text(engine: Engine) -> None:
    whole = await engine.generate(greedy(SUPPORT))
    pieces: list[str] = []
    final = None
    async for chunk in engine.stream(greedy(SUPPORT)):
        assert final is None, "nothing may follow the final chunk"
        pieces.append(chunk.text)
        final = chunk.generation
    assert final is not None
    assert "".join(pieces) == whole.text == final.text
    assert final.completion_tokens == whole.completion_tokens
    assert final.finish_reason == whole.finish_reason


async def test_length_and_stop(engine: Engine) -> None:
    short = await engine.generate(greedy(QUESTION, max_tokens=3))
    assert short.finish_reason == "length"
    assert short.completion_tokens == 3
    full = await engine.generate(greedy(QUESTION))
    stop = full.text[4:7]
    cut = await engine.generate(greedy(QUESTION, stop=(stop,)))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    streamed = "".join([c.text async for c in engine.stream(greedy(QUESTION, stop=(stop,)))])
    assert streamed == cut.text


async def test_adapters_are_applied_and_switch_per_request(
    engine: Engine, adapters: dict[str, Path], references: dict[tuple[str, str], str]
) -> None:
    a, b = ref(adapters, "a"), ref(adapters, "b")
    await engine.load_adapter(a)
    await engine.load_adapter(b)
    await engine.load_adapter(a)  # loading a resident name again is a no-op
    assert {a.name, b.name} <= set(await engine.list_adapters())
    for name, messages in (("question", QUESTION), ("support", SUPPORT)):
        with_a = await engine.generate(greedy(messages, a))
        with_b = await engine.generate(greedy(messages, b))
        base = await engine.generate(greedy(messages))
        assert with_a.text == references[("a", name)], name
        assert with_b.text == references[("b", name)], name
        assert base.text == references[("base", name)], name
    assert references[("a", "question")] != references[("base", "question")]
    assert references[("b", "question")] != references[("a", "question")]
    await engine.unload_adapter(a.name)
    await engine.unload_adapter(a.name)  # unloading twice is a no-op
    await engine.unload_adapter(b.name)
    remaining = set(await engine.list_adapters())
    assert a.name not in remaining and b.name not in remaining


async def test_unknown_adapter_is_loaded_on_first_use(
    engine: Engine, adapters: dict[str, Path], references: dict[tuple[str, str], str]
) -> None:
    """What a restarted engine relies on: requests name adapters it has never seen."""
    a = ref(adapters, "a")
    generation = await engine.generate(greedy(QUESTION, a))
    assert generation.text == references[("a", "question")]
    b = ref(adapters, "b")
    streamed = "".join([c.text async for c in engine.stream(greedy(QUESTION, b))])
    assert streamed == references[("b", "question")]
    await engine.unload_adapter(a.name)
    await engine.unload_adapter(b.name)


async def test_missing_adapter_fails_cleanly(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(AdapterLoadError):
        await engine.load_adapter(
            AdapterRef(name=f"missing-{uuid.uuid4().hex[:6]}", path=str(tmp_path))
        )
    assert (await engine.generate(greedy(QUESTION, max_tokens=2))).completion_tokens == 2
    await engine.health()


async def test_an_adapter_that_is_not_plain_lora_data_is_refused(
    engine: Engine,
    adapters: dict[str, Path],
    references: dict[tuple[str, str], str],
    tmp_path: Path,
) -> None:
    """A tensor outside the LoRA matrices (here the base model's final norm, negated) would
    change every tenant's answers once loaded: each engine refuses it, on load and on first
    use, and the base model serves exactly as before."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    hostile = tmp_path / "hostile"
    shutil.copytree(adapters["a"], hostile)
    weights = load_file(str(hostile / "adapter_model.safetensors"))
    weights["base_model.model.model.norm.weight"] = -torch.ones(576)
    save_file(weights, str(hostile / "adapter_model.safetensors"))
    regex = tmp_path / "regex"
    shutil.copytree(adapters["a"], regex)
    config = json.loads((regex / "adapter_config.json").read_text())
    (regex / "adapter_config.json").write_text(json.dumps({**config, "target_modules": "(.*)*z"}))
    for directory in (hostile, regex):
        bad = AdapterRef(name=f"hostile-{uuid.uuid4().hex[:6]}", path=str(directory))
        with pytest.raises(AdapterLoadError, match="refused"):
            await engine.load_adapter(bad)
        with pytest.raises(AdapterLoadError, match="refused"):
            await engine.generate(greedy(QUESTION, bad))
        assert bad.name not in await engine.list_adapters()
    assert (await engine.generate(greedy(QUESTION))).text == references[("base", "question")]
