import pytest
from django.urls import reverse

from bots.models import Bot, Document, PromptTemplate
from bots.services.documents import document_create
from bots.tests.factories import BotFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(media_root, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        doc = document_create(bot=BotFactory(), title="Hours", text="Open from 9 to 5.")
    doc.refresh_from_db()
    return doc


def test_pages_render_with_status_progress_and_embed_code(staff_client, document):
    changelist = staff_client.get(reverse("admin:bots_document_changelist"))
    assert changelist.status_code == 200
    assert b'<progress max="100" value="100">' in changelist.content
    assert b"Ready" in changelist.content
    bot_page = staff_client.get(reverse("admin:bots_bot_change", args=[document.bot_id]))
    assert bot_page.status_code == 200
    assert document.bot.public_key.encode() in bot_page.content  # the embed code
    for name in ("bots_bot_changelist", "bots_chunk_changelist", "bots_prompttemplate_changelist"):
        assert staff_client.get(reverse(f"admin:{name}")).status_code == 200


def test_reingest_action_runs_the_pipeline_again(staff_client, document, django_capture_on_commit_callbacks):
    old_chunks = set(document.chunks.values_list("id", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("admin:bots_document_changelist"),
            {"action": "reingest", "_selected_action": [document.pk]},
            follow=True,
        )
    assert b"Scheduled 1 document" in response.content
    document.refresh_from_db()
    assert document.status == Document.Status.READY
    assert set(document.chunks.values_list("id", flat=True)).isdisjoint(old_chunks)  # forced: re-embedded


def test_resync_action_skips_documents_that_are_not_web_pages(staff_client, document):
    response = staff_client.post(
        reverse("admin:bots_document_changelist"),
        {"action": "resync", "_selected_action": [document.pk]},
        follow=True,
    )
    assert b"Skipped 1 document" in response.content


def test_bot_form_validates_like_the_api(staff_client):
    bot = BotFactory()
    url = reverse("admin:bots_bot_change", args=[bot.pk])
    form = {
        "owner": bot.owner_id,
        "name": "Renamed",
        "description": "",
        "status": "active",
        "welcome_message": "Hi",
        "suggestions": "",
        "template": "",
        "provider": "",
        "model": "",
        "temperature": "0.3",
        "allowed_origins": "https://example.com/with/path",
        "theme": "{}",
        "configuration": "{}",
        "documents-TOTAL_FORMS": "0",
        "documents-INITIAL_FORMS": "0",
    }
    response = staff_client.post(url, form)
    assert response.status_code == 200
    assert b"must be scheme://host[:port] with no path" in response.content
    form["allowed_origins"] = "https://Example.com:443"
    response = staff_client.post(url, form)
    assert response.status_code == 302
    bot.refresh_from_db()
    assert bot.name == "Renamed" and bot.allowed_origins == ["https://example.com"]


def test_template_admin_keeps_one_default(staff_client):
    pirate = PromptTemplate.objects.create(name="Pirate", slug="pirate", system_prompt="Arr.")
    response = staff_client.post(
        reverse("admin:bots_prompttemplate_change", args=[pirate.pk]),
        {
            "name": "Pirate",
            "slug": "pirate",
            "description": "",
            "system_prompt": "Arr.",
            "temperature": "0.7",
            "max_tokens": "600",
            "personality_traits": "",
            "is_default": "on",
            "selection_rules": "{}",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert list(PromptTemplate.objects.filter(is_default=True).values_list("slug", flat=True)) == ["pirate"]
    assert Bot.objects.count() == 0
