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
from torch.utils.checkpoint import checkpoint
from transformers import AutoTokenizer

from backend.agents.schemas import SlowLoopSettings
from backend.base_checkpoint import load_causal_lm, torch_device
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
        optimizer_dir: Path | None = None,
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
        params = self._trainable()
        self.optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        # Anchor steps have their own state: the reward steps' momentum would carry on in
        # their direction, and beta x KL's small gradient could not turn it for several steps
        # (benchmarks/kl_anchor.py, lr 1e-3, kl_coef 0.04: KL 0.68 -> 0.80 after one step with
        # a shared state, -> 0.15 with its own).
        self.anchor_optimizer = torch.optim.AdamW(
            params, lr=settings.learning_rate, weight_decay=0.0
        )
        for optimizer, name in self._optimizers():
            state = optimizer_dir / name if optimizer_dir is not None else None
            if state is not None and state.exists():
                optimizer.load_state_dict(
                    torch.load(state, weights_only=True, map_location=self.device)
                )

    def _optimizers(self) -> list[tuple[torch.optim.Optimizer, str]]:
        return [(self.optimizer, "optimizer.pt"), (self.anchor_optimizer, "anchor_optimizer.pt")]

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

        def chunk_kl(tuned_chunk: torch.Tensor, plain_chunk: torch.Tensor) -> torch.Tensor:
            log_p = torch.log_softmax(head(tuned_chunk).float(), dim=-1)
            with torch.no_grad():
                log_q = torch.log_softmax(head(plain_chunk).float(), dim=-1)
            return (log_p.exp() * (log_p - log_q)).sum()

        total = tuned.new_zeros((), dtype=torch.float32)
        for start in range(0, tuned.shape[0], CHUNK_TOKENS):
            chunk = (tuned[start : start + CHUNK_TOKENS], plain[start : start + CHUNK_TOKENS])
            if torch.is_grad_enabled():
                # Recomputed in the backward pass: a chunk's vocabulary-wide tensors (49k
                # entries per token) are not kept for it.
                part = checkpoint(chunk_kl, *chunk, use_reentrant=False)
            else:
                part = chunk_kl(*chunk)
            total = total + part
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

    def _micro_batches(
        self, sequences: list[Sequence], advantages: torch.Tensor
    ) -> list[tuple[Batch, torch.Tensor]]:
        """The step's batch in pieces of `micro_batch` sequences: activation memory grows with
        the piece, not the batch, and gradients accumulate to the same step."""
        size = self.settings.micro_batch or len(sequences)
        return [
            (self.batch(sequences[i : i + size]), advantages[i : i + size].to(self.device))
            for i in range(0, len(sequences), size)
        ]

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def update(self, sequences: list[Sequence], advantages: torch.Tensor) -> dict[str, float]:
        """One step of the objective on a batch (`updates_per_step` passes)."""
        s = self.settings
        pieces = self._micro_batches(sequences, advantages)
        # With one pass the weights that score the answers are the ones that sampled them:
        # the old log-probs are this pass's own, detached (as TRL does), not another forward.
        on_policy = s.updates_per_step == 1
        with torch.no_grad():
            fixed = [
                (None if on_policy else self.logprobs(b), self.logprobs(b, adapter=False))
                for b, _ in pieces
            ]
        # Each piece's token-mean loss, weighted by its share of the batch's completion tokens,
        # sums to the whole batch's token mean: the same step whatever the piece size.
        total = max(sum(b.completion_tokens for b, _ in pieces), 1)
        last: dict[str, float] = {}
        for _ in range(s.updates_per_step):
            self.optimizer.zero_grad(set_to_none=True)
            sums = dict.fromkeys(
                ("loss", "policy_loss", "kl", "clipped_fraction", "ratio_mean"), 0.0
            )
            for (batch, adv), (old, ref) in zip(pieces, fixed, strict=True):
                share = batch.completion_tokens / total
                logp = self.logprobs(batch)
                parts = policy_loss(
                    logp,
                    logp.detach() if old is None else old,
                    ref,
                    adv,
                    batch.completion_mask,
                    algorithm=s.algorithm,
                    kl_coef=s.kl_coef,
                    clip_ratio_max=s.clip_ratio_max,
                    clip_epsilon=s.clip_epsilon,
                )
                (parts.loss * share).backward()  # type: ignore[no-untyped-call]
                sums["loss"] += share * float(parts.loss.detach())
                sums["policy_loss"] += share * parts.policy
                sums["kl"] += share * parts.kl
                sums["clipped_fraction"] += share * parts.clipped_fraction
                sums["ratio_mean"] += share * parts.ratio_mean
            grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable(), 1.0)
            self.optimizer.step()
            last = {**sums, "grad_norm": float(grad_norm)}
        last["trained_tokens"] = float(sum(b.tokens for b, _ in pieces) * s.updates_per_step)
        return last

    def anchor(self, sequences: list[Sequence]) -> dict[str, float]:
        """A step on `kl_coef` x the exact KL to the base alone, for a batch whose answers all
        earned the full reward: the objective's reward term has no gradient there, so this is
        the whole gradient of reward - beta x KL. It pulls the weights back toward the base
        while the contexts keep the reward (the k3 estimate on the sampled tokens would push
        them away: benchmarks/kl_anchor.py)."""
        s = self.settings
        pieces = self._micro_batches(sequences, torch.zeros(len(sequences)))
        total = max(sum(b.completion_tokens for b, _ in pieces), 1)
        last: dict[str, float] = {}
        for _ in range(s.updates_per_step):
            self.anchor_optimizer.zero_grad(set_to_none=True)
            kl = 0.0
            for batch, _ in pieces:
                share = batch.completion_tokens / total
                piece = self.exact_kl(batch)
                (s.kl_coef * share * piece).backward()  # type: ignore[no-untyped-call]
                kl += share * float(piece.detach())
            grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable(), 1.0)
            self.anchor_optimizer.step()
            last = {"loss": s.kl_coef * kl, "kl": kl, "grad_norm": float(grad_norm)}
        last["trained_tokens"] = float(sum(b.tokens for b, _ in pieces) * s.updates_per_step)
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
        for optimizer, name in self._optimizers():
            torch.save(optimizer.state_dict(), staging / name)
        (staging / "state.json").write_text(json.dumps(state))
        if directory.exists():
            old = directory.with_name(directory.name + ".old")
            directory.rename(old)
            staging.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(directory)
