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

chat_prepare_waiting = Gauge(
    "chatbase_chat_prepare_waiting",
    "Questions waiting for a preparation slot (CHAT_PREPARE_CONCURRENCY).",
    multiprocess_mode="livesum",
)
chat_prepare_wait = Histogram(
    "chatbase_chat_prepare_wait_seconds",
    "How long a question that found every preparation slot taken waited for one.",
    buckets=_LATENCY_BUCKETS,
)
chat_prepare_overdue = Counter(
    "chatbase_chat_prepare_overdue",
    "Questions that went ahead without a preparation slot after waiting the longest allowed.",
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

# Matchmaking (conversations/matchmaking). Gauges count this process's sockets and add up
# across processes; a human room counts 0.5 per participant, so a whole room is 1.
match_waiting = Gauge(
    "chatbase_match_waiting", "Users in the matchmaking queue (with or without a bot).", multiprocess_mode="livesum"
)
match_active_sessions = Gauge(
    "chatbase_match_active_sessions",
    "Matchmaking sessions on open sockets, by kind (bot, human).",
    ["kind"],
    multiprocess_mode="livesum",
)
match_wait = Histogram(
    "chatbase_match_wait_seconds",
    "Time from match.join to match.found.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
match_pairs = Counter("chatbase_match_pairs", "Human rooms formed by the queue.")
match_fallbacks = Counter(
    "chatbase_match_fallbacks", "Users given the AI companion, by trigger (timer, webhook).", ["trigger"]
)
match_handovers = Counter("chatbase_match_handovers", "Bot sessions ended because a human was found.")
match_fallback_lateness = Histogram(
    "chatbase_match_fallback_lateness_seconds",
    "How late the fallback timer fired after MATCH_FALLBACK_SECONDS.",
    buckets=_FAST_BUCKETS,
)
