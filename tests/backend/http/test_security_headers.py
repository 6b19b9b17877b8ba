"""Browser security headers on the web UI and the API: a strict Content-Security-Policy
(no framing), nosniff, no referrer, and HSTS on requests that came over TLS, also through a
trusted proxy in front of a real `fastslow api`."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from tests.conftest import Stack, TenantKeys, start_api
from tests.support import free_port

PATHS = ("/", "/agents/support/prompts", "/healthz", "/api/v1/agents", "/v1/models", "/nowhere")


def _directives(policy: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in policy.split("; ")}


def test_ui_and_api_responses_carry_security_headers(
    app_client: TestClient, tenant: TenantKeys
) -> None:
    for path in PATHS:
        for headers in ({}, tenant.headers("member")):
            response = app_client.get(path, headers=headers)
            policy = _directives(response.headers["content-security-policy"])
            assert policy["frame-ancestors"] == "'none'", path
            # Only the UI's own files run: no inline script or style, nothing from elsewhere.
            assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", path
            assert policy["default-src"] == "'self'" and policy["object-src"] == "'none'", path
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert response.headers["referrer-policy"] == "no-referrer", path
            assert response.headers["x-frame-options"] == "DENY", path
            # Plain HTTP: HSTS there would be ignored, and would pin a host without TLS.
            assert "strict-transport-security" not in response.headers, path
    # Refusals too: a 401 and a 413 come from before any route runs.
    refused = app_client.post("/api/v1/agents/support/adapters")
    assert refused.status_code == 401
    assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]


def test_hsts_over_tls(app_client: TestClient) -> None:
    tls = TestClient(app_client.app, base_url="https://testserver")  # the app is running
    for path in ("/", "/healthz", "/api/v1/agents"):
        response = tls.get(path)
        assert response.headers["strict-transport-security"].startswith("max-age="), path
        max_age = response.headers["strict-transport-security"].split(";")[0].split("=")[1]
        assert int(max_age) >= 180 * 86400  # long enough to count (half a year or more)


def test_interactive_docs_keep_working_without_framing(app_client: TestClient) -> None:
    """FastAPI's /docs page is an inline script and a CDN bundle; its policy allows exactly
    that, and still no framing."""
    response = app_client.get("/docs")
    assert response.status_code == 200
    policy = _directives(response.headers["content-security-policy"])
    assert "https://cdn.jsdelivr.net" in policy["script-src"]
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"


def _forwarded_https(url: str) -> httpx.Response:
    return httpx.get(f"{url}/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=10)


def test_production_api_behind_a_trusted_proxy_sends_hsts(stack: Stack) -> None:
    """A real `fastslow api` in production: `X-Forwarded-Proto: https` from a proxy it trusts
    (FASTSLOW_FORWARDED_ALLOW_IPS; loopback here) gets HSTS; from any other peer it does not,
    so a client cannot claim TLS it did not use."""
    production = {
        "FASTSLOW_ENVIRONMENT": "production",
        "FASTSLOW_METRICS_TOKEN": "scrape-secret",
        "FASTSLOW_ENGINE": "vllm",  # no engine is called here; nothing to load
        "FASTSLOW_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
    }
    trusted, url = start_api(stack, "api-behind-proxy", **production)
    try:
        plain = httpx.get(f"{url}/healthz", timeout=10)
        assert "strict-transport-security" not in plain.headers
        assert "frame-ancestors 'none'" in plain.headers["content-security-policy"]
        assert _forwarded_https(url).headers["strict-transport-security"].startswith("max-age=")
    finally:
        trusted.stop()
    untrusted, url = start_api(
        stack, "api-untrusted-proxy", **production, FASTSLOW_FORWARDED_ALLOW_IPS="10.99.0.1"
    )
    try:
        assert "strict-transport-security" not in _forwarded_https(url).headers
    finally:
        untrusted.stop()
