import pytest

from bots.models import Bot
from bots.tests.factories import BotFactory, PromptTemplateFactory

pytestmark = pytest.mark.django_db


def test_create_bot_with_every_field(owner_client):
    template = PromptTemplateFactory(slug="support")
    response = owner_client.post(
        "/api/v1/bots/",
        {
            "name": "Support",
            "description": "Answers support questions",
            "welcome_message": "Hello!",
            "template": "support",
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "temperature": 0.4,
            "allowed_origins": ["https://Shop.Example.com:443/", "http://localhost:3000"],
            "suggestions": ["Where is my order?", "  "],
            "theme": {"color": "#112233", "position": "left", "title": "Help"},
            "configuration": {"lead_form": True},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["template"] == template.slug
    assert body["allowed_origins"] == ["http://localhost:3000", "https://shop.example.com"]
    assert body["suggestions"] == ["Where is my order?"]
    assert body["public_key"].startswith("pk_")
    assert body["identity_secret"].startswith("sk_")
    assert body["public_key"] in body["embed_snippet"]
    assert Bot.objects.get(pk=body["id"]).owner == owner_client.user


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "temperature": 2.5}, "temperature"),
        ({"name": "x", "allowed_origins": ["https://example.com/path"]}, "allowed_origins"),
        ({"name": "x", "allowed_origins": ["javascript:alert(1)"]}, "allowed_origins"),
        ({"name": "x", "theme": {"colour": "#fff"}}, "theme"),
        ({"name": "x", "theme": {"color": "red"}}, "theme.color"),
        ({"name": "x", "configuration": {"daily_token_budget": -1}}, "configuration.daily_token_budget"),
        ({"name": "x", "template": "no-such-template"}, "template"),
        ({"name": "x", "status": "sleeping"}, "status"),
    ],
)
def test_create_bot_rejects_bad_input_with_the_field_named(owner_client, payload, field):
    response = owner_client.post("/api/v1/bots/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert field in body["detail"]
    assert not Bot.objects.exists()


def test_list_is_paginated_scoped_and_has_no_n_plus_one(owner_client, other_owner, django_assert_max_num_queries):
    BotFactory.create_batch(3, owner=owner_client.user, template=PromptTemplateFactory())
    BotFactory(owner=other_owner)
    with django_assert_max_num_queries(4):  # token, count, page (+ last-used touch)
        response = owner_client.get("/api/v1/bots/")
    body = response.json()
    assert body["count"] == 3
    assert set(body) == {"count", "next", "previous", "results"}
    assert "identity_secret" not in body["results"][0]
    BotFactory.create_batch(5, owner=owner_client.user, template=PromptTemplateFactory())
    with django_assert_max_num_queries(4):
        assert owner_client.get("/api/v1/bots/").json()["count"] == 8


def test_another_owners_bot_is_404_everywhere(owner_client, other_owner):
    bot = BotFactory(owner=other_owner)
    for method, url in [
        ("get", f"/api/v1/bots/{bot.pk}/"),
        ("patch", f"/api/v1/bots/{bot.pk}/"),
        ("delete", f"/api/v1/bots/{bot.pk}/"),
        ("get", f"/api/v1/bots/{bot.pk}/documents/"),
        ("post", f"/api/v1/bots/{bot.pk}/search/"),
        ("post", f"/api/v1/bots/{bot.pk}/rotate-keys/"),
    ]:
        response = getattr(owner_client, method)(url, {"query": "x"}, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["code"] == "not_found"
    assert Bot.objects.filter(pk=bot.pk).exists()


def test_patch_updates_only_given_fields(owner_client):
    bot = BotFactory(owner=owner_client.user, welcome_message="Hi", suggestions=["a"])
    response = owner_client.patch(f"/api/v1/bots/{bot.pk}/", {"status": "inactive"}, format="json")
    assert response.status_code == 200
    bot.refresh_from_db()
    assert bot.status == "inactive"
    assert bot.welcome_message == "Hi" and bot.suggestions == ["a"]


def test_rotate_keys_changes_public_key_and_secret(owner_client):
    bot = BotFactory(owner=owner_client.user)
    old_key, old_secret = bot.public_key, bot.identity_secret
    body = owner_client.post(f"/api/v1/bots/{bot.pk}/rotate-keys/").json()
    assert body["public_key"] != old_key and body["identity_secret"] != old_secret


def test_delete_bot(owner_client):
    bot = BotFactory(owner=owner_client.user)
    assert owner_client.delete(f"/api/v1/bots/{bot.pk}/").status_code == 204
    assert not Bot.objects.filter(pk=bot.pk).exists()


def test_tool_registry_is_listed(owner_client, api_client):
    tools = owner_client.get("/api/v1/tools/").json()["results"]
    search = next(t for t in tools if t["name"] == "search_knowledge")
    assert search["writes"] is False and search["offered_to_visitors"] is True
    assert search["parameters"]["properties"]["query"]["type"] == "string"
    assert api_client.get("/api/v1/tools/").status_code == 401
