"""Test settings: the real embedded PostgreSQL and, when REDIS_URL is set, real Redis."""

import os

from .base import *
from .base import (
    CACHES,
    CELERY_BROKER_TRANSPORT_OPTIONS,
    CHANNEL_LAYERS,
    DATABASES,
    INSTALLED_APPS,
    REDIS_URL,
    VAR_DIR,
    env,
)

SECRET_KEY = "test-secret-key-not-for-production-use-0123456789abcdef"
DEBUG = False
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Tests run the tasks they trigger in-process so that assertions can follow them;
# the tests that need a real worker start one against the broker explicitly.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True

MEDIA_ROOT = VAR_DIR / "test-media"

if REDIS_URL:
    # Several test runs may share one Redis (CI, developers, pytest-xdist workers):
    # keep every run's keys apart. A server the tests start (chatbase.testing.live)
    # is given the run's prefix, so that it shares the channel layer with the tests.
    _prefix = os.environ.get("CHATBASE_TEST_REDIS_PREFIX") or f"chatbase-test-{os.getpid()}"
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{_prefix}:asgi"
    CACHES["default"]["KEY_PREFIX"] = _prefix
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = f"{_prefix}:celery:"
    REDIS_PREFIX = _prefix

# --- LLM providers: never a real provider from a test ---------------------------
# Keys or URLs in a developer's environment must not reach OpenAI or Anthropic; tests
# that need a model point these at chatbase.testing.fake_llm instead.
# A server started by the tests may be pointed at the fake server (only there).
if not env.bool("CHATBASE_TEST_PROVIDERS_FROM_ENV", default=False):
    OPENAI_API_KEY = ""
    OPENAI_BASE_URL = ""
    ANTHROPIC_API_KEY = ""
    ANTHROPIC_BASE_URL = ""
    LLM_PROVIDERS = ["openai", "anthropic", "extractive"]

# --- knowledge base (bots/) ---
# The tests fetch from local HTTP servers on 127.0.0.1.
URL_FETCH_ALLOW_PRIVATE = True
# Retries against the fake embedding server should not sleep for real.
EMBEDDING_RETRY_MAX_WAIT_SECONDS = 0.05
# As for the chat models: a developer's EMBEDDINGS=openai must not reach OpenAI.
EMBEDDINGS = "local"
EMBEDDINGS_OPENAI_API_KEY = ""
EMBEDDINGS_OPENAI_BASE_URL = ""

# --- leads and geo ---
# A developer's token must never reach ipinfo from a test; retries do not sleep.
IPINFO_TOKEN = ""
IPINFO_RETRY_BASE_SECONDS = 0
IPINFO_RETRY_MAX_SECONDS = 0

# channels' test communicator turns close_old_connections into a no-op, so every
# worker thread a consumer test touches keeps its pooled connection until the end.
if isinstance(DATABASES["default"]["OPTIONS"].get("pool"), dict):
    DATABASES["default"]["OPTIONS"]["pool"]["max_size"] = 40

# Transactional tests reload what data migrations shipped (conftest.py turns on
# serialised rollback for them): only the apps that ship rows, so the reload is cheap.
_APPS_WITH_SHIPPED_ROWS = {"bots", "geo"}
TEST_NON_SERIALIZED_APPS = [app for app in INSTALLED_APPS if app not in _APPS_WITH_SHIPPED_ROWS]
