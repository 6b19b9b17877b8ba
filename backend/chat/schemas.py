"""The OpenAI chat-completions wire format, as much of it as fastslow serves."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # `developer` is OpenAI's newer name for `system`.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    @property
    def engine_role(self) -> Literal["system", "user", "assistant"]:
        return "system" if self.role == "developer" else self.role


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """Unknown OpenAI parameters are ignored, as most OpenAI-compatible servers do; those that
    would change the answer's meaning if ignored (tools, n > 1, logprobs) are refused."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200, description="The agent's slug.")
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    # The range engines accept (a 64-bit seed); beyond it the engine would fail the request.
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    user: str | None = Field(None, max_length=256)
    tools: list[dict[str, Any]] | None = None
    logprobs: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4 or any(not s or len(s) > 200 or "\x00" in s for s in stops):
            raise ValueError(
                "stop takes up to 4 non-empty sequences of at most 200 characters, without NUL"
            )
        return value

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.tools:
            raise ValueError("tools are not supported by this server yet")
        if self.logprobs:
            raise ValueError("logprobs are not supported by this server")
        if self.messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        for message in self.messages[1:]:
            if message.role in ("system", "developer"):
                raise ValueError("a system message may only come first")
        return self

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
