"""The web UI in a real browser (Debian's Chromium, driven by Playwright) against the real
platform on its embedded default (`fastslow up`: SQLite, worker, beat, the real model).

Screenshots of every page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from backend.simulation import SimQuestion
from tests.support import ARTIFACTS, REPO, VENV_BIN, Process, free_port, wait_until
from tests.worker.fast.support import QUESTIONS, REWARD, USER

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("FASTSLOW_CHROMIUM", "/usr/bin/chromium")
SHOTS = ARTIFACTS / "screenshots"
SERVER_VARS = ("FASTSLOW_DATABASE_URL", "FASTSLOW_BROKER_URL", "FASTSLOW_ENGINE")


@dataclass(frozen=True)
class Platform:
    url: str
    admin_key: str
    member_key: str


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Iterator[Platform]:
    if not (REPO / "frontend" / "dist" / "index.html").exists():
        pytest.fail("the web UI is not built: run `make frontend` (make test does)")
    data = tmp_path_factory.mktemp("ui")
    port = free_port()
    env = {"FASTSLOW_DATA_DIR": str(data), "FASTSLOW_BASE_MODEL": str(base_model_dir)}
    up = Process(
        "up-ui", [str(VENV_BIN / "fastslow"), "up", "--port", str(port)], env, unset=SERVER_VARS
    )
    try:
        wait_until(
            lambda: up.logged("fastslow is up at") or not up.alive,
            timeout=300,
            what="fastslow up",
        )
        assert up.alive, up.log_tail()
        cli_env = {k: v for k, v in {**os.environ, **env}.items() if k not in SERVER_VARS}
        out = subprocess.run(
            [str(VENV_BIN / "fastslow"), "tenant", "create", "acme"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
        )
        created = json.loads(out.stdout)
        member = subprocess.run(
            [
                str(VENV_BIN / "fastslow"),
                "key",
                "create",
                "--tenant-id",
                created["tenant_id"],
                "--role",
                "member",
                "--name",
                "support desk",
            ],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
        )
        yield Platform(
            f"http://127.0.0.1:{port}", created["admin_key"], json.loads(member.stdout)["key"]
        )
    finally:
        up.stop(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def seed(platform: Platform) -> None:
    """An agent whose users want short answers, with a dozen rated answers."""
    h = {"Authorization": f"Bearer {platform.admin_key}"}
    httpx.post(
        f"{platform.url}/api/v1/agents",
        json={
            "slug": "support",
            "system_prompt": "You are a helpful customer support agent.",
            "reward": REWARD,
            "max_tokens_cap": 64,
            "fast_loop": {
                "min_new_feedback": 1000,
                "max_wait_minutes": 10_000,
                "min_examples": 4,
                "budget": 36,
                "max_tokens": 48,
            },
            "slow_loop": {
                "steps": 3,
                "questions_per_step": 2,
                "group_size": 2,
                "max_tokens": 16,
                "eval_questions": 2,
                "min_questions": 4,
                "contexts": "live",
            },
        },
        headers=h,
    ).raise_for_status()
    for question in QUESTIONS:
        answer = httpx.post(
            f"{platform.url}/v1/chat/completions",
            json={
                "model": "support",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 48,
                "temperature": 0,
            },
            headers=h,
            timeout=300,
        ).json()
        text = answer["choices"][0]["message"]["content"]
        body = USER.feedback(SimQuestion(question, "test"), answer["id"], text)
        httpx.post(f"{platform.url}/v1/feedback", json=body, headers=h).raise_for_status()


def watch_csp(page: Page) -> list[str]:
    """What the page's Content-Security-Policy refused, as Chromium reports it (the UI must
    run under the strict policy the API serves it with: no inline script or style)."""
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return refused


def sign_in(page: Page, platform: Platform, key: str) -> None:
    page.goto(platform.url)
    expect(page.get_by_role("heading", name="fastslow")).to_be_visible()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("acme")


def test_the_web_ui_end_to_end(platform: Platform, browser: Browser) -> None:
    seed(platform)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    refused = watch_csp(page)
    first = page.goto(platform.url)
    assert first is not None
    policy = first.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert first.headers["x-content-type-options"] == "nosniff"
    shot(page, "01-sign-in")
    sign_in(page, platform, platform.admin_key)
    expect(page.get_by_role("cell", name=re.compile("support"))).to_be_visible()
    shot(page, "02-agents")

    # Chat: a streamed answer, the versions that served it, and a rating with a comment.
    page.get_by_role("link", name="Chat").first.click()
    page.get_by_label("Message").fill("Where is my order #10005?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("served-by")).to_contain_text("prompt v1", timeout=120_000)
    expect(page.get_by_test_id("served-by")).to_contain_text("adapter none")
    page.get_by_role("button", name="Thumbs down").click()
    page.get_by_label("Comment").fill("<script>alert(1)</script> too long")
    page.get_by_label("Correction").fill("Your order #10005 ships today.")
    page.get_by_role("button", name="Send feedback").click()
    expect(page.get_by_text("Thanks for the feedback.")).to_be_visible()
    shot(page, "03-chat")

    # Inbox: the rating is there, and markup in it is shown as text.
    page.get_by_role("link", name="Feedback inbox").click()
    page.get_by_label("Rating").select_option("disliked")
    row = page.get_by_test_id("rollout").filter(has_text="#10005")
    expect(row).to_contain_text("<script>alert(1)</script> too long")
    expect(row).to_contain_text("Wanted: Your order #10005 ships today.")
    assert page.locator("td script").count() == 0
    shot(page, "04-inbox")

    # Prompts: run the fast loop, watch it, see the new version, diff it, roll back.
    page.goto(f"{platform.url}/agents/support/prompts")
    expect(page.get_by_test_id("fast-loop-status")).to_contain_text("Runs after 1000 new ratings")
    page.get_by_role("button", name="Optimize now").click()
    expect(page.get_by_test_id("running-optimization")).to_be_visible(timeout=30_000)
    shot(page, "05-prompts-optimizing")
    deadline = time.monotonic() + 400
    # The run's candidates are stored before its gate decides: wait for the run to end (the
    # page then reloads the versions by itself).
    running = page.get_by_test_id("running-optimization")
    while running.is_visible() or not page.get_by_test_id("prompt-version-2").is_visible():
        assert time.monotonic() < deadline, "the optimisation did not end with a new version"
        page.wait_for_timeout(1000)
    expect(page.get_by_test_id("prompt-version-2")).to_contain_text("optimizer")
    page.get_by_label("Compare from v1").check()
    page.get_by_label("Compare to v2").check()
    expect(page.get_by_test_id("diff").first).to_be_visible()
    shot(page, "06-prompts-diff")
    live_row = page.locator("tr", has=page.get_by_text("live", exact=True))
    live_version = live_row.first.get_by_role("cell").first.inner_text().split()[0]
    assert live_version != "v1", "the optimizer's version went live"
    page.get_by_label("Reason for an activation or rollback").fill("keep the original tone")
    page.get_by_role("button", name="Activate v1").click()
    expect(page.get_by_test_id("prompt-version-1")).to_contain_text("live")
    shot(page, "07-prompts-rolled-back")

    # Adapters: train now; the job page shows progress as it moves, without reloading.
    page.goto(f"{platform.url}/agents/support/adapters")
    page.get_by_role("button", name="Train now").click()
    page.get_by_role("link", name="follow the job").click()
    bar = page.get_by_role("progressbar", name="Job progress")
    expect(bar).to_be_visible()
    seen: set[str] = set()
    deadline = time.monotonic() + 400
    while "succeeded" not in page.locator("main").inner_text():
        seen.add(bar.get_attribute("aria-valuenow") or "")
        assert time.monotonic() < deadline, "the training job did not finish"
        assert "failed" not in page.locator("main .badge").first.inner_text()
        page.wait_for_timeout(500)
    seen.add(bar.get_attribute("aria-valuenow") or "")
    assert len(seen) >= 2, f"progress updated live: {sorted(seen)}"
    expect(page.get_by_test_id("curves")).to_be_visible()
    expect(page.get_by_test_id("job-outcome")).to_be_visible()
    shot(page, "08-training-job")
    page.goto(f"{platform.url}/agents/support/adapters")
    expect(page.get_by_test_id("adapter-version-1")).to_be_visible()
    shot(page, "09-adapters")
    page.goto(f"{platform.url}/jobs")
    expect(page.get_by_role("link", name="train")).to_be_visible()
    shot(page, "10-jobs")

    # Schedule: an invalid cron expression is shown inline; a valid one previews its runs.
    page.goto(f"{platform.url}/agents/support/schedule")
    page.get_by_label("Cron expression").fill("61 * * * *")
    page.get_by_role("button", name="Save schedule").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid cron expression")
    page.get_by_label("Cron expression").fill("0 2 * * 1")
    page.get_by_label("Time zone").fill("Europe/Oslo")
    page.get_by_role("button", name="Save schedule").click()
    expect(page.get_by_test_id("schedule-description")).to_contain_text("only on Monday")
    expect(page.get_by_test_id("next-runs").locator("li")).to_have_count(5)
    shot(page, "11-schedule")

    # Keys: create one, shown once, then revoke it.
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("temporary")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-key")).to_contain_text("fsk_")
    shot(page, "12-keys-created")
    page.get_by_role("button", name="Done").click()
    temporary = page.get_by_test_id("key-row").filter(has_text="temporary")
    temporary.get_by_role("button", name="Revoke").click()
    expect(temporary).to_contain_text("revoked")

    # A phone-sized screen still works.
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone_refused = watch_csp(phone)
    sign_in(phone, platform, platform.member_key)
    expect(phone.get_by_role("link", name="Jobs")).to_have_count(0)  # members see no admin pages
    phone.get_by_role("link", name="Chat").first.click()
    expect(phone.get_by_label("Message")).to_be_visible()
    shot(phone, "13-phone-member-chat")
    assert refused == [] and phone_refused == [], refused + phone_refused
