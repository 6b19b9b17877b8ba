"""Traffic from simulated users: the users of several tenants chat with their agents (streamed
and not) and rate the answers, over HTTP against a running platform, for a fixed time.

Every call is counted on the client side, so a run can be checked against the database: each
answer a client received must be a stored rollout, each accepted rating a stored feedback row
(`missing_records`). The load benchmark, the load test and the fault tests all drive the
platform with this one client.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.engines.lora import CONFIG_FILE, WEIGHTS_FILE
from backend.rollouts.models import Feedback, Rollout
from backend.simulation.questions import SimQuestion, question_set
from backend.simulation.users import PREFERENCES, UserModel
from backend.tenants.models import Tenant

AGENT = "support"
# Statuses after which a client waits and sends the same request again.
RETRYABLE = frozenset({429, 503})


@dataclass(frozen=True)
class SimTenant:
    name: str
    admin_key: str
    member_key: str
    user: UserModel
    questions: list[SimQuestion]
    agent: str = AGENT

    def headers(self, role: str = "member") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key if role == 'admin' else self.member_key}"}


def create_tenants(
    base_url: str,
    platform_key: str,
    count: int,
    *,
    max_tokens: int = 32,
    fast_loop: dict[str, Any] | None = None,
    seed: int = 0,
) -> list[SimTenant]:
    """`count` tenants, each with an agent, a member key and users with its own hidden
    preference (the preferences take turns) who ask their own questions."""
    run = uuid.uuid4().hex[:8]
    preferences = list(PREFERENCES.values())
    tenants: list[SimTenant] = []
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for i in range(count):
            name = f"load-{run}-{i}"
            created = http.post(
                "/api/v1/tenants",
                json={"name": name},
                headers={"Authorization": f"Bearer {platform_key}"},
            )
            created.raise_for_status()
            admin = {"Authorization": f"Bearer {created.json()['admin_key']}"}
            member = http.post("/api/v1/keys", json={"role": "member"}, headers=admin)
            member.raise_for_status()
            preference = preferences[i % len(preferences)]
            agent = http.post(
                "/api/v1/agents",
                json={
                    "slug": AGENT,
                    "system_prompt": "You are a helpful customer support agent.",
                    "reward": {"checks": [preference.reward_check()], "correction_weight": 0},
                    "max_tokens_cap": max_tokens,
                    **({"fast_loop": fast_loop} if fast_loop else {}),
                },
                headers=admin,
            )
            agent.raise_for_status()
            tenants.append(
                SimTenant(
                    name=name,
                    admin_key=created.json()["admin_key"],
                    member_key=member.json()["key"],
                    user=UserModel(preference, seed=seed + i),
                    questions=question_set(40, seed=seed + i),
                )
            )
    return tenants


def upload_adapter(base_url: str, tenant: SimTenant, directory: Path, note: str = "") -> int:
    """Upload a peft adapter directory as the agent's next adapter version; returns it."""
    with (
        (directory / CONFIG_FILE).open("rb") as config,
        (directory / WEIGHTS_FILE).open("rb") as weights,
    ):
        response = httpx.post(
            f"{base_url}/api/v1/agents/{tenant.agent}/adapters",
            files={"config": config, "weights": weights},
            data={"note": note},
            headers=tenant.headers("admin"),
            timeout=120,
        )
    response.raise_for_status()
    version: int = response.json()["version"]
    return version


def activate_adapter(base_url: str, tenant: SimTenant, version: int | None) -> httpx.Response:
    """Swap the agent's live adapter (None: the base model); the platform loads and probes
    it before it serves."""
    return httpx.post(
        f"{base_url}/api/v1/agents/{tenant.agent}/adapters/activate",
        json={"version": version, "reason": "simulated swap"},
        headers=tenant.headers("admin"),
        timeout=300,
    )


