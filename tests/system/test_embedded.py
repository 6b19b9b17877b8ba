"""The README's embedded deployment: `fastslow up` with no server at all (SQLite database,
SQLite Celery transport, the packaged model in-process), and `fastslow model prepare`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import psutil
from openai import OpenAI

from backend.base_checkpoint import is_prepared
from tests.support import VENV_BIN, Process, free_port, wait_until

SERVER_VARS = ("FASTSLOW_DATABASE_URL", "FASTSLOW_BROKER_URL", "FASTSLOW_ENGINE")


def test_model_prepare_converts_the_packaged_gguf(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FASTSLOW_BASE_MODEL"}
    env["FASTSLOW_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [str(VENV_BIN / "fastslow"), "model", "prepare"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert done.stdout.strip().endswith(str(target))
    assert is_prepared(target)
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config
    assert [p.name for p in target.parent.iterdir()] == [target.name], "no staging left behind"


def test_up_runs_everything_on_embedded_defaults(tmp_path: Path, base_model_dir: Path) -> None:
    port = free_port()
    env = {"FASTSLOW_DATA_DIR": str(tmp_path), "FASTSLOW_BASE_MODEL": str(base_model_dir)}
    up = Process(
        "up", [str(VENV_BIN / "fastslow"), "up", "--port", str(port)], env, unset=SERVER_VARS
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: up.logged("fastslow is up at") or not up.alive,
            timeout=240,
            what="fastslow up",
        )
        assert up.alive, up.log_tail()
        assert up.logged(f"fastslow is up at {url}"), up.log_tail()
        assert (tmp_path / "fastslow.db").exists()

        cli_env = {k: v for k, v in {**os.environ, **env}.items() if k not in SERVER_VARS}
        created = subprocess.run(
            [str(VENV_BIN / "fastslow"), "tenant", "create", "acme"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["admin_key"]
        headers = {"Authorization": f"Bearer {key}"}
        httpx.post(
            f"{url}/api/v1/agents",
            json={"slug": "support", "system_prompt": "Be kind."},
            headers=headers,
        ).raise_for_status()
        client = OpenAI(base_url=f"{url}/v1", api_key=key, timeout=60)
        answer = client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert answer.choices[0].message.content

        job = httpx.post(
            f"{url}/api/v1/agents/support/evaluate", json={"max_tokens": 4}, headers=headers
        ).json()

        def done() -> bool:
            status = httpx.get(f"{url}/api/v1/jobs/{job['id']}", headers=headers).json()
            return bool(status["status"] == "succeeded")

        wait_until(done, timeout=180, interval=0.5, what="the job on the embedded worker")
        assert httpx.get(f"{url}/readyz").json()["checks"]["broker"] == "ok"
        assert httpx.get(url).status_code == 200  # the UI placeholder

        children = psutil.Process(up.popen.pid).children(recursive=True)
        assert len(children) >= 3  # api, worker, beat
        up.popen.terminate()  # SIGTERM to `up` alone: it must stop what it started
        up.popen.wait(timeout=60)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], f"still running after up stopped: {alive}"
    finally:
        up.stop(timeout=60)
