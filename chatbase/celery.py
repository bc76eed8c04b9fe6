"""The Celery application. With no REDIS_URL tasks run eagerly in-process."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbase.settings.local")

app = Celery("chatbase")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_success.connect
def _count_success(sender=None, **kwargs):
    from chatbase.core import metrics

    metrics.celery_tasks.labels(sender.name if sender else "unknown", "success").inc()


@signals.task_failure.connect
def _count_failure(sender=None, **kwargs):
    from chatbase.core import metrics

    metrics.celery_tasks.labels(sender.name if sender else "unknown", "failure").inc()


@signals.task_retry.connect
def _count_retry(sender=None, **kwargs):
    from chatbase.core import metrics

    metrics.celery_tasks.labels(sender.name if sender else "unknown", "retry").inc()


# The request id of whatever enqueued a task travels with it and tags its logs.
@signals.before_task_publish.connect
def _send_request_id(headers=None, **kwargs):
    from chatbase.core.logging import request_id_var

    if headers is not None:
        headers.setdefault("request_id", request_id_var.get())


@signals.task_prerun.connect
def _receive_request_id(task=None, **kwargs):
    from chatbase.core.logging import new_request_id, request_id_var

    if task is not None and task.request.is_eager:
        # Run in-process as part of the caller's work (no broker): keep the caller's id,
        # which a new one would also overwrite for the rest of the caller's context.
        return
    incoming = getattr(task.request, "request_id", None) if task else None
    request_id_var.set(incoming if incoming and incoming != "-" else f"task-{new_request_id()}")