@dataclass
class Call:
    """One HTTP call as the client saw it. status 0: no HTTP answer (refused, reset, timeout)."""

    tenant: str
    kind: str  # chat | stream | feedback
    status: int
    latency_s: float
    started_s: float  # since the start of the run
    retry_after: str | None = None
    first_token_s: float | None = None  # streams: time to the first text
    completion_id: str | None = None  # an answer the client received
    feedback_key: str | None = None  # the Idempotency-Key of a rating
    served_by: str | None = None  # answers: "p<prompt version>/a<adapter version>"
    error: str = ""  # no HTTP answer, or a stream that broke or reported an error in-band

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.error


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    if len(values) == 1:
        return {k: round(values[0], 4) for k in ("p50", "p95", "p99", "max")}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 4),
        "p95": round(cuts[94], 4),
        "p99": round(cuts[98], 4),
        "max": round(max(values), 4),
    }


@dataclass
class TrafficReport:
    calls: list[Call] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def completion_ids(self) -> set[str]:
        return {c.completion_id for c in self.calls if c.ok and c.completion_id}

    @property
    def feedback_keys(self) -> set[str]:
        return {c.feedback_key for c in self.calls if c.ok and c.feedback_key}

    @property
    def abandoned_ratings(self) -> set[str]:
        """Ratings never accepted although the client kept trying: lost to the user."""
        sent = {c.feedback_key for c in self.calls if c.feedback_key}
        return sent - self.feedback_keys

    @property
    def server_errors(self) -> list[Call]:
        return [c for c in self.calls if c.status >= 500]

    def unexpected(self, *, faults: bool = False) -> list[Call]:
        """Calls that did not go as a client may expect: anything but a success, or a 429 with
        `Retry-After`. With `faults` (a dependency is down on purpose) a 503 with
        `Retry-After` and a stream that reported its error in-band are expected too; a 5xx of
        any other kind, a call without an HTTP answer, or a stream that broke without saying
        why never are."""
        bad = []
        for call in self.calls:
            if call.ok or (call.status == 429 and call.retry_after):
                continue
            if faults and call.status == 503 and call.retry_after:
                continue
            if faults and call.status == 200 and call.error.startswith("in-band"):
                continue
            bad.append(call)
        return bad

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"duration_s": round(self.duration_s, 1), "requests": {}}
        for kind in ("chat", "stream", "feedback"):
            calls = [c for c in self.calls if c.kind == kind]
            ok = [c for c in calls if c.ok]
            entry: dict[str, Any] = {
                "sent": len(calls),
                "ok": len(ok),
                "statuses": dict(sorted(Counter(str(c.status) for c in calls).items())),
                "latency_s": _percentiles([c.latency_s for c in ok]),
            }
            if kind == "stream":
                firsts = [c.first_token_s for c in ok if c.first_token_s is not None]
                entry["first_token_s"] = _percentiles(firsts)
                entry["broken"] = sum(1 for c in calls if c.status == 200 and c.error)
            out["requests"][kind] = entry
        answered = sum(1 for c in self.calls if c.ok and c.kind != "feedback")
        out["answers_per_s"] = round(answered / self.duration_s, 3) if self.duration_s else 0.0
        out["server_errors"] = len(self.server_errors)
        out["status_503"] = sum(1 for c in self.calls if c.status == 503)
        out["no_response"] = sum(1 for c in self.calls if c.status == 0)
        out["answers_received"] = len(self.completion_ids)
        out["ratings_accepted"] = len(self.feedback_keys)
        out["ratings_abandoned"] = len(self.abandoned_ratings)
        served: dict[str, Counter[str]] = {}
        for call in self.calls:
            if call.ok and call.served_by:
                served.setdefault(call.tenant, Counter())[call.served_by] += 1
        out["served_by"] = {tenant: dict(sorted(c.items())) for tenant, c in served.items()}
        return out


