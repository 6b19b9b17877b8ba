"""The model being trained: the base model with a LoRA adapter (peft), its optimiser, and the
measurements the slow loop needs from it (log-probs, KL to the base, perplexity). The base
model is the same weights with the adapter disabled: there is no second copy."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer

from backend.agents.schemas import SlowLoopSettings
from backend.basemodel import load_causal_lm, torch_device
from backend.engines import ChatMessage
from worker.slow.loss import completion_logprobs, policy_loss

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHUNK_TOKENS = 256


@dataclass(frozen=True)
class Sequence:
    """A prompt (the context and question, as the engine saw them) and one answer."""

    messages: list[ChatMessage]
    answer: str
    stopped: bool  # the model ended the answer itself (so its end-of-turn token is trained too)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor

    @property
    def completion_tokens(self) -> int:
        return int(self.completion_mask.sum())

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


class Policy:
    def __init__(
        self,
        base_model: Path,
        settings: SlowLoopSettings,
        *,
        init_adapter: Path | None = None,
        optimizer_state: Path | None = None,
        device: str = "auto",
    ) -> None:
        self.settings = settings
        self.device = torch_device(device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
        model: Any = load_causal_lm(base_model, self.device)
        if init_adapter is not None:
            # Continue from the live (or checkpointed) adapter: its rank and targets.
            self.model: Any = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        else:
            config = LoraConfig(
                r=settings.lora_rank,
                lora_alpha=settings.lora_alpha,
                lora_dropout=0.0,
                target_modules=TARGET_MODULES,
            )
            self.model = get_peft_model(model, config)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        if optimizer_state is not None and optimizer_state.exists():
            self.optimizer.load_state_dict(
                torch.load(optimizer_state, weights_only=True, map_location=self.device)
            )

    # -- data -----------------------------------------------------------------------------

    def batch(self, sequences: list[Sequence]) -> Batch:
        rows: list[tuple[list[int], int]] = []
        eos = self.tokenizer.eos_token_id
        for seq in sequences:
            prompt = self.tokenizer.apply_chat_template(
                list(seq.messages), add_generation_prompt=True, tokenize=False
            )
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = self.tokenizer(seq.answer, add_special_tokens=False)["input_ids"]
            if seq.stopped:
                answer_ids = [*answer_ids, eos]
            rows.append((prompt_ids + answer_ids, len(prompt_ids)))
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        completion = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, prompt_len) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            completion[i, prompt_len : len(ids)] = 1
        device = self.device
        return Batch(input_ids.to(device), attention.to(device), completion.to(device))

    # -- measurements ---------------------------------------------------------------------

    def logprobs(self, batch: Batch, *, adapter: bool = True) -> torch.Tensor:
        args = (self.model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        if adapter:
            return completion_logprobs(*args, chunk_tokens=CHUNK_TOKENS)
        with self.model.disable_adapter():
            return completion_logprobs(*args, chunk_tokens=CHUNK_TOKENS)

    def exact_kl(self, batch: Batch) -> torch.Tensor:
        """Mean per-token KL(policy || base) over the whole vocabulary, on completion tokens;
        differentiable through the adapter (the base side is computed without gradients)."""
        base = self.model.get_base_model()
        targets = batch.completion_mask[:, 1:].bool()

        def states() -> torch.Tensor:
            out = base.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            hidden: torch.Tensor = out.last_hidden_state[:, :-1][targets]
            return hidden

        tuned = states()
        with torch.no_grad(), self.model.disable_adapter():
            plain = states()
        head = base.get_output_embeddings()
        total = tuned.new_zeros((), dtype=torch.float32)
        for start in range(0, tuned.shape[0], CHUNK_TOKENS):
            log_p = torch.log_softmax(head(tuned[start : start + CHUNK_TOKENS]).float(), dim=-1)
            with torch.no_grad():
                log_q = torch.log_softmax(head(plain[start : start + CHUNK_TOKENS]).float(), dim=-1)
            total = total + (log_p.exp() * (log_p - log_q)).sum()
        return total / max(tuned.shape[0], 1)

    @torch.no_grad()
    def kl_to_base(self, batch: Batch) -> float:
        """`exact_kl` as a number, for the assessment."""
        return float(self.exact_kl(batch))

    @torch.no_grad()
    def perplexity(self, texts: list[str], *, adapter: bool) -> float:
        """Perplexity of plain text (no chat template), the adapter on or off."""
        nll, count = 0.0, 0
        for text in texts:
            ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            ids = ids.to(self.device)
            mask = torch.ones_like(ids)
            logp = self.logprobs(Batch(ids, mask, mask), adapter=adapter)
            nll -= float(logp[:, 1:].sum())
            count += ids.shape[1] - 1
        return math.exp(nll / max(count, 1))

    # -- training ------------------------------------------------------------------------

    def update(self, sequences: list[Sequence], advantages: torch.Tensor) -> dict[str, float]:
        """One step of the objective on a batch (`updates_per_step` passes)."""
        s = self.settings
        batch = self.batch(sequences)
        advantages = advantages.to(self.device)
        with torch.no_grad():
            old = self.logprobs(batch)
            ref = self.logprobs(batch, adapter=False)
        last: dict[str, float] = {}
        for _ in range(s.updates_per_step):
            self.optimizer.zero_grad(set_to_none=True)
            parts = policy_loss(
                self.logprobs(batch),
                old,
                ref,
                advantages,
                batch.completion_mask,
                algorithm=s.algorithm,
                kl_coef=s.kl_coef,
                clip_ratio_max=s.clip_ratio_max,
                clip_epsilon=s.clip_epsilon,
            )
            parts.loss.backward()  # type: ignore[no-untyped-call]
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], 1.0
            )
            self.optimizer.step()
            last = {
                "loss": float(parts.loss.detach()),
                "policy_loss": parts.policy,
                "kl": parts.kl,
                "clipped_fraction": parts.clipped_fraction,
                "ratio_mean": parts.ratio_mean,
                "grad_norm": float(grad_norm),
            }
        last["trained_tokens"] = float(batch.tokens * s.updates_per_step)
        return last

    # -- persistence ---------------------------------------------------------------------

    def save_adapter(self, directory: Path) -> Path:
        self.model.save_pretrained(str(directory))
        return directory

    def save_checkpoint(self, directory: Path, state: dict[str, Any]) -> None:
        """Adapter, optimiser and loop state, written next to the old checkpoint and swapped
        in, so a crash mid-save leaves the previous checkpoint whole."""
        staging = directory.with_name(directory.name + ".new")
        staging.mkdir(parents=True, exist_ok=True)
        self.save_adapter(staging / "adapter")
        torch.save(self.optimizer.state_dict(), staging / "optimizer.pt")
        (staging / "state.json").write_text(json.dumps(state))
        if directory.exists():
            old = directory.with_name(directory.name + ".old")
            directory.rename(old)
            staging.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(directory)
