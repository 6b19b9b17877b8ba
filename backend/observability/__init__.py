"""Metrics, structured logs and request ids; see docs/scaling.md (Observability).

Kept free of imports: `fastslow worker` must turn on prometheus_client's multiprocess mode
before anything imports prometheus_client (`multiprocess.py`).
"""
