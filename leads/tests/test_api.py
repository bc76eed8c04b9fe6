import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bots.tests.factories import BotFactory
from geo.models import ServiceArea
from leads import services
from leads.models import Lead
from leads.tests.factories import ConversationFactory, LeadFactory

pytestmark = pytest.mark.django_db


def make_leads(bot, n, **kwargs):
    leads = []
    for _ in range(n):
        lead = LeadFactory(bot=bot, **kwargs)
        lead.conversations.add(ConversationFactory(bot=bot), ConversationFactory(bot=bot))
        leads.append(lead)
    return leads


def test_list_is_scoped_to_the_owner_and_paginated(owner_client, owner, other_owner):
    mine = make_leads(BotFactory(owner=owner), 2) + make_leads(BotFactory(owner=owner), 1)
    make_leads(BotFactory(owner=other_owner), 2)
    response = owner_client.get("/api/v1/leads/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert {row["id"] for row in body["results"]} == {lead.pk for lead in mine}
    row = body["results"][0]
    assert len(row["conversation_ids"]) == 2 and {"score", "score_breakdown", "nearest_area", "bot_name"} <= set(row)


def test_list_query_count_does_not_grow_with_the_page(owner_client, owner):
    bot = BotFactory(owner=owner)
    make_leads(bot, 2)
    owner_client.get("/api/v1/leads/")  # the token's last-used time is written once in a while
    with CaptureQueriesContext(connection) as few:
        assert owner_client.get("/api/v1/leads/").status_code == 200
    make_leads(bot, 12)
    with CaptureQueriesContext(connection) as many:
        assert owner_client.get("/api/v1/leads/").json()["count"] == 14
    assert len(many) == len(few)
    # token (with its user) + count + leads with bot and area + their conversations
    assert len(many) == 4


def test_list_filters(owner_client, owner):
    bot, other_bot = BotFactory(owner=owner), BotFactory(owner=owner)
    anna = ServiceArea.objects.get(name="Anna Nagar")
    hot = LeadFactory(bot=bot, score=80, status="qualified", nearest_area=anna, name="Lakshmi", company="Kaveri Foods")
    LeadFactory(bot=bot, score=20)
    old = LeadFactory(bot=other_bot, score=50)
    Lead.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))

    def ids(query):
        response = owner_client.get("/api/v1/leads/", query)
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    assert ids({"bot": other_bot.pk}) == {old.pk}
    assert ids({"status": "qualified"}) == {hot.pk}
    assert ids({"score_min": 50}) == {hot.pk, old.pk}
    assert ids({"score_min": 30, "score_max": 60}) == {old.pk}
    assert ids({"area": anna.pk}) == {hot.pk}
    assert ids({"search": "kaveri"}) == {hot.pk}
    assert ids({"search": "LAKSH"}) == {hot.pk}
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert old.pk not in ids({"created_after": since})
    assert ids({"created_before": since}) == {old.pk}


@pytest.mark.parametrize(
    "query",
    [{"status": "hot"}, {"score_min": "lots"}, {"score_max": 101}, {"score_min": 70, "score_max": 10}, {"bot": "x"}],
)
def test_bad_filters_are_a_json_400(owner_client, query):
    response = owner_client.get("/api/v1/leads/", query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["detail"]
    assert owner_client.get("/api/v1/leads/export.csv", query).status_code == 400


def test_detail_shows_the_breakdown_and_history_and_hides_other_owners_leads(owner_client, owner, other_owner):
    bot = BotFactory(owner=owner)
    lead = services.lead_capture(bot=bot, email="d@example.com", phone="9876543210", source="form")
    response = owner_client.get(f"/api/v1/leads/{lead.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["score"] == 12 and body["score_breakdown"] == [
        {"marker": "contact_completeness", "points": 12, "evidence": "e-mail, phone"}
    ]
    assert body["score_events"][0]["marker"] == "contact_completeness"
    foreign = LeadFactory(bot=BotFactory(owner=other_owner))
    response = owner_client.get(f"/api/v1/leads/{foreign.pk}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert owner_client.patch(f"/api/v1/leads/{foreign.pk}/", {"status": "won"}, format="json").status_code == 404


def test_patch_edits_through_the_services(owner_client, owner):
    bot = BotFactory(owner=owner)
    lead = LeadFactory(bot=bot)
    LeadFactory(bot=bot, email="taken@example.com")
    url = f"/api/v1/leads/{lead.pk}/"
    response = owner_client.patch(url, {"status": "contacted", "name": "Arun", "phone": "044 2345 6789"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["name"], body["phone"]) == ("contacted", "Arun", "+914423456789")
    assert "contact_completeness" in {line["marker"] for line in body["score_breakdown"]}
    bad = owner_client.patch(url, {"phone": "12"}, format="json")
    assert bad.status_code == 400 and "phone" in bad.json()["detail"]
    assert owner_client.patch(url, {"status": "archived"}, format="json").status_code == 400
    conflict = owner_client.patch(url, {"email": "Taken@example.com"}, format="json")
    assert conflict.status_code == 409 and conflict.json()["code"] == "duplicate_email"


def test_export_streams_csv_with_filters_and_neutralises_formulas(owner_client, owner, other_owner):
    bot = BotFactory(owner=owner, name="Shop")
    LeadFactory(
        bot=bot,
        email="evil@example.com",
        name='=HYPERLINK("http://evil.example","click")',
        company="@SUM(A1:A2)",
        phone="+919876543210",
        score=70,
        score_breakdown=[{"marker": "budget", "points": 15, "evidence": "budget is 50k"}],
    )
    LeadFactory(bot=bot, email="cold@example.com", score=5)
    LeadFactory(bot=BotFactory(owner=other_owner), email="theirs@example.com")
    response = owner_client.get("/api/v1/leads/export.csv", {"score_min": 50})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["email"] for row in rows] == ["evil@example.com"]
    row = rows[0]
    assert row["name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert row["company"] == "'@SUM(A1:A2)"
    assert row["phone"] == "'+919876543210"
    assert row["bot"] == "Shop" and row["score"] == "70" and row["score_breakdown"] == "budget +15"
    everything = owner_client.get("/api/v1/leads/export.csv")
    text = b"".join(everything.streaming_content).decode()
    assert "cold@example.com" in text and "theirs@example.com" not in text


def test_lead_endpoints_need_authentication(api_client):
    for url in ("/api/v1/leads/", "/api/v1/leads/1/", "/api/v1/leads/export.csv"):
        response = api_client.get(url)
        assert response.status_code == 401 and response.json()["code"]