class Traffic:
    """`users_per_tenant` users of each tenant, each in a loop: ask one of the tenant's
    questions (streamed with probability `stream_share`), maybe rate the answer as the
    tenant's user model would. A rating refused with 503/429 or unanswered is sent again with
    the same Idempotency-Key until accepted (or `rating_retry_s` passed), as a careful client
    does; an answer refused with 503 is simply asked for again later."""

    def __init__(
        self,
        base_url: str,
        tenants: list[SimTenant],
        *,
        users_per_tenant: int = 4,
        stream_share: float = 0.5,
        max_tokens: int = 16,
        think_s: float = 0.2,
        timeout_s: float = 120.0,
        max_backoff_s: float = 2.0,
        rating_retry_s: float = 60.0,
        turns: int | None = None,
        seed: int = 0,
    ) -> None:
        """`turns`: questions each user asks at most (None: until the time is up)."""
        self.base_url = base_url
        self.tenants = tenants
        self.users_per_tenant = users_per_tenant
        self.stream_share = stream_share
        self.max_tokens = max_tokens
        self.think_s = think_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.rating_retry_s = rating_retry_s
        self.turns = turns
        self.seed = seed
        self.run_id = uuid.uuid4().hex[:8]
        self.report = TrafficReport()
        self._t0 = 0.0

    def run(self, duration_s: float, stop: threading.Event | None = None) -> TrafficReport:
        """Blocking: send traffic for `duration_s` (or until `stop` is set), then let every
        pending rating finish. Safe to call from a thread of its own."""
        return asyncio.run(self.arun(duration_s, stop))

    async def arun(self, duration_s: float, stop: threading.Event | None = None) -> TrafficReport:
        self._t0 = time.perf_counter()
        deadline = self._t0 + duration_s
        users = len(self.tenants) * self.users_per_tenant
        limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, limits=limits
        ) as http:

            def stopped() -> bool:
                return time.perf_counter() >= deadline or (stop is not None and stop.is_set())

            await asyncio.gather(
                *(
                    self._user(http, tenant, i, stopped)
                    for tenant in self.tenants
                    for i in range(self.users_per_tenant)
                )
            )
        self.report.duration_s = time.perf_counter() - self._t0
        return self.report

    def elapsed(self) -> float:
        """Seconds since the run started (the clock of `Call.started_s`)."""
        return time.perf_counter() - self._t0

    async def _user(
        self, http: httpx.AsyncClient, tenant: SimTenant, index: int, stopped: Callable[[], bool]
    ) -> None:
        rng = random.Random(f"{self.seed}-{tenant.name}-{index}")
        turn = 0
        while not stopped() and (self.turns is None or turn < self.turns):
            turn += 1
            question = rng.choice(tenant.questions)
            stream = rng.random() < self.stream_share
            call, answer = await self._chat(http, tenant, question, stream)
            self.report.calls.append(call)
            if call.ok and call.completion_id and answer is not None:
                body = tenant.user.feedback(question, call.completion_id, answer)
                if body is not None:
                    key = f"{self.run_id}-{tenant.name}-{index}-{turn}"
                    await self._rate(http, tenant, body, key)
            elif call.status in RETRYABLE or call.status == 0:
                await asyncio.sleep(self._backoff(call))
            await asyncio.sleep(rng.uniform(0, self.think_s))

    def _backoff(self, call: Call) -> float:
        try:
            wait = float(call.retry_after) if call.retry_after else 1.0
        except ValueError:
            wait = 1.0
        return min(wait, self.max_backoff_s)

    async def _chat(
        self, http: httpx.AsyncClient, tenant: SimTenant, question: SimQuestion, stream: bool
    ) -> tuple[Call, str | None]:
        body = {
            "model": tenant.agent,
            "messages": [{"role": "user", "content": question.text}],
            "max_tokens": self.max_tokens,
            "stream": stream,
        }
        kind = "stream" if stream else "chat"
        started = time.perf_counter()
        call = Call(tenant.name, kind, 0, 0.0, self.elapsed())
        answer: str | None = None
        try:
            if stream:
                answer = await self._stream(http, tenant, body, call, started)
            else:
                response = await http.post(
                    "/v1/chat/completions", json=body, headers=tenant.headers()
                )
                call.status = response.status_code
                call.retry_after = response.headers.get("retry-after")
                call.served_by = _served_by(response)
                if response.status_code == 200:
                    data = response.json()
                    call.completion_id = data["id"]
                    answer = data["choices"][0]["message"]["content"]
        except httpx.HTTPError as exc:
            call.error = f"{type(exc).__name__}: {exc}"[:300]
        call.latency_s = time.perf_counter() - started
        return call, answer

    async def _stream(
        self,
        http: httpx.AsyncClient,
        tenant: SimTenant,
        body: dict[str, Any],
        call: Call,
        started: float,
    ) -> str | None:
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=tenant.headers()
        ) as response:
            call.status = response.status_code
            call.retry_after = response.headers.get("retry-after")
            call.served_by = _served_by(response)
            if response.status_code != 200:
                await response.aread()
                return None
            pieces: list[str] = []
            finished = done = False
            completion_id = None
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    done = True
                    break
                event = json.loads(payload)
                if "error" in event:
                    call.error = f"in-band error: {event['error'].get('message', '')}"[:300]
                    continue
                completion_id = event.get("id", completion_id)
                for choice in event.get("choices", []):
                    text = choice["delta"].get("content") or ""
                    if text and call.first_token_s is None:
                        call.first_token_s = time.perf_counter() - started
                    pieces.append(text)
                    finished = finished or choice.get("finish_reason") is not None
        if call.error:
            return None
        if not (finished and done):
            call.error = "the stream ended before its finish_reason and [DONE]"
            return None
        call.completion_id = completion_id
        return "".join(pieces)

    async def _rate(
        self, http: httpx.AsyncClient, tenant: SimTenant, body: dict[str, Any], key: str
    ) -> None:
        give_up = time.perf_counter() + self.rating_retry_s
        headers = {**tenant.headers(), "Idempotency-Key": key}
        while True:
            started = time.perf_counter()
            call = Call(tenant.name, "feedback", 0, 0.0, self.elapsed(), feedback_key=key)
            try:
                response = await http.post("/v1/feedback", json=body, headers=headers)
                call.status = response.status_code
                call.retry_after = response.headers.get("retry-after")
            except httpx.HTTPError as exc:
                call.error = f"{type(exc).__name__}: {exc}"[:300]
            call.latency_s = time.perf_counter() - started
            self.report.calls.append(call)
            retry = call.status in RETRYABLE or call.status == 0
            if not retry or time.perf_counter() >= give_up:
                return
            await asyncio.sleep(self._backoff(call))


