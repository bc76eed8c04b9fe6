import csv
import io

import pytest
from django.urls import reverse

from bots.tests.factories import BotFactory
from conversations.services import message_user_add
from geo.models import ServiceArea
from leads import services
from leads.models import Lead
from leads.tests.factories import ConversationFactory, LeadFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:leads_lead_changelist")


def test_changelist_with_filters_search_and_charts(staff_client):
    bot = BotFactory(name="Aircon bot")
    anna = ServiceArea.objects.get(name="Anna Nagar")
    LeadFactory(bot=bot, email="hot@example.com", score=85, nearest_area=anna, distance_km=0.2)
    LeadFactory(bot=bot, email="warm@example.com", score=45)
    LeadFactory(bot=bot, email="cold@example.com", score=5)
    page = staff_client.get(CHANGELIST)
    assert page.status_code == 200
    html = page.content.decode()
    for needle in ("hot@example.com", "cold@example.com", "Leads per day", "Score distribution", "<svg", "80-89: 1"):
        assert needle in html, needle
    assert "<script" not in html.split('id="content"')[1].split("</svg>")[0]  # the chart is script-free
    filtered = staff_client.get(CHANGELIST, {"score_range": "80-100"}).content.decode()
    assert "hot@example.com" in filtered and "warm@example.com" not in filtered
    # The charts follow the filter: one lead in total.
    assert "Score distribution — 1 lead" in filtered
    assert "warm@example.com" in staff_client.get(CHANGELIST, {"q": "warm"}).content.decode()
    by_area = staff_client.get(CHANGELIST, {"nearest_area__id__exact": anna.pk}).content.decode()
    assert "hot@example.com" in by_area and "cold@example.com" not in by_area
    assert "cold@example.com" in staff_client.get(CHANGELIST, {"bot__id__exact": bot.pk}).content.decode()


def test_change_page_explains_the_score_and_shows_the_transcript_escaped(
    staff_client, django_capture_on_commit_callbacks
):
    conversation = ConversationFactory()
    with django_capture_on_commit_callbacks(execute=True):
        message_user_add(conversation=conversation, text="We want to buy 10 units <script>alert(1)</script>")
    lead = services.lead_capture(
        bot=conversation.bot, conversation=conversation, email="x@example.com", source="widget"
    )
    page = staff_client.get(reverse("admin:leads_lead_change", args=[lead.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "purchase_intent" in html and "want to buy" in html and "+20" in html
    assert "10 units" in html


def test_saving_the_form_goes_through_the_services(staff_client):
    lead = LeadFactory(email="edit@example.com")
    url = reverse("admin:leads_lead_change", args=[lead.pk])
    data = {"email": "edit@example.com", "name": "Kavya", "phone": "98400 12345", "company": "", "status": "won"}
    data |= {f"score_events-{k}": v for k, v in {"TOTAL_FORMS": 0, "INITIAL_FORMS": 0}.items()}
    response = staff_client.post(url, data, follow=True)
    assert response.status_code == 200
    lead.refresh_from_db()
    assert (lead.name, lead.phone, lead.status) == ("Kavya", "+919840012345", "won")
    assert any(line["marker"] == "contact_completeness" for line in lead.score_breakdown)


def test_bulk_status_and_csv_actions(staff_client):
    leads = [LeadFactory(email=f"bulk{i}@example.com", name=f"=cmd{i}") for i in range(3)]
    ids = [lead.pk for lead in leads[:2]]
    response = staff_client.post(CHANGELIST, {"action": "mark_contacted", "_selected_action": ids}, follow=True)
    assert b"Marked 2 lead(s) as contacted" in response.content
    assert list(Lead.objects.filter(status="contacted").values_list("pk", flat=True).order_by("pk")) == sorted(ids)
    export = staff_client.post(CHANGELIST, {"action": "export_csv", "_selected_action": ids})
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert sorted(row["email"] for row in rows) == ["bulk0@example.com", "bulk1@example.com"]
    assert all(row["name"].startswith("'=") for row in rows)


def test_service_areas_are_editable_in_admin(staff_client):
    area = ServiceArea.objects.get(name="Ambattur")
    url = reverse("admin:geo_servicearea_change", args=[area.pk])
    assert staff_client.get(url).status_code == 200
    data = {
        "name": "Ambattur",
        "city": "Chennai",
        "latitude": 13.1143,
        "longitude": 80.1548,
        "radius_km": 5,
        "is_active": "on",
    }
    staff_client.post(url, data, follow=True)
    area.refresh_from_db()
    assert area.radius_km == 5
    bad = staff_client.post(url, {**data, "latitude": 123})
    assert bad.status_code == 200 and b"errornote" in bad.content
    assert staff_client.get(reverse("admin:geo_servicearea_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:leads_leadscoreevent_changelist")).status_code == 200


def test_a_bad_phone_or_duplicate_address_is_a_form_error(staff_client):
    lead = LeadFactory(email="form@example.com")
    LeadFactory(bot=lead.bot, email="other@example.com")
    url = reverse("admin:leads_lead_change", args=[lead.pk])
    base = {"email": "form@example.com", "name": "", "company": "", "status": "new"}
    base |= {"score_events-TOTAL_FORMS": 0, "score_events-INITIAL_FORMS": 0}
    bad_phone = staff_client.post(url, {**base, "phone": "12345"})
    assert bad_phone.status_code == 200 and b"not a valid phone number" in bad_phone.content
    duplicate = staff_client.post(url, {**base, "phone": "", "email": "OTHER@example.com"})
    assert duplicate.status_code == 200 and b"errornote" in duplicate.content
    lead.refresh_from_db()
    assert (lead.email, lead.phone) == ("form@example.com", "")
