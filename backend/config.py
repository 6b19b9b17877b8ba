"""All settings of a fastslow process, read once from `FASTSLOW_*` environment variables.

The defaults are the embedded deployment: a SQLite file and a SQLite-backed Celery transport
under `data_dir`, and the packaged base model served in-process. Production points
`database_url`, `broker_url` and `engine`/`engine_url` at PostgreSQL, Redis and vLLM.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FASTSLOW_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses to start without a platform key (the API also "
        "without a metrics token while metrics are on; `fastslow engine` without an engine key).",
    )
    data_dir: Path = Field(
        Path("data"), description="Where the SQLite files, prepared models and adapters live."
    )
    database_url: str = Field(
        "", description="SQLAlchemy URL; default `sqlite:///<data_dir>/fastslow.db`."
    )
    broker_url: str = Field(
        "",
        description="Celery broker URL; default a server-less SQLite transport "
        "`sqla+sqlite:///<data_dir>/broker.db`. Use `redis://...` in production.",
    )
    engine: Literal["local", "vllm"] = Field(
        "local", description="`local`: transformers+peft in-process; `vllm`: a vLLM server."
    )
    engine_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the vLLM OpenAI-compatible server."
    )
    engine_api_key: SecretStr | None = Field(
        None,
        description="Bearer key for the vLLM server: `fastslow engine` starts vLLM with it "
        "(`VLLM_API_KEY`) and the platform sends it.",
    )
    engine_timeout_s: float = Field(300.0, gt=0, description="Timeout of one engine call.")
    engine_retry_after_s: int = Field(
        5, ge=1, description="`Retry-After` sent with 503 while the engine is unreachable."
    )
    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description="Base model: a name prepared under `<data_dir>/models/` or a local HF "
        "checkpoint directory. Its directory name is the name agents and vLLM use.",
    )
    platform_key: SecretStr | None = Field(
        None, description="Platform-level key that may create tenants over HTTP."
    )
    host: str = Field("127.0.0.1", description="Address `fastslow api`/`up` bind to.")
    port: int = Field(8080, description="Port `fastslow api`/`up` listen on.")
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose `X-Forwarded-Proto`/`-For` `fastslow api` trusts "
        "(uvicorn's `forwarded_allow_ips`: comma-separated addresses or networks, `*`: any).",
    )
    max_request_bytes: int = Field(1_000_000, gt=0, description="Largest accepted request body.")
    max_messages: int = Field(64, gt=0, description="Most messages in one chat request.")
    max_message_chars: int = Field(32_000, gt=0, description="Longest single message.")
    default_max_tokens: int = Field(
        512, gt=0, description="`max_tokens` cap of a new agent unless it sets its own."
    )
    tenant_requests_per_minute: int = Field(
        600,
        ge=0,
        description="Requests a tenant's keys may send per minute, all together, unless the "
        "platform sets the tenant's own limit; 0: no limit.",
    )
    tenant_tokens_per_day: int = Field(
        1_000_000,
        ge=0,
        description="Tokens a tenant's chat requests may use per day (UTC), prompt and "
        "completion tokens together, unless the platform sets the tenant's own quota; "
        "0: no limit.",
    )
    tenant_jobs_per_day: int = Field(
        100,
        ge=0,
        description="Evaluation, optimisation and training jobs a tenant may start per day "
        "(UTC), beat's runs included, unless the platform sets the tenant's own budget; "
        "0: no limit.",
    )
    max_context_tokens: int = Field(
        2048,
        gt=0,
        description="The engine's context window: a chat request's prompt tokens (the agent's "
        "instructions and demonstrations plus the messages) and its `max_tokens` together "
        "must fit, or it is a 400 (`context_length_exceeded`) before the engine sees it. "
        "`fastslow engine` starts vLLM with it as `--max-model-len`.",
    )
    vllm_python: Path = Field(
        Path(".venv-vllm/bin/python"),
        description="Python of the vLLM environment `fastslow engine` runs (`make vllm-env`).",
    )
    vllm_max_loras: int = Field(4, gt=0, description="Adapters vLLM keeps on the device at once.")
    vllm_max_cpu_loras: int = Field(
        32, gt=0, description="Adapters vLLM keeps in its CPU-side cache."
    )
    vllm_extra_args: str = Field("", description="More `vllm serve` flags, space-separated.")
    adapter_store_url: str = Field(
        "",
        description="fsspec URL where adapter versions are stored (e.g. `s3://bucket/adapters`, "
        "needs `s3fs`); empty: `<data_dir>/adapters` (share it between machines as a mount).",
    )
    adapter_cache_dir: Path | None = Field(
        None,
        description="Where adapters from `adapter_store_url` are unpacked for the engine; a "
        "vLLM server on another host must see it. Default `<data_dir>/adapter-cache`.",
    )
    adapter_unload_grace_s: float = Field(
        30.0,
        ge=0,
        description="After a swap, how long the old adapter stays loaded once this process's "
        "requests on it have finished (other replicas may still be finishing theirs).",
    )
    max_lora_rank: int = Field(
        64, gt=0, description="Largest LoRA rank accepted (vLLM's `--max-lora-rank`)."
    )
    max_lora_alpha: float = Field(
        1024.0, gt=0, description="Largest `lora_alpha` accepted in an adapter's config."
    )
    max_adapter_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Largest accepted adapter upload."
    )
    local_engine_max_adapters: int = Field(
        8, gt=0, description="Adapters kept resident by the local engine (LRU)."
    )
    local_engine_max_batch: int = Field(
        32, gt=0, description="Concurrent requests the local engine answers as one batch."
    )
    local_engine_threads: int = Field(
        0, ge=0, description="torch threads of the local engine; 0 keeps torch's default."
    )
    torch_device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where the local engine and the slow-loop trainer run the model: `auto` "
        "(a GPU if torch sees one, bf16; else the CPU, fp32), `cpu`, `cuda` or `cuda:N`.",
    )
    reflection_lm_url: str = Field(
        "",
        description="OpenAI-compatible endpoint of the LM that rewrites prompts and judges "
        "answers (e.g. `https://api.openai.com/v1`); empty: the served base model.",
    )
    reflection_lm_model: str = Field("", description="Model name at `reflection_lm_url`.")
    reflection_lm_api_key: SecretStr | None = Field(
        None, description="API key for `reflection_lm_url`."
    )
    fast_loop_check_interval_s: float = Field(
        10.0, gt=0, description="How often beat looks for agents whose fast loop is due."
    )
    schedule_check_interval_s: float = Field(
        5.0, gt=0, description="How often beat starts the slow-loop runs whose schedule is due."
    )
    job_heartbeat_timeout_s: int = Field(
        600, gt=0, description="A running job silent for longer is marked failed by the reaper."
    )
    job_queue_timeout_s: int = Field(
        6 * 3600, gt=0, description="A job still queued after this long is failed (lost message)."
    )
    reaper_interval_s: float = Field(60.0, gt=0, description="How often beat runs the reaper.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per log line (production); `text`: for people."
    )
    log_calm: bool = Field(
        True,
        description="Text logs at INFO leave beat's ticks, Celery's per-task lines, access lines "
        "and start-up banners at DEBUG (a calm console); the JSON log always has them.",
    )
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at `/metrics`.")
    metrics_token: SecretStr | None = Field(
        None,
        description="If set, `/metrics` requires `Authorization: Bearer <token>`; unset, "
        "`/metrics` shows no series labelled by tenant. Required in production.",
    )
    metrics_db_cache_s: float = Field(
        15.0,
        ge=0,
        description="How long the series read from the database (jobs, live "
        "versions, last runs) are reused between scrapes.",
    )
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port where `fastslow worker` serves its Prometheus metrics; 0: none.",
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        data_dir = self.data_dir.expanduser().resolve()
        self.data_dir = data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / 'fastslow.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{data_dir / 'broker.db'}"
        if self.environment == "production" and not self.platform_key:
            raise ValueError(
                "FASTSLOW_PLATFORM_KEY must be set when FASTSLOW_ENVIRONMENT=production"
            )
        return self

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def adapter_cache_path(self) -> Path:
        return self.adapter_cache_dir or self.data_dir / "adapter-cache"

    @property
    def base_model_path(self) -> Path:
        """The base model's checkpoint directory (a path as given, or a prepared name)."""
        as_path = Path(self.base_model).expanduser()
        if as_path.is_absolute() or as_path.exists():
            return as_path.resolve()
        return self.models_dir / self.base_model

    @property
    def base_model_name(self) -> str:
        """The name agents, rollouts and the vLLM server (`--served-model-name`) use."""
        return self.base_model_path.name


@lru_cache
def get_settings() -> Settings:
    return Settings()
