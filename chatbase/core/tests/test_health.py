import pytest

pytestmark = pytest.mark.django_db


def test_health_is_ok(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_checks_the_database(client, settings):
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == ("ok" if settings.REDIS_URL else "disabled")
    assert body["checks"]["broker"] == "disabled"  # the test settings run tasks eagerly


def test_ready_checks_the_broker_when_tasks_are_queued(client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    from chatbase.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        response = client.get("/ready")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error:")


def test_ready_is_503_naming_redis_when_redis_is_down(client, settings):
    # Nothing listens on port 1: the configured Redis is unreachable.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"].startswith("error:")
    assert body["checks"]["database"] == "ok"


def test_metrics_are_prometheus_text(client):
    client.get("/health")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "django_http_requests_total_by_view_transport_method_total" in response.content.decode()


def test_api_docs_and_schema(client):
    assert client.get("/api/docs/").status_code == 200
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/me/" in schema.content
