"""Prometheus metrics of the platform (HTTP metrics come from django-prometheus).

With several processes (Daphne, Celery worker and beat), set PROMETHEUS_MULTIPROC_DIR
to a directory they share and that is emptied before they start (`manage.py serve`
does both): `/metrics` then aggregates every process. Gauges say how they combine.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

websocket_connections = Gauge(
    "chatbase_websocket_connections",
    "Open websocket connections, by consumer.",
    ["consumer"],
    multiprocess_mode="livesum",
)
websocket_connections_total = Counter(
    "chatbase_websocket_accepted", "Websocket connections accepted, by consumer.", ["consumer"]
)

llm_requests = Counter(
    "chatbase_llm_answers", "Answers a provider contributed to, by provider and outcome.", ["provider", "outcome"]
)
llm_errors = Counter(
    "chatbase_llm_errors", "Provider failures, by provider and whether they came mid-answer.", ["provider", "stage"]
)
llm_fallbacks = Counter(
    "chatbase_llm_fallbacks", "Answers that moved from one provider to the next.", ["from_provider", "stage"]
)
llm_tokens = Counter("chatbase_llm_tokens", "Model tokens, by provider and direction.", ["provider", "direction"])
llm_cost = Counter("chatbase_llm_cost_usd", "Model spend in US dollars, by provider.", ["provider"])
llm_latency = Histogram(
    "chatbase_llm_answer_seconds", "Whole answer latency, by provider.", ["provider"], buckets=_LATENCY_BUCKETS
)
llm_first_token = Histogram(
    "chatbase_llm_first_token_seconds",
    "Time from the user's message to the first streamed token, by provider.",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)

retrieval_latency = Histogram(
    "chatbase_retrieval_seconds", "Knowledge search latency, by mode.", ["mode"], buckets=_FAST_BUCKETS
)
ingestion_jobs = Counter("chatbase_ingestion_jobs", "Document ingestions, by outcome.", ["outcome"])

celery_tasks = Counter("chatbase_celery_tasks", "Celery task outcomes, by task.", ["task", "outcome"])
webhook_events = Counter(
    "chatbase_webhook_events", "Inbound webhook deliveries, by source and outcome.", ["source", "outcome"]
)
cache_errors = Counter("chatbase_cache_errors", "Cache (Redis) failures the caller survived, by purpose.", ["purpose"])
