"""The `local` engine: transformers + peft in this process (the embedded default).

One copy of the base model; LoRA adapters are injected by peft and several stay resident (LRU),
so switching adapter per request costs nothing and never reloads the base. Requests take turns
on one lock: on a few CPU cores a second concurrent forward pass would only slow both down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    TextStreamer,
)

from backend.base_checkpoint import load_causal_lm, torch_device
from backend.engines.base import (
    AdapterLoadError,
    AdapterRef,
    EngineError,
    FinishReason,
    Generation,
    GenerationRequest,
    SamplingParams,
    StreamChunk,
)
from backend.engines.lora import AdapterValidator
from backend.errors import Invalid

logger = logging.getLogger(__name__)


class _Cancelled(StoppingCriteria):
    """Stops generation between two tokens once the consumer has gone away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> bool:
        return self.event.is_set()


class _CallbackStreamer(TextStreamer):
    """TextStreamer that hands each finished piece of text to a callback instead of stdout."""

    def __init__(self, tokenizer: Any, on_text: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)


class StopTrimmer:
    """Streams text while holding back what could still turn out to be a stop sequence.

    OpenAI semantics: the stop sequence and everything after it are never returned.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        cut = self._first_stop()
        if cut is not None:
            self.text = self.text[:cut]
            self.stopped = True
            return self._take(len(self.text))
        hold = max((len(s) - 1 for s in self.stops), default=0)
        return self._take(max(self.emitted, len(self.text) - hold))

    def flush(self) -> str:
        return self._take(len(self.text))

    def _first_stop(self) -> int | None:
        found = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        return min(found) if found else None

    def _take(self, upto: int) -> str:
        piece = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return piece


@dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future[Generation]
    loop: asyncio.AbstractEventLoop


def _batch_key(request: GenerationRequest) -> tuple[str | None, SamplingParams]:
    return (request.adapter.name if request.adapter else None, request.sampling)


def _resolve(future: asyncio.Future[Generation], outcome: Generation | BaseException) -> None:
    if future.cancelled():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class LocalEngine:
    def __init__(
        self,
        model_path: Path,
        served_name: str,
        *,
        max_adapters: int = 8,
        max_batch: int = 32,
        threads: int = 0,
        device: str = "auto",
        adapter_validator: AdapterValidator | None = None,
    ) -> None:
        if not (model_path / "config.json").exists():
            raise EngineError(
                f"no model checkpoint at {model_path}; run `fastslow model prepare` "
                "or set FASTSLOW_BASE_MODEL to a local checkpoint directory"
            )
        if threads:
            torch.set_num_threads(threads)
        self._name = served_name
        # transformers' types are looser than its behaviour; keep these two as Any.
        self._tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
        self._tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        self._device = torch_device(device)
        self._base: Any = load_causal_lm(model_path, self._device)
        self._base.eval()
        self._peft: Any = None  # PeftModel once the first adapter is loaded
        self._resident: OrderedDict[str, str] = OrderedDict()
        self._max_adapters = max_adapters
        self._validator = adapter_validator or AdapterValidator.for_base_model(model_path)
        self._checked: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._pending_ready = threading.Condition()
        self._batcher: threading.Thread | None = None

    @property
    def base_model(self) -> str:
        return self._name

    # -- adapters -------------------------------------------------------------------------

    async def load_adapter(self, adapter: AdapterRef) -> None:
        await asyncio.to_thread(self._load_adapter_sync, adapter)

    async def unload_adapter(self, name: str) -> None:
        await asyncio.to_thread(self._unload_adapter_sync, name)

    async def list_adapters(self) -> list[str]:
        with self._lock:
            return list(self._resident)

    def _check(self, adapter: AdapterRef) -> None:
        """Validate an adapter's files, once per name and path (a stored version never
        changes): peft would obey them as configuration, so only checked LoRA data is loaded."""
        key = (adapter.name, adapter.path)
        if key in self._checked:
            return
        try:
            self._validator.validate(Path(adapter.path))
        except Invalid as exc:
            raise AdapterLoadError(f"adapter {adapter.name} refused: {exc.message}") from exc
        self._checked.add(key)

    def _load_adapter_sync(self, adapter: AdapterRef) -> None:
        self._check(adapter)
        with self._lock:
            self._ensure_resident(adapter)

    def _ensure_resident(self, adapter: AdapterRef) -> None:
        """Load `adapter` if needed and mark it recently used. Caller holds the lock."""
        if adapter.name in self._resident:
            self._resident.move_to_end(adapter.name)
            return
        self._check(adapter)  # a no-op: both callers checked it before taking the lock
        while len(self._resident) >= self._max_adapters:
            oldest = next(iter(self._resident))
            self._drop(oldest)
        try:
            from peft import PeftModel

            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self._base, adapter.path, adapter_name=adapter.name, is_trainable=False
                )
                self._peft.eval()
            else:
                self._peft.load_adapter(adapter.path, adapter_name=adapter.name, is_trainable=False)
        except Exception as exc:
            # peft may have registered the name before failing; leave no half-loaded adapter.
            if self._peft is not None and adapter.name in self._peft.peft_config:
                self._peft.delete_adapter(adapter.name)
            raise AdapterLoadError(f"cannot load adapter {adapter.name}: {exc}") from exc
        self._resident[adapter.name] = adapter.path
        logger.info("loaded adapter %s from %s", adapter.name, adapter.path)

    def _unload_adapter_sync(self, name: str) -> None:
        with self._lock:
            if name in self._resident:
                self._drop(name)

    def _drop(self, name: str) -> None:
        self._peft.delete_adapter(name)
        del self._resident[name]
        if not self._resident:
            # peft keeps pointing at the deleted adapter; with none left, take the LoRA layers
            # out again so the base model serves exactly as before any adapter was loaded.
            self._base = self._peft.unload()
            self._peft = None

    # -- generation -----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        """Concurrent requests with the same adapter and sampling run as one batch: on a CPU
        a batch of 8 costs far less than 8 single generations. A lone request runs at once."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Generation] = loop.create_future()
        with self._pending_ready:
            self._pending.append(_Pending(request, future, loop))
            if self._batcher is None:
                self._batcher = threading.Thread(
                    target=self._batch_forever, name="local-engine-batcher", daemon=True
                )
                self._batcher.start()
            self._pending_ready.notify()
        return await future

    def _batch_forever(self) -> None:
        while True:
            with self._pending_ready:
                while not self._pending:
                    self._pending_ready.wait()
                key = _batch_key(self._pending[0].request)
                batch = [p for p in self._pending if _batch_key(p.request) == key]
                batch = batch[: self._max_batch]
                for item in batch:
                    self._pending.remove(item)
            try:
                results: list[Generation] | BaseException = self._generate_batch(
                    [item.request for item in batch]
                )
            except BaseException as exc:
                results = exc
            for i, item in enumerate(batch):
                outcome = results if isinstance(results, BaseException) else results[i]
                with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                    item.loop.call_soon_threadsafe(_resolve, item.future, outcome)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamChunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | Generation | BaseException] = asyncio.Queue()
        cancel = threading.Event()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def run() -> None:
            try:
                result: Generation | BaseException = self._generate_checked(
                    request, on_text, cancel
                )
            except BaseException as exc:
                result = exc
            # RuntimeError: the loop is gone (shutdown); nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, result)

        loop.run_in_executor(None, run)
        trimmer = StopTrimmer(request.sampling.stop)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Generation):
                    tail = trimmer.flush()
                    if tail:
                        yield StreamChunk(tail)
                    yield StreamChunk("", generation=item)
                    return
                piece = trimmer.feed(item)
                if piece:
                    yield StreamChunk(piece)
        finally:
            # A consumer that stops early (client disconnect) ends the generation too.
            cancel.set()

    def _generate_checked(
        self, request: GenerationRequest, on_text: Any, cancel: threading.Event
    ) -> Generation:
        return self._generate_batch([request], on_text=on_text, cancel=cancel)[0]

    def _generate_batch(
        self,
        requests: list[GenerationRequest],
        *,
        on_text: Any = None,
        cancel: threading.Event | None = None,
    ) -> list[Generation]:
        try:
            return self._generate_batch_unchecked(requests, on_text, cancel)
        except EngineError:
            raise
        except Exception as exc:  # torch/tokenizer failures surface as engine errors
            raise EngineError(f"generation failed: {exc}") from exc

    def _generate_batch_unchecked(
        self,
        requests: list[GenerationRequest],
        on_text: Any,
        cancel: threading.Event | None,
    ) -> list[Generation]:
        """Generate for requests that share adapter and sampling, as one padded batch."""
        first = requests[0]
        sampling = first.sampling
        prompts = [
            self._tokenizer.apply_chat_template(
                list(r.messages), add_generation_prompt=True, tokenize=False
            )
            for r in requests
        ]
        inputs = self._tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self._device)
        width = int(inputs["input_ids"].shape[1])
        prompt_lens = [int(n) for n in inputs["attention_mask"].sum(dim=1)]
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "pad_token_id": self._tokenizer.pad_token_id,
        }
        if cancel is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancel)])
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self._tokenizer)
        if on_text is not None:
            kwargs["streamer"] = _CallbackStreamer(self._tokenizer, on_text)

        if first.adapter is not None:
            self._check(first.adapter)  # outside the lock: other tenants keep being served
        with self._lock, torch.inference_mode():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            if first.adapter is not None:
                self._ensure_resident(first.adapter)
                self._peft.set_adapter(first.adapter.name)
                output = self._peft.generate(**inputs, **kwargs)
            elif self._peft is not None:
                with self._peft.disable_adapter():
                    output = self._peft.generate(**inputs, **kwargs)
            else:
                output = self._base.generate(**inputs, **kwargs)

        ends = self._eos_ids() | {self._tokenizer.pad_token_id}
        results = []
        for row, prompt_len in zip(output, prompt_lens, strict=True):
            tokens = row[width:].tolist()
            # A finished row goes on with padding: keep up to its end-of-sequence token.
            end = next((i for i, t in enumerate(tokens) if t in ends), None)
            if end is not None:
                tokens = tokens[: end + 1]
            text = self._tokenizer.decode(tokens, skip_special_tokens=True)
            stopped = end is not None or len(tokens) < sampling.max_tokens
            if sampling.stop:
                trimmer = StopTrimmer(sampling.stop)
                trimmer.feed(text)
                if trimmer.stopped:
                    text, stopped = trimmer.text, True
            finish: FinishReason = "stop" if stopped else "length"
            results.append(
                Generation(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=prompt_len,
                    completion_tokens=len(tokens),
                )
            )
        return results

    def _eos_ids(self) -> set[int]:
        eos = self._base.generation_config.eos_token_id
        if eos is None:
            return set()
        return set(eos) if isinstance(eos, list) else {int(eos)}

    async def health(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
