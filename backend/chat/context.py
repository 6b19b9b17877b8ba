"""The context cap of a chat request: how many tokens its prompt has, and whether it fits.

The prompt is what the engine reads: the agent's instructions and demonstrations plus the
request's messages, through the base model's chat template. It is counted with the base model's
own tokenizer, loaded once per process from the checkpoint directory (the files the `local`
engine and vLLM load), so the count is the engine's. A request that does not fit is refused
before the engine sees it: a prompt over the agent's own cap (`max_prompt_tokens`), or a
prompt plus `max_tokens` over the engine's window (`FASTSLOW_MAX_CONTEXT_TOKENS`, vLLM's
`--max-model-len`).
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.engines import ChatMessage
from backend.errors import ContextTooLong

logger = logging.getLogger(__name__)

# Only where no tokenizer can be loaded (an API process that cannot see the checkpoint): an
# upper bound, never an under-count. A byte-level BPE token (SmolLM2, Llama, Qwen, GPT-2...)
# covers at least one UTF-8 byte, and a chat template adds a handful of tokens per message.
ESTIMATE_TOKENS_PER_MESSAGE = 16

# Fast tokenizers are Rust objects that must not be used from two threads at once.
_lock = threading.Lock()


@lru_cache(maxsize=4)
def _tokenizer(model_path: str) -> Any:
    """The base model's tokenizer, or None if it cannot be loaded (cached either way)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:  # a missing or unreadable checkpoint: fall back to the bound
        logger.warning(
            "no tokenizer at %s (%s): prompt tokens are estimated from UTF-8 bytes, an upper bound",
            model_path,
            exc,
        )
        return None


def estimate_prompt_tokens(messages: list[ChatMessage]) -> int:
    """An upper bound on the prompt's tokens for byte-level BPE tokenizers."""
    return sum(len(m["content"].encode()) + ESTIMATE_TOKENS_PER_MESSAGE for m in messages) + (
        ESTIMATE_TOKENS_PER_MESSAGE
    )


def count_prompt_tokens(model_path: Path, messages: list[ChatMessage]) -> int:
    """The prompt's tokens as the engine reads them: the chat template with the generation
    prompt, tokenized as the local engine does (no extra special tokens)."""
    tokenizer = _tokenizer(str(model_path))
    if tokenizer is None:
        return estimate_prompt_tokens(messages)
    with _lock:
        text = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_max_tokens(
    *,
    agent_slug: str,
    prompt_tokens: int,
    requested_max_tokens: int | None,
    max_tokens_cap: int,
    max_prompt_tokens: int | None,
    max_context_tokens: int,
) -> int:
    """The `max_tokens` to generate with, or ContextTooLong (400 on `/v1`) when the request
    does not fit. Without a requested `max_tokens`, the agent's cap shrinks to what is left of
    the window (as vLLM does); a requested one that does not fit is refused (as OpenAI does)."""
    what = (
        f"the prompt has {prompt_tokens} tokens (agent instructions, demonstrations and messages)"
    )
    if max_prompt_tokens is not None and prompt_tokens > max_prompt_tokens:
        raise ContextTooLong(
            f"{what}; agent {agent_slug!r} allows at most {max_prompt_tokens} prompt tokens "
            "(its max_prompt_tokens): shorten the messages",
            param="messages",
        )
    room = max_context_tokens - prompt_tokens
    if room < 1:
        raise ContextTooLong(
            f"{what}; the maximum context length is {max_context_tokens} tokens, prompt and "
            "completion together: shorten the messages",
            param="messages",
        )
    if requested_max_tokens is None:
        return min(max_tokens_cap, room)
    if requested_max_tokens > room:
        raise ContextTooLong(
            f"{what} and max_tokens is {requested_max_tokens}: "
            f"{prompt_tokens + requested_max_tokens} tokens in all, but the maximum context "
            f"length is {max_context_tokens} tokens: shorten the messages or max_tokens",
            param="messages",
        )
    return requested_max_tokens
