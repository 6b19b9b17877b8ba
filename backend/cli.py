"""`fastslow`: run and administer the platform. Every command reads the same FASTSLOW_* settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

import backend.models  # noqa: F401  (every model mapped before the first query)
from backend.config import Settings, get_settings

app = typer.Typer(
    help="fastslow: agents that keep learning from the people who use them.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
key_app = typer.Typer(help="API keys of a tenant.", no_args_is_help=True)
model_app = typer.Typer(help="The base model.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")
app.add_typer(model_app, name="model")


def _logging() -> None:
    from backend.observability.logging import configure_logging

    configure_logging(get_settings())


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# -- serving -------------------------------------------------------------------------------


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address [FASTSLOW_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [FASTSLOW_PORT].")] = None,
    workers: Annotated[int, typer.Option(help="API processes (vLLM engine only).")] = 1,
) -> None:
    """Run the HTTP API (OpenAI-compatible chat at /v1, admin at /api/v1)."""
    import uvicorn

    from backend.observability.logging import logging_config
    from backend.observability.multiprocess import enable_multiprocess_metrics

    settings = get_settings()
    if workers > 1 and settings.engine == "local":
        raise typer.BadParameter("the local engine lives in one process; use --workers 1")
    from backend.observability.api import check_metrics_settings

    try:
        check_metrics_settings(settings)  # before the worker processes start, not in each
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if workers > 1:
        enable_multiprocess_metrics("api")  # /metrics adds up all API processes
    uvicorn.run(
        "backend.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        # `X-Forwarded-Proto: https` from these proxies makes the request `https` (HSTS).
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_config=logging_config(settings),  # applied in each API process
        access_log=False,  # `fastslow.access` logs requests with their ids
    )


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Queues to consume.")] = "fast,train,maintenance",
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run a Celery worker (learning jobs)."""
    from backend.observability.multiprocess import enable_multiprocess_metrics

    _logging()
    settings = get_settings()
    if settings.worker_metrics_port:
        # Before anything imports prometheus_client: jobs run in forked children.
        enable_multiprocess_metrics("worker")
        from backend.observability.worker import serve_worker_metrics

        serve_worker_metrics(settings.worker_metrics_port)
    from worker.app import celery_app

    celery_app.start(
        [
            *_quiet(settings),
            "worker",
            *("-Q", queues, "-c", str(concurrency), "--loglevel", "INFO", "-n", _node()),
        ]
    )


def _quiet(settings: Settings) -> list[str]:
    """Celery's start-up banner is for operators reading a log, not for a calm console."""
    from backend.observability.logging import calm_console

    return ["--quiet"] if calm_console(settings) else []


def _node() -> str:
    return f"fastslow-{uuid.uuid4().hex[:8]}@%h"