def _served_by(response: httpx.Response) -> str | None:
    prompt = response.headers.get("x-fastslow-prompt-version")
    adapter = response.headers.get("x-fastslow-adapter-version")
    return f"p{prompt}/a{adapter}" if prompt and adapter else None


def _chunks(items: Iterable[str], size: int = 500) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def missing_records(session: Session, report: TrafficReport) -> dict[str, list[str]]:
    """What the client was given but the database does not hold: answers without a rollout,
    accepted ratings without a feedback row."""
    stored_rollouts: set[str] = set()
    for batch in _chunks(report.completion_ids):
        stored_rollouts |= set(session.scalars(select(Rollout.id).where(Rollout.id.in_(batch))))
    stored_feedback: set[str] = set()
    for batch in _chunks(report.feedback_keys):
        stored_feedback |= {
            key
            for key in session.scalars(
                select(Feedback.idempotency_key).where(Feedback.idempotency_key.in_(batch))
            )
            if key is not None
        }
    return {
        "rollouts": sorted(report.completion_ids - stored_rollouts),
        "feedback": sorted(report.feedback_keys - stored_feedback),
    }


def stored_counts(session: Session, tenants: Sequence[SimTenant]) -> dict[str, dict[str, int]]:
    """Rollouts and feedback rows the database holds per tenant (the server-side count)."""
    out: dict[str, dict[str, int]] = {}
    for tenant in tenants:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant.name))
        rollouts = session.scalar(
            select(func.count()).select_from(Rollout).where(Rollout.tenant_id == tenant_id)
        )
        feedback = session.scalar(
            select(func.count()).select_from(Feedback).where(Feedback.tenant_id == tenant_id)
        )
        out[tenant.name] = {"rollouts": int(rollouts or 0), "feedback": int(feedback or 0)}
    return out
