"""The widget's public config, its per-bot CORS, the demo page and the admin preview."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from bots.demo import DEMO_BOT_NAME
from bots.models import Bot
from bots.preview import origin_is_own_host, preview_token_issue, preview_token_valid
from bots.services.bots import bot_rotate_keys, bot_update
from bots.tests.factories import BotFactory
from chatbase.core.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SHOP = "https://shop.example.com"


@pytest.fixture
def bot():
    return BotFactory(
        name="Shop helper",
        allowed_origins=[SHOP],
        welcome_message="Hello!",
        suggestions=["Refunds?", "Shipping?"],
        theme={"color": "#f59e0b", "position": "left", "launcher_text": "Ask us"},
        configuration={"lead_form": True},
    )


def config_url(public_key: str) -> str:
    return reverse("widget-config", args=[public_key])


def test_config_is_public_and_complete(api_client, bot):
    response = api_client.get(config_url(bot.public_key), HTTP_ORIGIN=SHOP)
    assert response.status_code == 200
    assert response.json() == {
        "public_key": bot.public_key,
        "name": "Shop helper",
        "title": "Shop helper",  # no theme title: the bot's name
        "welcome": "Hello!",
        "suggestions": ["Refunds?", "Shipping?"],
        "theme": {
            "color": "#f59e0b",
            "position": "left",
            "title": "",
            "avatar_url": "",
            "launcher_text": "Ask us",
        },
        "lead_form": True,
        "require_consent": False,
        "identity_required": False,
    }
    # Never the owner's secrets or settings.
    assert bot.identity_secret not in response.content.decode()
    assert "allowed_origins" not in response.json()


def test_only_the_bots_own_origins_may_read_it(api_client, bot):
    allowed = api_client.get(config_url(bot.public_key), HTTP_ORIGIN=SHOP)
    assert allowed["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in allowed["Vary"]
    # Same host, other scheme or port: another origin.
    for origin in ("https://evil.example.com", "http://shop.example.com", "https://shop.example.com:8443"):
        refused = api_client.get(config_url(bot.public_key), HTTP_ORIGIN=origin)
        assert refused.status_code == 200  # the data is public; the browser withholds it
        assert "Access-Control-Allow-Origin" not in refused
    no_origin = api_client.get(config_url(bot.public_key))
    assert "Access-Control-Allow-Origin" not in no_origin


def test_site_wide_cors_list_does_not_open_the_widget_config(api_client, bot, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    response = api_client.get(config_url(bot.public_key), HTTP_ORIGIN="https://app.example.com")
    assert "Access-Control-Allow-Origin" not in response
    # ... while the owner API still follows the site-wide list.
    api = api_client.get("/api/v1/me/", HTTP_ORIGIN="https://app.example.com")
    assert api["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_unknown_inactive_and_malformed_keys_are_404_json(api_client, bot):
    bot_update(bot=bot, status=Bot.Status.INACTIVE)
    for key in (bot.public_key, "pk_nothing", "x" * 300):
        response = api_client.get(config_url(key), HTTP_ORIGIN=SHOP)
        assert response.status_code == 404
        assert response.json() == {"detail": "No such bot.", "code": "not_found"}


def test_config_is_cached_and_a_change_is_seen_at_once(
    api_client, bot, django_assert_num_queries, django_capture_on_commit_callbacks
):
    api_client.get(config_url(bot.public_key))
    with django_assert_num_queries(0):
        assert api_client.get(config_url(bot.public_key)).json()["welcome"] == "Hello!"
    with django_capture_on_commit_callbacks(execute=True):
        bot_update(bot=bot, welcome_message="Welcome back!", theme={"color": "#111111"})
    body = api_client.get(config_url(bot.public_key)).json()
    assert body["welcome"] == "Welcome back!" and body["theme"]["color"] == "#111111"
    old_key = bot.public_key
    with django_capture_on_commit_callbacks(execute=True):
        bot_rotate_keys(bot=bot)
    assert api_client.get(config_url(old_key)).status_code == 404
    assert api_client.get(config_url(bot.public_key)).status_code == 200


def test_config_is_rate_limited_per_ip(api_client, bot, settings):
    settings.WIDGET_CONFIG_RATE_PER_IP = "3/hour"  # not per minute: a fixed minute window could end between the hits
    for _ in range(3):
        assert api_client.get(config_url(bot.public_key), REMOTE_ADDR="198.51.100.7").status_code == 200
    limited = api_client.get(config_url(bot.public_key), REMOTE_ADDR="198.51.100.7")
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited" and int(limited["Retry-After"]) >= 1
    assert api_client.get(config_url(bot.public_key), REMOTE_ADDR="198.51.100.8").status_code == 200


def test_preview_tokens_are_bound_to_the_bot_and_its_key(bot):
    token = preview_token_issue(bot=bot)
    assert preview_token_valid(bot=bot, token=token)
    assert not preview_token_valid(bot=BotFactory(), token=token)
    assert not preview_token_valid(bot=bot, token=token[:-2] + "xx")
    assert not preview_token_valid(bot=bot, token="")
    bot_rotate_keys(bot=bot)
    assert not preview_token_valid(bot=bot, token=token)


def test_preview_tokens_expire(bot, settings):
    token = preview_token_issue(bot=bot)
    settings.WIDGET_PREVIEW_TOKEN_MAX_AGE_SECONDS = -1
    assert not preview_token_valid(bot=bot, token=token)


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://chat.example.com", "chat.example.com", True),
        ("https://chat.example.com", "chat.example.com:443", True),
        ("http://chat.example.com:8080", "chat.example.com:80", False),
        ("https://evil.example.com", "chat.example.com", False),
        ("", "chat.example.com", False),
    ],
)
def test_origin_is_own_host(origin, host, same):
    assert origin_is_own_host(origin=origin, host=host) is same


@pytest.fixture
def staff_client(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    return client


def test_admin_bot_page_shows_the_snippet_and_a_live_preview(staff_client, bot):
    page = staff_client.get(reverse("admin:bots_bot_change", args=[bot.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-bot="{bot.public_key}"' in html.replace("&quot;", '"')
    assert "http://testserver/static/widget/widget.js" in html
    preview_url = reverse("widget-preview", args=[bot.pk])
    assert f'src="{preview_url}"' in html
    assert bot.identity_secret in html  # staff can copy it for the site's server

    preview = staff_client.get(preview_url)
    assert preview.status_code == 200
    assert preview["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in preview["Content-Security-Policy"]
    token = re.search(r'data-preview="([^"]+)"', preview.content.decode()).group(1)
    assert preview_token_valid(bot=bot, token=token)


def test_preview_is_for_staff_only(client, bot):
    response = client.get(reverse("widget-preview", args=[bot.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(UserFactory())
    assert client.get(reverse("widget-preview", args=[bot.pk])).status_code == 302


def test_demo_page_embeds_the_demo_bot_under_a_strict_csp(client, settings):
    owner = UserFactory(email=settings.DEMO_OWNER_EMAIL)
    demo = BotFactory(owner=owner, name=DEMO_BOT_NAME, allowed_origins=["http://testserver"])
    response = client.get("/demo/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<script src="http://testserver/static/widget/widget.js" data-bot="{demo.public_key}" defer>' in html
    assert "&lt;script src=" in html  # the snippet is shown as text, escaped
    assert "not among the demo bot" not in html
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp


def test_demo_page_says_when_its_origin_is_not_allowed_or_the_bot_is_missing(client, settings):
    assert client.get("/demo/").status_code == 404
    assert b"seed_demo" in client.get("/demo/").content
    BotFactory(owner=UserFactory(email=settings.DEMO_OWNER_EMAIL), name=DEMO_BOT_NAME, allowed_origins=[SHOP])
    assert b"not among the demo bot" in client.get("/demo/").content
