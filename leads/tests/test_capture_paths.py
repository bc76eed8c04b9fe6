"""A lead from each capture path: the widget's lead.submit frame, contact details in a
chat message, and the capture_lead tool called by a model (over the fake LLM server)."""

import asyncio

import pytest
import responses
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from bots.llm.clients import aclose_clients
from bots.llm.tools import ToolContext, specs_for
from bots.tests.factories import BotFactory
from chatbase.asgi import application
from chatbase.testing.fake_llm import Script
from conversations import chat
from conversations.models import Conversation
from leads.models import Lead
from leads.tests.factories import ConversationFactory

ORIGIN = "https://shop.example.com"
CHENNAI = {"ip": "49.207.48.0", "city": "Chennai", "region": "Tamil Nadu", "country": "IN", "loc": "13.0891,80.2107"}


async def connect(bot, *, client=None, headers=()):
    comm = WebsocketCommunicator(
        application, f"/ws/chat/{bot.public_key}/", headers=[(b"origin", ORIGIN.encode()), *headers]
    )
    if client:
        # The peer address as the server would see it (read when the consumer starts).
        comm.scope["client"] = (client, 50123)
    connected, _ = await comm.connect()
    assert connected
    ready = await comm.receive_json_from(timeout=10)
    assert ready["type"] == "session.ready"
    return comm, ready


def get_lead(pk):
    return Lead.objects.select_related("nearest_area").prefetch_related("conversations").get(pk=pk)


@pytest.fixture
def widget_bot(transactional_db):
    return BotFactory(allowed_origins=[ORIGIN])


