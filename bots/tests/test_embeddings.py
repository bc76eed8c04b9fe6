"""Embeddings: the local model for real, and the OpenAI backend against a fake server at the HTTP level."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from bots import embeddings, encoders
from bots.embeddings import LocalEmbedder, OpenAIEmbedder, get_embedder
from bots.tests.conftest import Response
from chatbase.core.errors import Unavailable, ValidationFailed


def _cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_local_embedder_returns_normalised_384_dimension_vectors(local_embedder):
    vectors = local_embedder.embed_documents(["How do I get a refund?", "Opening hours of the Chennai office"])
    assert local_embedder.name == "all-MiniLM-L6-v2"
    assert local_embedder.dimensions == 384
    assert len(vectors) == 2
    for vector in vectors:
        assert len(vector) == 384
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-4)


def test_local_embedder_ranks_related_text_closer(local_embedder):
    query = local_embedder.embed_query("Can I get my money back?")
    refund, weather = local_embedder.embed_documents(
        ["Refunds are paid within 14 days of a return.", "It rained heavily in the mountains yesterday."]
    )
    assert _cosine(query, refund) > _cosine(query, weather) + 0.1


def test_batched_and_single_embeddings_agree(local_embedder, settings):
    texts = [f"Sentence number {i} about delivery times." for i in range(7)]
    settings.EMBEDDING_BATCH_SIZE = 3
    batched = get_embedder().embed_documents(texts)
    single = [local_embedder.embed_documents([t])[0] for t in texts]
    for a, b in zip(batched, single, strict=True):
        assert _cosine(a, b) == pytest.approx(1.0, abs=1e-4)
    assert local_embedder.embed_documents([]) == []


def test_get_embedder_is_one_instance_across_threads(local_embedder):
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(get_embedder())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(e is local_embedder for e in seen)


def test_local_model_loads_once_under_concurrent_first_use(local_embedder, monkeypatch):
    loads = []

    def slow_load():
        loads.append(1)
        time.sleep(0.2)  # wide window for a second thread to race in
        return local_embedder.model

    monkeypatch.setattr(embeddings, "load_local_model", slow_load)
    fresh = LocalEmbedder(batch_size=8, query_cache_size=4)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fresh.embed_documents(["hi"]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len(results) == 4


def test_embed_query_is_cached_and_the_cache_is_bounded(local_embedder):
    fresh = LocalEmbedder(batch_size=8, query_cache_size=2)
    fresh._model = local_embedder.model
    calls = []
    real = fresh._embed_queries
    fresh._embed_queries = lambda texts: calls.append(list(texts)) or real(texts)

    first = fresh.embed_query("What are your opening hours?")
    first.append(123.0)  # a caller mutating its copy must not poison the cache
    again = fresh.embed_query("What are your opening hours?")
    assert len(calls) == 1
    assert len(again) == 384
    fresh.embed_query("second question")
    fresh.embed_query("third question")
    assert len(fresh._query_cache) == 2
    fresh.embed_query("What are your opening hours?")  # evicted (least recently used)
    assert len(calls) == 4


# --- OpenAI backend against a fake server ------------------------------------------


def _vector_for(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % 32] - 128) / 128 for i in range(384)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


def _embeddings_route(statuses=None, *, retry_after="0"):
    """/v1/embeddings: answers the statuses in turn (then 200) like OpenAI does."""
    statuses = list(statuses or [])

    def route(request):
        if request.headers.get("Authorization") != "Bearer sk-test":
            return Response(
                401, json.dumps({"error": {"message": "bad key", "type": "invalid_request_error"}}).encode()
            )
        if statuses:
            status = statuses.pop(0)
            return Response(
                status,
                json.dumps({"error": {"message": f"status {status}", "type": "server_error"}}).encode(),
                {"Content-Type": "application/json", "Retry-After": retry_after},
            )
        payload = json.loads(request.body)
        assert payload["model"] == "text-embedding-3-small"
        assert payload["dimensions"] == 384
        inputs = payload["input"]
        data = [{"object": "embedding", "index": i, "embedding": _vector_for(t)} for i, t in enumerate(inputs)]
        data.reverse()  # the API does not promise order; the index does
        body = {
            "object": "list",
            "data": data,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
        return Response(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    return route


def _openai_settings(server, **extra):
    return override_settings(
        EMBEDDINGS="openai",
        EMBEDDINGS_OPENAI_API_KEY=extra.pop("key", "sk-test"),
        EMBEDDINGS_OPENAI_BASE_URL=server.url("/v1") if server else "http://127.0.0.1:9/v1",
        **extra,
    )


def test_openai_backend_embeds_in_batches_in_input_order(local_server):
    server = local_server({"/v1/embeddings": _embeddings_route()})
    texts = [f"text {i}" for i in range(5)]
    with _openai_settings(server, EMBEDDING_BATCH_SIZE=2):
        embedder = get_embedder()
        assert isinstance(embedder, OpenAIEmbedder)
        assert embedder.name == "openai:text-embedding-3-small"
        vectors = embedder.embed_documents(texts)
    assert vectors == [_vector_for(t) for t in texts]  # JSON carries floats exactly
    assert len(server.requests) == 3  # 2 + 2 + 1
    assert [len(json.loads(r.body)["input"]) for r in server.requests] == [2, 2, 1]


def test_openai_backend_retries_rate_limits_and_server_errors(local_server):
    server = local_server({"/v1/embeddings": _embeddings_route([429, 503])})
    with _openai_settings(server):
        vector = get_embedder().embed_query("hello")
    assert vector == _vector_for("hello")
    assert len(server.requests) == 3


def test_openai_backend_gives_up_after_bounded_attempts(local_server):
    server = local_server({"/v1/embeddings": _embeddings_route([500] * 10)})
    with _openai_settings(server, EMBEDDING_MAX_ATTEMPTS=3), pytest.raises(Unavailable):
        get_embedder().embed_documents(["hello"])
    assert len(server.requests) == 3  # our policy, not the SDK's (max_retries=0)


def test_openai_backend_does_not_retry_a_bad_request(local_server):
    server = local_server({"/v1/embeddings": _embeddings_route([400])})
    with _openai_settings(server), pytest.raises(ValidationFailed) as excinfo:
        get_embedder().embed_documents(["hello"])
    assert excinfo.value.code == "embedding_refused"
    assert len(server.requests) == 1


def test_openai_backend_reports_a_rejected_key(local_server):
    server = local_server({"/v1/embeddings": _embeddings_route()})
    with _openai_settings(server, key="sk-wrong"), pytest.raises(ImproperlyConfigured, match="rejected the API key"):
        get_embedder().embed_documents(["hello"])
    assert len(server.requests) == 1


def test_openai_backend_retries_connection_errors_then_fails_clearly():
    # Port 9 (discard) on 127.0.0.1 is closed: every attempt is a connection error.
    with _openai_settings(None, EMBEDDING_MAX_ATTEMPTS=2), pytest.raises(Unavailable, match="APIConnectionError"):
        get_embedder().embed_documents(["hello"])


def test_unconfigured_openai_backend_fails_clearly_at_first_use():
    with override_settings(EMBEDDINGS="openai", EMBEDDINGS_OPENAI_API_KEY=""):
        embedder = get_embedder()  # building it needs nothing
        with pytest.raises(ImproperlyConfigured, match="OPENAI_API_KEY"):
            embedder.embed_documents(["hello"])


def test_unknown_backend_is_refused():
    with override_settings(EMBEDDINGS="word2vec"), pytest.raises(ImproperlyConfigured, match="EMBEDDINGS"):
        get_embedder()


def test_a_prefetched_query_is_embedded_once_and_reused(local_embedder, query_spy):
    import threading

    text = f"prefetch me {threading.get_ident()} {id(query_spy)}"
    local_embedder.prefetch_query(text)
    vector = local_embedder.embed_query(text)  # waits for the prefetch instead of embedding again
    assert vector == local_embedder.embed_query(text)
    assert query_spy.texts == [text]
    assert len(vector) == 384


# --- queries of concurrent callers, batched on one thread ------------------------------


def _gated_embedder(local_embedder):
    """A fresh embedder whose first model pass waits for `gate`: queries sent meanwhile pile up."""
    fresh = LocalEmbedder(batch_size=32, query_cache_size=64)
    fresh._model = local_embedder.model
    gate, first_started = threading.Event(), threading.Event()
    calls: list[list[str]] = []
    real = fresh._embed_queries

    def embed(texts):
        calls.append(list(texts))
        if len(calls) == 1:
            first_started.set()
            gate.wait(10)
        return real(texts)

    fresh._embed_queries = embed
    return fresh, gate, first_started, calls


def _in_threads(function, arguments):
    results: dict = {}
    threads = [threading.Thread(target=lambda a=a: results.__setitem__(a, function(a))) for a in arguments]
    for thread in threads:
        thread.start()
    return threads, results


def test_concurrent_queries_are_embedded_together_and_match_single_embeddings(local_embedder):
    fresh, gate, first_started, calls = _gated_embedder(local_embedder)
    blocker = threading.Thread(target=fresh.embed_query, args=("the first question holds the model",))
    blocker.start()
    assert first_started.wait(10)
    questions = [f"question {i} about {'very ' * i}long delivery times" for i in range(10)]
    threads, results = _in_threads(fresh.embed_query, questions + questions[:3])  # three asked twice
    time.sleep(0.3)  # every caller is waiting behind the first pass
    gate.set()
    for thread in [blocker, *threads]:
        thread.join(10)

    # One pass for the first question, one for the ten others: duplicates are not re-embedded.
    assert len(calls) == 2
    assert sorted(calls[1]) == sorted(questions)
    assert calls[1] == sorted(calls[1], key=len)  # shortest first: batches are padded to the longest
    for question in questions:
        single = local_embedder.embed_queries([question])[0]
        assert _cosine(results[question], single) == pytest.approx(1.0, abs=1e-4)


def test_a_burst_larger_than_a_batch_is_split(local_embedder):
    fresh, gate, first_started, calls = _gated_embedder(local_embedder)
    blocker = threading.Thread(target=fresh.embed_query, args=("hold",))
    blocker.start()
    assert first_started.wait(10)
    questions = [f"burst question number {i}" for i in range(embeddings.QUERY_BATCH + 5)]
    threads, results = _in_threads(fresh.embed_query, questions)
    time.sleep(0.3)
    gate.set()
    for thread in [blocker, *threads]:
        thread.join(10)
    assert [len(c) for c in calls[1:]] == [embeddings.QUERY_BATCH, 5]
    assert all(len(results[q]) == 384 for q in questions)


def test_a_long_question_is_not_starved_by_a_stream_of_short_ones(local_embedder):
    fresh, gate, first_started, calls = _gated_embedder(local_embedder)
    blocker = threading.Thread(target=fresh.embed_query, args=("hold",))
    blocker.start()
    assert first_started.wait(10)
    long_question = "a long question " * 20
    threads, _ = _in_threads(fresh.embed_query, [long_question])
    deadline = time.monotonic() + 5
    while long_question not in fresh._queries._waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    more, _ = _in_threads(fresh.embed_query, [f"short {i}" for i in range(embeddings.QUERY_BATCH + 4)])
    time.sleep(0.3)
    gate.set()
    for thread in [blocker, *threads, *more]:
        thread.join(10)
    assert long_question in calls[1]  # it came first, so it is in the next pass
    assert calls[1][-1] == long_question  # (sorted by length within the pass)


def test_a_query_stuck_behind_the_model_fails_as_unavailable_instead_of_waiting_forever(local_embedder, settings):
    fresh, gate, first_started, _ = _gated_embedder(local_embedder)
    blocker = threading.Thread(target=fresh.embed_query, args=("hold",))
    blocker.start()
    assert first_started.wait(10)
    settings.EMBEDDING_TIMEOUT_SECONDS = 0.2
    with pytest.raises(Unavailable, match="overloaded"):
        fresh.embed_query("waits behind the stuck pass")
    gate.set()
    blocker.join(10)


def test_a_failed_pass_fails_its_callers_and_the_next_query_works(local_embedder):
    fresh = LocalEmbedder(batch_size=8, query_cache_size=8)
    fresh._model = local_embedder.model
    real = fresh._embed_queries
    failures = [RuntimeError("model crashed")]

    def embed(texts):
        if failures:
            raise failures.pop()
        return real(texts)

    fresh._embed_queries = embed
    with pytest.raises(RuntimeError, match="model crashed"):
        fresh.embed_query("this one meets the crash")
    assert len(fresh.embed_query("this one does not")) == 384


def test_a_refused_query_does_not_fail_the_others_in_its_batch(local_embedder):
    fresh, gate, first_started, _ = _gated_embedder(local_embedder)
    inner = fresh._embed_queries

    def embed(texts):
        if "refused" in " ".join(texts):
            raise ValidationFailed("The embedding service refused the request (HTTP 400).", code="embedding_refused")
        return inner(texts)

    fresh._embed_queries = embed
    blocker = threading.Thread(target=fresh.embed_query, args=("hold",))
    blocker.start()
    assert first_started.wait(10)
    outcomes: dict[str, object] = {}

    def ask(text):
        try:
            outcomes[text] = len(fresh.embed_query(text))
        except ValidationFailed as exc:
            outcomes[text] = exc.code

    threads, _ = _in_threads(ask, ["a fine question", "a refused question", "another fine one"])
    time.sleep(0.3)
    gate.set()
    for thread in [blocker, *threads]:
        thread.join(10)
    assert outcomes == {"a fine question": 384, "a refused question": "embedding_refused", "another fine one": 384}


def test_a_forked_child_starts_its_own_query_thread(local_embedder, monkeypatch):
    fresh = LocalEmbedder(batch_size=8, query_cache_size=8)
    fresh._model = local_embedder.model
    fresh.embed_query("in the parent")
    parent_thread = fresh._queries._thread
    monkeypatch.setattr(embeddings.os, "getpid", lambda: -1)  # what a child of a prefork worker sees
    assert len(fresh.embed_query("in the child")) == 384
    assert fresh._queries._thread is not parent_thread


# --- the fast forward passes (bots.encoders) ----------------------------------------------

AGREEMENT_TEXTS = [
    "",
    "refund",
    "Wie lange dauert die Lieferung nach München? 配送にはどのくらいかかりますか",
    "How long does delivery to Chennai take, and can I track my parcel on the way?",
    " ".join(["Opening hours, prices and the terms of the two-year warranty."] * 60),  # past 256 tokens
]


@pytest.fixture
def fresh_encoders(monkeypatch, settings, tmp_path):
    """No encoder built yet, and an empty VAR_DIR for exports."""
    monkeypatch.setattr(encoders, "_encoders", {})
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.fixture(scope="session")
def exported_passes(local_embedder, tmp_path_factory):
    """The fp32 and int8 exports, made once for the tests that are not about making them."""
    directory = tmp_path_factory.mktemp("exports")
    model_dir = embeddings.local_model_path()
    with override_settings(VAR_DIR=directory):
        for precision in encoders.PRECISIONS:
            encoders.onnx_model_bytes(local_embedder.model, model_dir, precision=precision)
    return directory / "models"


@pytest.fixture
def exported_encoders(fresh_encoders, exported_passes):
    """As fresh_encoders, with the exports already kept (as on any machine after the first start)."""
    (fresh_encoders / "models").mkdir()
    for path in exported_passes.glob("*.onnx"):
        (fresh_encoders / "models" / path.name).write_bytes(path.read_bytes())
    return fresh_encoders


@pytest.fixture
def warnings_logged(monkeypatch):
    # Recorded on the module's logger itself: a Celery worker started in-process by an
    # earlier test (CI's Redis pass) reconfigures logging, and caplog then sees nothing.
    warned = []
    monkeypatch.setattr(encoders.logger, "warning", lambda message, *args, **kwargs: warned.append(message % args))
    return warned


def agreement(model, encoder, *, texts=AGREEMENT_TEXTS, batch_sizes=(1, 2, 5)) -> float:
    """The lowest cosine between `encoder` and sentence-transformers on `texts`, alone
    and padded next to longer and shorter texts."""
    expected = model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    lowest = 1.0
    for batch_size in batch_sizes:
        got = encoder.encode(texts, batch_size=batch_size)
        for e, g in zip(expected, got, strict=True):
            assert len(g) == 384
            assert math.sqrt(sum(x * x for x in g)) == pytest.approx(1.0, abs=1e-4)
            lowest = min(lowest, float(e @ g))
    return lowest


@pytest.mark.parametrize("runtime", ["onnx", "torchscript"])
def test_each_full_precision_pass_agrees_with_sentence_transformers(
    local_embedder, exported_encoders, settings, runtime
):
    settings.EMBEDDING_RUNTIME = runtime
    model = local_embedder.model
    encoder = encoders.fast_encoder(model, embeddings.local_model_path())
    assert (encoder.runtime, encoder.precision) == (runtime, "fp32")
    assert agreement(model, encoder) == pytest.approx(1.0, abs=1e-5)
    assert local_embedder.embed_documents(AGREEMENT_TEXTS[1:2])[0] == pytest.approx(
        encoder.encode(AGREEMENT_TEXTS[1:2], batch_size=1)[0], abs=1e-6
    )


def int8_encoder(local_embedder):
    return encoders.fast_encoder(local_embedder.model, embeddings.local_model_path(), precision="int8")


def test_questions_are_embedded_by_the_int8_pass_and_documents_by_the_fp32_one(local_embedder, exported_encoders):
    model = local_embedder.model
    encoder = int8_encoder(local_embedder)
    assert (encoder.runtime, encoder.precision) == ("onnx", "int8")
    # A rounding of the model, not the model itself (bench/embedding_precision.py
    # measures what that does to retrieval). The empty text, never searched for or
    # stored, is the one below the bound (0.978: two special tokens, nothing to average).
    assert encoders.MIN_COSINE_INT8 <= agreement(model, encoder, texts=AGREEMENT_TEXTS[1:]) < 0.9999
    assert agreement(model, encoder, texts=AGREEMENT_TEXTS[:1], batch_sizes=(1,)) > 0.95

    question = "How long does delivery to Chennai take?"
    int8_vector = encoder.encode([question], batch_size=1)[0]
    assert local_embedder.embed_queries([question])[0] == pytest.approx(int8_vector, abs=1e-6)
    fp32 = encoders.fast_encoder(model, embeddings.local_model_path())
    assert local_embedder.embed_documents([question])[0] == pytest.approx(
        fp32.encode([question], batch_size=1)[0], abs=1e-6
    )


def test_a_question_gets_the_same_vector_whatever_it_is_asked_with(local_embedder, exported_encoders):
    question = "How long does delivery to Chennai take?"
    alone = local_embedder.embed_queries([question])[0]
    # Asked in a burst beside a long one (the batcher hands them over together).
    together = local_embedder.embed_queries([AGREEMENT_TEXTS[-1], question, "refund"])[1]
    assert together == pytest.approx(alone, abs=1e-6)


def test_fp32_questions_when_asked_for(local_embedder, exported_encoders, settings):
    settings.EMBEDDING_QUERY_PRECISION = "fp32"
    question = "How long does delivery to Chennai take?"
    assert local_embedder.embed_queries([question])[0] == pytest.approx(local_embedder.embed_documents([question])[0])


def test_both_exports_are_kept_for_the_next_process(local_embedder, fresh_encoders, monkeypatch):
    model = local_embedder.model
    assert int8_encoder(local_embedder).precision == "int8"
    kept = {path.name.endswith("-int8.onnx"): path for path in (fresh_encoders / "models").glob("*.onnx")}
    assert set(kept) == {True, False}
    # Its matrices take a quarter of their fp32 bytes; the token embeddings (47 MB) stay fp32.
    assert kept[False].stat().st_size - 25_000_000 > kept[True].stat().st_size > 47_000_000
    assert not list((fresh_encoders / "models").glob("*.tmp"))

    # The next process reads the files instead of exporting or quantizing again.
    monkeypatch.setattr(encoders, "_encoders", {})
    monkeypatch.setattr(encoders, "_export_onnx", lambda model: pytest.fail("exported again"))
    monkeypatch.setattr(encoders, "_quantize", lambda data: pytest.fail("quantized again"))
    assert int8_encoder(local_embedder).precision == "int8"
    assert encoders.fast_encoder(model, embeddings.local_model_path()).precision == "fp32"


@pytest.mark.parametrize("precision", encoders.PRECISIONS)
def test_a_damaged_export_is_replaced(local_embedder, exported_encoders, precision):
    model = local_embedder.model
    (kept,) = [
        path
        for path in (exported_encoders / "models").glob("*.onnx")
        if path.name.endswith("-int8.onnx") == (precision == "int8")
    ]
    size = kept.stat().st_size
    kept.write_bytes(b"not a model")
    encoder = encoders.fast_encoder(model, embeddings.local_model_path(), precision=precision)
    assert (encoder.runtime, encoder.precision) == ("onnx", precision)
    assert kept.stat().st_size == size
    minimum = encoders.MIN_COSINE_INT8 if precision == "int8" else 1 - 1e-5
    assert agreement(model, encoder, texts=AGREEMENT_TEXTS[1:], batch_sizes=(1,)) >= minimum


def test_quantizing_silences_only_the_quantizers_notes_and_only_while_it_runs():
    import logging

    def record(pathname, level):
        return logging.LogRecord("root", level, pathname, 1, "note", None, None)

    notes = encoders._QuantizerNotes()
    quantizer = "/venv/site-packages/onnxruntime/quantization/onnx_quantizer.py"
    assert not notes.filter(record(quantizer, logging.INFO))
    assert not notes.filter(record(quantizer, logging.WARNING))
    assert notes.filter(record(quantizer, logging.ERROR))
    assert notes.filter(record("/work/main/bots/encoders.py", logging.INFO))
    root = logging.getLogger()
    before = list(root.filters)
    with pytest.raises(Exception):  # noqa: B017 - whatever the quantizer raises on garbage
        encoders._quantize(b"not a model")
    assert root.filters == before


def test_an_unwritable_var_dir_still_gives_the_onnx_pass(local_embedder, fresh_encoders, settings, warnings_logged):
    blocked = fresh_encoders / "file"
    blocked.write_text("VAR_DIR/models cannot be made under a file")
    settings.VAR_DIR = blocked
    encoder = int8_encoder(local_embedder)
    assert (encoder.runtime, encoder.precision) == ("onnx", "int8")
    # One for each file it could not keep: the fp32 export and the int8 one made from it.
    assert len(warnings_logged) == 2
    assert all("exported again per process" in warning for warning in warnings_logged)


def break_encoder(monkeypatch, encoder_class, failure, *, precision=None):
    """Make `encoder_class` (of one precision, or any) fail to build, or give vectors
    pointing the other way."""
    if failure == "build":
        real_init = encoder_class.__init__

        def broken(self, *args, **kwargs):
            if precision is None or kwargs.get("precision", "fp32") == precision:
                raise RuntimeError("this runtime is missing")
            real_init(self, *args, **kwargs)

        monkeypatch.setattr(encoder_class, "__init__", broken)
    else:
        real = encoder_class._pass

        def disagreeing(self, texts):
            vectors = real(self, texts)
            if precision is None or self.precision == precision:
                return [[-x for x in v] for v in vectors]
            return vectors

        monkeypatch.setattr(encoder_class, "_pass", disagreeing)


@pytest.mark.parametrize("failure", ["build", "disagree"])
def test_an_int8_pass_that_fails_gives_way_to_the_fp32_encoder(
    local_embedder, exported_encoders, monkeypatch, warnings_logged, failure
):
    break_encoder(monkeypatch, encoders.OnnxEncoder, failure, precision="int8")
    assert int8_encoder(local_embedder) is None
    assert len(warnings_logged) == 1 and "onnx int8" in warnings_logged[0]
    # Questions are then embedded exactly as documents are, by the one fp32 encoder.
    question = "How long does delivery to Chennai take?"
    assert local_embedder.embed_queries([question])[0] == pytest.approx(local_embedder.embed_documents([question])[0])
    built = [entry[2] for entry in encoders._encoders.values() if entry[2] is not None]
    assert [(e.runtime, e.precision) for e in built] == [("onnx", "fp32")]


def test_a_damaged_int8_file_is_quantized_again_from_the_kept_fp32_export(
    local_embedder, exported_encoders, monkeypatch
):
    (kept,) = (exported_encoders / "models").glob("*-int8.onnx")
    kept.write_bytes(b"not a model")
    monkeypatch.setattr(encoders, "_export_onnx", lambda model: pytest.fail("the good fp32 export was redone"))
    assert int8_encoder(local_embedder).precision == "int8"
    assert kept.stat().st_size > 47_000_000


@pytest.mark.parametrize("failure", ["build", "disagree"])
def test_a_runtime_that_fails_gives_way_to_the_next(
    local_embedder, exported_encoders, monkeypatch, warnings_logged, failure
):
    break_encoder(monkeypatch, encoders.OnnxEncoder, failure)
    encoder = encoders.fast_encoder(local_embedder.model, embeddings.local_model_path())
    assert (encoder.runtime, encoder.precision) == ("torchscript", "fp32")
    assert len(warnings_logged) == 1 and "onnx fp32" in warnings_logged[0]
    # Questions too: without ONNX Runtime there is no int8 pass.
    assert int8_encoder(local_embedder) is None
    question = "How long does delivery to Chennai take?"
    assert local_embedder.embed_queries([question])[0] == pytest.approx(local_embedder.embed_documents([question])[0])


@pytest.mark.parametrize("failure", ["build", "disagree"])
def test_without_a_faithful_fast_pass_the_eager_model_is_used(
    local_embedder, fresh_encoders, monkeypatch, settings, warnings_logged, failure
):
    settings.EMBEDDING_RUNTIME = "torchscript"
    break_encoder(monkeypatch, encoders.ScriptedEncoder, failure)
    assert encoders.fast_encoder(local_embedder.model, embeddings.local_model_path()) is None
    assert len(warnings_logged) == 2 and "using the eager model" in warnings_logged[-1]
    eager = local_embedder.model.encode(["refund"], normalize_embeddings=True)[0]
    assert float(eager @ local_embedder.embed_documents(["refund"])[0]) == pytest.approx(1.0, abs=1e-6)


def test_an_unknown_runtime_is_a_configuration_error(local_embedder, fresh_encoders, settings):
    settings.EMBEDDING_RUNTIME = "tensorrt"
    with pytest.raises(ImproperlyConfigured, match="EMBEDDING_RUNTIME"):
        encoders.fast_encoder(local_embedder.model, embeddings.local_model_path())


def test_an_unknown_query_precision_is_a_configuration_error(local_embedder, settings):
    settings.EMBEDDING_QUERY_PRECISION = "int4"
    with pytest.raises(ImproperlyConfigured, match="EMBEDDING_QUERY_PRECISION"):
        local_embedder.embed_queries(["refund"])


def test_the_local_model_runs_with_embedding_threads_intra_op_threads(local_embedder, settings):
    import torch

    assert settings.EMBEDDING_THREADS == 1
    assert torch.get_num_threads() == 1  # (torch's own default is one per core)


def test_the_onnx_pass_runs_with_embedding_threads_intra_op_threads(local_embedder, exported_encoders, settings):
    settings.EMBEDDING_THREADS = 2
    encoder = encoders.fast_encoder(local_embedder.model, embeddings.local_model_path())
    options = encoder.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