@app.command()
def beat(
    schedule_file: Annotated[
        str | None, typer.Option(help="Beat's own state file [<data_dir>/celerybeat-schedule].")
    ] = None,
) -> None:
    """Run Celery beat: schedules, fast-loop triggers, the reaper. One is enough; a second
    one is harmless (each occurrence is claimed once in the database)."""
    from worker.app import celery_app

    _logging()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    state = schedule_file or str(settings.data_dir / "celerybeat-schedule")
    celery_app.start([*_quiet(settings), "beat", "-s", state, "--loglevel", "INFO"])


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Bind address [FASTSLOW_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [FASTSLOW_PORT].")] = None,
) -> None:
    """Migrate, prepare the model, then run API + worker + beat until Ctrl-C."""
    _logging()
    settings = get_settings()
    _prepare(settings)
    host, port = host or settings.host, port or settings.port
    me = [sys.executable, "-m", "backend.cli"]
    children = [
        subprocess.Popen([*me, "worker"]),
        subprocess.Popen([*me, "beat"]),
        subprocess.Popen([*me, "api", "--host", host, "--port", str(port)]),
    ]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        _wait_healthy(url, children)
        typer.echo(f"\nfastslow is up at {url}  (OpenAI base URL: {url}/v1; Ctrl-C stops)\n")
        while all(child.poll() is None for child in children):
            time.sleep(1)
        stopped = [str(c.args) for c in children if c.poll() is not None]
        typer.echo(f"stopping: a process exited ({', '.join(stopped)})", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def _wait_healthy(url: str, children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            typer.echo("error: a process exited while starting; see its output above", err=True)
            raise typer.Exit(1)
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    typer.echo(f"error: the API did not answer at {url} within 5 minutes", err=True)
    raise typer.Exit(1)


def _prepare(settings: Settings) -> None:
    from backend import migrate
    from backend.base_checkpoint import prepare_base_model

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    if settings.engine == "local":
        path = prepare_base_model(settings)
        typer.echo(f"base model ready at {path}")


@app.command()
def engine(
    host: Annotated[str, typer.Option(help="Bind address of the vLLM server.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the vLLM server.")] = 8000,
) -> None:
    """Run a vLLM server for the base model with runtime LoRA loading (FASTSLOW_ENGINE=vllm)."""
    from backend.engines.vllm_server import vllm_launch

    settings = get_settings()
    if settings.environment != "development" and not settings.engine_api_key:
        # vLLM's API loads adapters from any path it can read: never open outside development.
        typer.echo(
            "error: FASTSLOW_ENGINE_API_KEY must be set when FASTSLOW_ENVIRONMENT=production",
            err=True,
        )
        raise typer.Exit(1)
    if not settings.vllm_python.exists():
        typer.echo(f"error: no vLLM environment at {settings.vllm_python}; run `make vllm-env`")
        raise typer.Exit(1)
    launch = vllm_launch(settings, host=host, port=port)
    os.execve(launch.argv[0], launch.argv, {**os.environ, **launch.env})


@app.command()
def demo(
    preset: Annotated[str, typer.Option(help="cpu (a few minutes) or gpu.")] = "cpu",
    url: Annotated[
        str | None, typer.Option(help="A running platform; default: start one here.")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Admin key for --url.")] = None,
    port: Annotated[int, typer.Option(help="Port of the platform the demo starts.")] = 8090,
    preference: Annotated[
        str, typer.Option(help="The users' hidden preference: short, starts-with, ...")
    ] = "short",
    train: Annotated[bool, typer.Option(help="Run the slow loop too.")] = True,
    train_steps: Annotated[
        int | None, typer.Option(help="RL steps of the slow loop (default: the preset's).")
    ] = None,
    questions: Annotated[int | None, typer.Option(help="Questions per phase.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the questions and the users.")] = 0,
    plot_file: Annotated[str, typer.Option("--plot", help="Where to write the PNG.")] = "demo.png",
) -> None:
    """Simulated users teach an agent: fast loop, then slow loop; prints a table and plots."""
    import dataclasses

    from backend.simulation.demo import PRESETS, DemoClient, plot, run_demo, table
    from backend.simulation.platform import Platform, start_platform
    from backend.simulation.users import PREFERENCES

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}: {', '.join(PRESETS)}")
    if preference not in PREFERENCES:
        raise typer.BadParameter(f"unknown preference {preference!r}: {', '.join(PREFERENCES)}")
    config = dataclasses.replace(
        PRESETS[preset],
        preference=preference,
        seed=seed,
        slow_loop=_slow_loop(PRESETS[preset].slow_loop, train_steps) if train else None,
        questions_per_phase=questions or PRESETS[preset].questions_per_phase,
    )
    platform: Platform | None = None
    try:
        if url is None:
            settings = get_settings()
            typer.echo(f"starting the platform (log: {settings.data_dir / 'platform.log'})")
            platform = start_platform(settings.data_dir, port)
            url, key = platform.url, platform.create_tenant()
        elif key is None:
            raise typer.BadParameter("--key is needed with --url")
        typer.echo(f"web UI: {url}  (sign in with {key})")
        result = run_demo(
            DemoClient(url, key), config, slug=f"demo-{uuid.uuid4().hex[:6]}", say=typer.echo
        )
        typer.echo("\n" + table(result))
        typer.echo(f"\nplot: {plot(result, Path(plot_file))}")
    finally:
        if platform is not None:
            platform.stop()


def _slow_loop(preset: dict[str, Any] | None, steps: int | None) -> dict[str, Any] | None:
    if preset is None or steps is None:
        return preset
    return {**preset, "steps": steps}


@app.command()
def openapi() -> None:
    """Print the API's OpenAPI schema (the web UI's typed client is generated from it)."""
    from backend.app import create_app

    typer.echo(json.dumps(create_app(get_settings()).openapi(), indent=2, sort_keys=True))


# -- database ------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from backend import migrate

    migrate.upgrade(get_settings().database_url, revision)


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` removes everything)."""
    from backend import migrate

    migrate.downgrade(get_settings().database_url, revision)


# -- tenants and keys ----------------------------------------------------------------------


@tenant_app.command("create")
def tenant_create(name: str) -> None:
    """Create tenant NAME; prints its id and an admin key (shown once)."""
    from backend.db import Database
    from backend.errors import DomainError
    from backend.tenants.service import create_tenant

    database = Database(get_settings().database_url)
    try:
        with database.session() as session:
            tenant, issued = create_tenant(session, name=name)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    _print_json({"tenant_id": str(tenant.id), "name": tenant.name, "admin_key": issued.plaintext})


@tenant_app.command("list")
def tenant_list() -> None:
    """List tenants."""
    from backend.db import Database
    from backend.tenants.service import list_tenants

    database = Database(get_settings().database_url)
    with database.session() as session:
        rows = [{"tenant_id": str(t.id), "name": t.name} for t in list_tenants(session)]
    database.dispose()
    _print_json(rows)


@key_app.command("create")
def key_create(
    tenant_id: Annotated[str, typer.Option("--tenant-id", help="The tenant's id.")],
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create an API key for a tenant; prints it (shown once)."""
    from backend.db import Database
    from backend.errors import DomainError
    from backend.tenants.models import Role
    from backend.tenants.service import create_api_key

    try:
        parsed_role = Role(role)
        parsed_tenant = uuid.UUID(tenant_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    database = Database(get_settings().database_url)
    try:
        with database.session() as session:
            issued = create_api_key(session, tenant_id=parsed_tenant, role=parsed_role, name=name)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    _print_json({"key_id": str(issued.api_key.id), "role": role, "key": issued.plaintext})


# -- model ---------------------------------------------------------------------------------


@model_app.command("prepare")
def model_prepare(
    force: Annotated[bool, typer.Option(help="Convert again even if present.")] = False,
) -> None:
    """Convert the packaged SmolLM2-135M-Instruct into a checkpoint under the data dir."""
    from backend.base_checkpoint import ModelPrepareError, prepare_base_model

    _logging()
    try:
        path = prepare_base_model(get_settings(), force=force)
    except ModelPrepareError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(str(path))


if __name__ == "__main__":
    app()