@pytest.mark.django_db(transaction=True)
async def test_lead_submit_frame_saves_a_lead(widget_bot):
    comm, ready = await connect(widget_bot, client="49.207.48.213")
    await comm.send_json_to(
        {"type": "lead.submit", "email": "Priya@Example.com", "name": "Priya", "phone": "98400 12345"}
    )
    saved = await comm.receive_json_from(timeout=10)
    assert saved["type"] == "lead.saved"
    lead = await database_sync_to_async(get_lead)(saved["lead_id"])
    assert (lead.email, lead.name, lead.phone, lead.source) == ("priya@example.com", "Priya", "+919840012345", "form")
    assert [c.pk for c in lead.conversations.all()] == [ready["conversation_id"]]
    assert lead.ip_anonymised == "49.207.48.0"  # never the full address
    assert {line["marker"] for line in lead.score_breakdown} == {"contact_completeness"}
    # A second submit of the same address updates the same lead.
    await comm.send_json_to({"type": "lead.submit", "email": "priya@example.com", "name": "Priya R"})
    again = await comm.receive_json_from(timeout=10)
    assert again == {"type": "lead.saved", "lead_id": lead.pk}
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"phone": "12345"}, "phone"),
        ({"email": 7}, "email"),
        ({}, "at least one"),
        ({"name": "   "}, "at least one"),
        ({"email": "a@example.com", "consent": "sure"}, "consent"),
    ],
)
async def test_invalid_lead_submit_is_an_invalid_error_and_saves_nothing(widget_bot, frame, detail):
    comm, _ = await connect(widget_bot)
    await comm.send_json_to({"type": "lead.submit", **frame})
    error = await comm.receive_json_from(timeout=10)
    assert error["type"] == "error" and error["code"] == "invalid"
    assert detail in error["detail"]
    assert await database_sync_to_async(Lead.objects.count)() == 0
    # The socket stays usable.
    await comm.send_json_to({"type": "lead.submit", "email": "ok@example.com"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "lead.saved"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_lead_submit_is_rate_limited(widget_bot, settings):
    settings.LEAD_SUBMIT_RATE = "2/hour"  # not per minute: a fixed minute window could end between the hits
    comm, _ = await connect(widget_bot)
    for _ in range(2):
        await comm.send_json_to({"type": "lead.submit", "email": "ok@example.com"})
        assert (await comm.receive_json_from(timeout=10))["type"] == "lead.saved"
    await comm.send_json_to({"type": "lead.submit", "email": "ok@example.com"})
    error = await comm.receive_json_from(timeout=10)
    assert error["code"] == "rate_limited"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_spoofed_forwarded_for_from_an_untrusted_client_is_ignored(widget_bot, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    spoof = [(b"x-forwarded-for", b"8.8.8.8")]
    comm, _ = await connect(widget_bot, client="49.207.48.213", headers=spoof)
    await comm.send_json_to({"type": "lead.submit", "email": "direct@example.com"})
    lead = await database_sync_to_async(get_lead)((await comm.receive_json_from(timeout=10))["lead_id"])
    assert lead.ip_anonymised == "49.207.48.0"
    await comm.disconnect()
    # Behind a trusted proxy the forwarded address is the client's.
    comm, _ = await connect(widget_bot, client="10.1.2.3", headers=[(b"x-forwarded-for", b"49.207.50.77")])
    await comm.send_json_to({"type": "lead.submit", "email": "proxied@example.com"})
    lead = await database_sync_to_async(get_lead)((await comm.receive_json_from(timeout=10))["lead_id"])
    assert lead.ip_anonymised == "49.207.50.0"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_submit_geolocates_to_the_nearest_service_area(widget_bot, settings):
    settings.IPINFO_TOKEN = "t"
    with responses.RequestsMock() as ipinfo:
        ipinfo.get("https://ipinfo.io/49.207.48.0", json=CHENNAI)
        comm, _ = await connect(widget_bot, client="49.207.48.213")
        await comm.send_json_to({"type": "lead.submit", "email": "near@example.com"})
        lead = await database_sync_to_async(get_lead)((await comm.receive_json_from(timeout=10))["lead_id"])
        await comm.disconnect()
        assert len(ipinfo.calls) == 1
    assert (lead.country, lead.region, lead.city) == ("IN", "Tamil Nadu", "Chennai")
    assert lead.nearest_area.name == "Anna Nagar" and lead.distance_km < 0.5
    assert "in_service_area" in {line["marker"] for line in lead.score_breakdown}


@pytest.mark.django_db(transaction=True)
async def test_without_consent_a_consent_bot_stores_no_ip_and_looks_nothing_up(settings):
    settings.IPINFO_TOKEN = "t"
    bot = await database_sync_to_async(BotFactory)(allowed_origins=[ORIGIN], configuration={"require_consent": True})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as ipinfo:
        ipinfo.get("https://ipinfo.io/49.207.48.0", json=CHENNAI)
        comm, _ = await connect(bot, client="49.207.48.213")
        await comm.send_json_to({"type": "lead.submit", "email": "shy@example.com"})
        lead = await database_sync_to_async(get_lead)((await comm.receive_json_from(timeout=10))["lead_id"])
        assert lead.ip_anonymised is None and lead.city == ""
        assert len(ipinfo.calls) == 0
        # With consent given, the same visitor is located.
        await comm.send_json_to({"type": "lead.submit", "email": "shy@example.com", "consent": True})
        lead = await database_sync_to_async(get_lead)((await comm.receive_json_from(timeout=10))["lead_id"])
        await comm.disconnect()
        assert len(ipinfo.calls) == 1
    assert lead.consent and lead.consent_at is not None
    assert lead.ip_anonymised == "49.207.48.0" and lead.city == "Chennai"


@pytest.mark.django_db(transaction=True)
async def test_contact_details_in_a_chat_message_make_a_lead(widget_bot):
    comm, ready = await connect(widget_bot)
    text = "We want to buy 20 units, call me on 98400 12345 or mail ravi@example.in"
    await comm.send_json_to({"type": "message.send", "text": text})
    assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
    while (await comm.receive_json_from(timeout=15))["type"] not in ("answer.done", "error"):
        pass
    await comm.disconnect()
    lead = await database_sync_to_async(Lead.objects.get)(bot=widget_bot)
    assert (lead.email, lead.phone, lead.source) == ("ravi@example.in", "+919840012345", "widget")
    markers = {line["marker"]: line["evidence"] for line in lead.score_breakdown}
    assert markers["purchase_intent"] == "want to buy" and markers["quantity"] == "20 units"
    assert await database_sync_to_async(lambda: list(lead.conversations.values_list("id", flat=True)))() == [
        ready["conversation_id"]
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_visitor_who_leaves_mid_answer_still_becomes_a_lead(widget_bot, fake_llm):
    fake_llm.openai.enqueue(Script(text=" ".join(f"w{i}" for i in range(200)), tokens_per_second=20))
    comm, _ = await connect(widget_bot)
    await comm.send_json_to({"type": "message.send", "text": "We want to buy 20 units, mail ravi@example.in"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
    assert (await comm.receive_json_from(timeout=15))["type"] == "answer.delta"
    await comm.disconnect()
    await aclose_clients()
    lead = await database_sync_to_async(Lead.objects.get)(bot=widget_bot)
    assert lead.email == "ravi@example.in"


@pytest.fixture
def gated_detection(monkeypatch):
    """Lead detection that says when it starts and then waits for `gate`."""
    import threading

    from leads import services

    real = services.lead_message_process
    started, gate = threading.Event(), threading.Event()

    def detect(*, message):
        started.set()
        assert gate.wait(10)
        return real(message=message)

    monkeypatch.setattr(services, "lead_message_process", detect)
    yield started, gate
    gate.set()  # a failed test must not leave a database thread waiting


@pytest.mark.django_db(transaction=True)
async def test_chat_lead_detection_runs_beside_the_answer_and_is_done_by_answer_done(
    widget_bot, fake_llm, gated_detection
):
    # Run inside the message's store, it stood between the message and the first token.
    from chatbase.core.db import _chat_executor

    started, gate = gated_detection
    # With one database thread the answer's own storing would queue behind the held-up
    # detection and answer.done would wait for it anyway, proving nothing.
    assert _chat_executor()._max_workers >= 2
    fake_llm.openai.enqueue(Script(text=" ".join(f"w{i}" for i in range(8)), tokens_per_second=40))
    comm, _ = await connect(widget_bot)
    await comm.send_json_to({"type": "message.send", "text": "We want to buy 20 units, mail ravi@example.in"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
    assert not started.is_set()  # not inside the store
    assert (await comm.receive_json_from(timeout=15))["type"] == "answer.delta"
    assert await database_sync_to_async(started.wait)(5)  # begun once the first token was out
    # The answer streams to its end while detection is held up; answer.done waits for it.
    text = ""
    while not text.endswith("w7"):
        frame = await comm.receive_json_from(timeout=5)
        assert frame["type"] == "answer.delta"
        text += frame["delta"]
    assert await comm.receive_nothing(timeout=1)
    gate.set()
    assert (await comm.receive_json_from(timeout=10))["type"] == "answer.done"
    lead = await database_sync_to_async(Lead.objects.get)(bot=widget_bot)
    assert lead.email == "ravi@example.in"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_lead_form_waits_for_a_running_detection_and_both_find_one_lead(
    widget_bot, fake_llm, gated_detection
):
    # Side by side, each would look for the conversation's lead, find none and create one.
    started, gate = gated_detection
    fake_llm.openai.enqueue(Script(text=" ".join(f"w{i}" for i in range(40)), tokens_per_second=20))
    comm, _ = await connect(widget_bot)
    await comm.send_json_to({"type": "message.send", "text": "We want to buy 20 units, call me on 98400 12345"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
    assert (await comm.receive_json_from(timeout=15))["type"] == "answer.delta"
    assert await database_sync_to_async(started.wait)(5)
    await comm.send_json_to({"type": "lead.submit", "email": "ravi@example.in"})
    frames = []
    for _ in range(10):  # the answer goes on streaming; the form's reply waits
        frames.append((await comm.receive_json_from(timeout=5))["type"])
    assert "lead.saved" not in frames
    gate.set()
    while (await comm.receive_json_from(timeout=10))["type"] != "lead.saved":
        pass
    await comm.disconnect()
    lead = await database_sync_to_async(Lead.objects.get)(bot=widget_bot)
    assert (lead.email, lead.phone) == ("ravi@example.in", "+919840012345")


async def lead_appears(queryset, seconds=5.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if await queryset.aexists():
            return True
        await asyncio.sleep(0.05)
    return await queryset.aexists()


@pytest.mark.django_db(transaction=True)
async def test_a_message_stored_but_never_answered_is_still_searched_for_a_lead(widget_bot, monkeypatch):
    # The handler fails between the store and the answer (say, the ack cannot be sent):
    # what the store held for the first token must run anyway.
    from conversations.consumers import ChatConsumer

    real_store = ChatConsumer._store

    async def store_then_fail(self, text, client_id, **kwargs):
        await real_store(self, text, client_id, **kwargs)
        raise RuntimeError("the socket broke after the store")

    monkeypatch.setattr(ChatConsumer, "_store", store_then_fail)
    comm, _ = await connect(widget_bot)
    await comm.send_json_to({"type": "message.send", "text": "We want to buy 20 units, mail ravi@example.in"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "error"
    assert await lead_appears(Lead.objects.filter(bot=widget_bot, email="ravi@example.in"))
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_failing_held_detection_does_not_fail_the_answer(widget_bot, fake_llm, monkeypatch):
    from leads import services

    def broken(*, message):
        raise RuntimeError("scoring is broken")

    monkeypatch.setattr(services, "lead_message_process", broken)
    fake_llm.openai.enqueue(Script(text="Happy to help with 20 units."))
    comm, _ = await connect(widget_bot)
    await comm.send_json_to({"type": "message.send", "text": "We want to buy 20 units, mail ravi@example.in"})
    frames = []
    while not frames or frames[-1]["type"] not in ("answer.done", "error"):
        frames.append(await comm.receive_json_from(timeout=15))
    assert frames[-1]["type"] == "answer.done" and frames[-1]["text"] == "Happy to help with 20 units."
    await comm.disconnect()
    assert not await Lead.objects.filter(bot=widget_bot).aexists()


@pytest.mark.django_db(transaction=True)
async def test_a_message_whose_answer_is_refused_is_still_searched_for_a_lead(widget_bot, fake_llm):
    from bots.services.bots import bot_update
    from conversations.tests.test_budgets import spend

    await database_sync_to_async(bot_update)(bot=widget_bot, configuration={"daily_token_budget": 10})
    await database_sync_to_async(spend)(widget_bot, tokens=10)  # today's budget is spent
    comm, _ = await connect(widget_bot)
    await comm.send_json_to({"type": "message.send", "text": "We want to buy 20 units, mail ravi@example.in"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
    error = await comm.receive_json_from(timeout=10)
    assert error["type"] == "error" and error["code"] == "rate_limited"  # no answer, so no first token
    # Run as the refused answer ends, just after the error frame.
    assert await lead_appears(Lead.objects.filter(bot=widget_bot, email="ravi@example.in"))
    await comm.disconnect()


@pytest.mark.django_db
def test_buying_intent_without_contact_details_is_an_anonymous_lead(django_capture_on_commit_callbacks):
    from conversations.services import message_user_add

    conversation = ConversationFactory()
    with django_capture_on_commit_callbacks(execute=True):
        message_user_add(conversation=conversation, text="hello, who are you?")
    assert not Lead.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        message_user_add(conversation=conversation, text="What's the price of the premium plan?")
    lead = Lead.objects.get()
    assert lead.email == "" and lead.score > 0
    assert list(lead.conversations.all()) == [conversation]


# --- the capture_lead tool ------------------------------------------------------------
@pytest.mark.django_db
def test_capture_lead_is_never_offered_to_an_anonymous_visitor(owner):
    bot = BotFactory(owner=owner)
    visitor = ToolContext(bot=bot, conversation_id=1, owner=None, visitor_id="v1")
    assert "capture_lead" not in [s.name for s in specs_for(visitor)]
    assert "find_nearest_area" in [s.name for s in specs_for(visitor)]
    assert "capture_lead" in [s.name for s in specs_for(ToolContext(bot=bot, conversation_id=1, owner=owner))]


@pytest.fixture
def owner_chat(owner, fake_llm, settings, transactional_db):
    """An owner's API conversation answered by the fake OpenAI server; returns (conversation, say)."""
    settings.OPENAI_API_KEY = "sk-fake"
    settings.OPENAI_BASE_URL = fake_llm.openai_base_url
    settings.LLM_PROVIDERS = ["openai", "extractive"]
    bot = BotFactory(owner=owner)
    conversation = ConversationFactory(bot=bot, visitor_id=f"owner:{owner.pk}", channel=Conversation.Channel.API)

    def say(text):
        from conversations.services import message_user_add

        message_user_add(conversation=conversation, text=text)

    return conversation, database_sync_to_async(say)


async def _answer_with_tool(fake_llm, conversation, owner, arguments, reply):
    from bots.llm.clients import aclose_clients
    from chatbase.testing.fake_llm import Script

    fake_llm.openai.enqueue(
        Script(text="", tool_calls=[{"name": "capture_lead", "arguments": arguments}]), Script(text=reply)
    )
    message = await chat.answer_collect(conversation=conversation, owner=owner)
    await aclose_clients()
    tool_result = next(m for m in fake_llm.requests_for("openai")[1].body["messages"] if m["role"] == "tool")
    return message, tool_result["content"]


async def test_a_model_captures_a_lead_with_the_tool(owner, owner_chat, fake_llm):
    conversation, say = owner_chat
    await say("I'm Meena from Kaveri Foods, reach me at meena@kaveri.in")
    arguments = {"email": "meena@kaveri.in", "name": "Meena", "company": "Kaveri Foods"}
    message, result = await _answer_with_tool(
        fake_llm, conversation, owner, arguments, "Thanks Meena, someone will be in touch."
    )
    assert message.text == "Thanks Meena, someone will be in touch."
    lead = await database_sync_to_async(Lead.objects.get)(bot_id=conversation.bot_id, email="meena@kaveri.in")
    assert (lead.name, lead.company, lead.source) == ("Meena", "Kaveri Foods", "api")
    assert f'"lead_id": {lead.pk}' in result


async def test_the_tool_refuses_details_the_user_never_wrote(owner, owner_chat, fake_llm):
    conversation, say = owner_chat
    await say("hi, just looking around")
    _, result = await _answer_with_tool(fake_llm, conversation, owner, {"email": "invented@example.com"}, "OK.")
    assert not await database_sync_to_async(Lead.objects.filter(email="invented@example.com").exists)()
    assert "did not write" in result


@pytest.mark.django_db
def test_a_message_lead_is_located_from_the_conversations_anonymised_ip(settings, django_capture_on_commit_callbacks):
    from conversations.services import message_user_add

    settings.IPINFO_TOKEN = "t"
    conversation = ConversationFactory(metadata={"ip_anonymised": "49.207.48.0"})
    with responses.RequestsMock() as ipinfo:
        ipinfo.get("https://ipinfo.io/49.207.48.0", json=CHENNAI)
        with django_capture_on_commit_callbacks(execute=True):
            message_user_add(conversation=conversation, text="mail me at geo@example.com")
        assert len(ipinfo.calls) == 1
    lead = Lead.objects.get(email="geo@example.com")
    assert lead.city == "Chennai" and lead.nearest_area.name == "Anna Nagar"


@pytest.mark.django_db
def test_score_weights_must_name_markers(owner_client, owner):
    bot = BotFactory(owner=owner)
    url = f"/api/v1/bots/{bot.pk}/"
    bad = owner_client.patch(url, {"configuration": {"score_weights": {"vibes": 10}}}, format="json")
    assert bad.status_code == 400 and "vibes" in bad.json()["detail"]
    bad = owner_client.patch(url, {"configuration": {"score_weights": {"budget": 1.5}}}, format="json")
    assert bad.status_code == 400
    ok = owner_client.patch(url, {"configuration": {"score_weights": {"budget": 30}}}, format="json")
    assert ok.status_code == 200 and ok.json()["configuration"]["score_weights"] == {"budget": 30}


@pytest.mark.django_db
def test_with_a_broker_detection_is_published_as_a_task(django_capture_on_commit_callbacks, monkeypatch):
    from chatbase.celery import app
    from conversations.services import message_user_add
    from leads.tasks import lead_message_process_task

    published = []
    monkeypatch.setattr(lead_message_process_task, "delay", lambda message_id: published.append(message_id))
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    conversation = ConversationFactory()
    with django_capture_on_commit_callbacks(execute=True):
        stored = message_user_add(conversation=conversation, text="What's the price of the premium plan?")
    assert published == [stored.message.pk]
    assert not Lead.objects.exists()  # a worker will make it
