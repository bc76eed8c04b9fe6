"""Tasks held until the reply is sent (chatbase.core.deferred)."""

import pytest
from celery import shared_task

from chatbase.celery import app
from chatbase.core import deferred

RAN: list[str] = []


@shared_task(name="tests.core.record")
def record(label):
    RAN.append(label)
    if label == "fails":
        raise RuntimeError("a task of ours failing")
    return label


@pytest.fixture(autouse=True)
def clean():
    RAN.clear()


def test_outside_a_reply_an_eager_task_runs_at_once():
    assert app.conf.task_always_eager
    deferred.enqueue(record, "now")
    assert RAN == ["now"]


def test_inside_a_reply_eager_tasks_wait_for_run_held_in_order():
    with deferred.held_until_reply() as held:
        deferred.enqueue(record, "first")
        deferred.enqueue(record, "second")
        assert RAN == []
    assert len(held) == 2
    deferred.enqueue(record, "after the scope")  # the scope is closed: not held
    assert RAN == ["after the scope"]
    deferred.run_held(held)
    assert RAN == ["after the scope", "first", "second"] and len(held) == 0


def test_a_task_sent_after_its_list_was_taken_runs_at_once():
    # An answer cancelled twice can still be finishing on a database thread.
    with deferred.held_until_reply() as held:
        deferred.enqueue(record, "held")
        deferred.run_held(held)
        deferred.enqueue(record, "late")
        assert RAN == ["held", "late"]
    assert len(held) == 0


def test_steps_of_one_reply_share_a_list_and_one_failure_stops_nothing():
    with deferred.held_until_reply() as held:
        deferred.enqueue(record, "stored")
    with deferred.held_until_reply(held):
        deferred.enqueue(record, "fails")
        deferred.enqueue(record, "answered")
    assert RAN == []
    deferred.run_held(held)
    assert RAN == ["stored", "fails", "answered"]


def test_with_a_broker_tasks_are_published_at_once(monkeypatch):
    # Publishing is cheap and a worker runs the task whatever happens to this process.
    published = []
    monkeypatch.setattr(record, "delay", lambda *args: published.append(args))
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        with deferred.held_until_reply() as held:
            deferred.enqueue(record, "published")
    finally:
        app.conf.task_always_eager = saved
    assert published == [("published",)] and len(held) == 0


def test_hold_keeps_a_call_only_inside_a_reply_being_prepared():
    calls = []
    assert deferred.hold(lambda: calls.append("outside")) is False  # the caller runs it
    with deferred.held_until_reply() as held:
        assert deferred.hold(lambda: calls.append("held")) is True
        with deferred.not_held():
            # Work running beside the reply: what it sends is its own, not held.
            assert deferred.hold(lambda: calls.append("beside")) is False
            deferred.enqueue(record, "beside")
        assert RAN == ["beside"]
    assert calls == []
    deferred.run_held(held)
    assert calls == ["held"]
    with deferred.held_until_reply(held):
        assert deferred.hold(lambda: calls.append("late")) is False  # taken already
