"""Our own pages work under our Content-Security-Policy, in real Chromium.

The admin (login, a change form with its widgets), and the API docs (Swagger UI from
the sidecar) must render with no CSP violation. (The demo page and third-party host
pages are covered by the widget's browser tests.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from chatbase.testing.live import LiveDaphne
from tests.test_widget_browser import CHROMIUM, CHROMIUM_ARGS

playwright_sync = pytest.importorskip("playwright.sync_api")

# The live server reads the test database, which must exist and hold committed rows.
pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "csp-admin-password-1"
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    from chatbase.core.models import User

    with django_db_blocker.unblock():
        User.objects.create_superuser(email="csp-admin@example.com", password=PASSWORD)
    live = LiveDaphne().start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def page(server):
    with pytest.MonkeyPatch.context() as patch, playwright_sync.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(RECORD_VIOLATIONS)
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def violations(page) -> list[str]:
    return page.evaluate("window.__violations")


def screenshot(page, name: str) -> None:
    folder = Path(settings.VAR_DIR) / "test-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"csp-{name}.png"), full_page=True)


def test_the_admin_works_under_the_policy(server, page):
    response = page.goto(f"{server.url}/admin/login/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.fill("input[name=username]", "csp-admin@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")
    assert violations(page) == []
    # A change form with the admin's JavaScript (related-object popups, fieldsets).
    page.goto(f"{server.url}/admin/bots/bot/add/")
    page.wait_for_selector("input[name=name]")
    page.wait_for_function("typeof window.django !== 'undefined' && typeof django.jQuery === 'function'")
    screenshot(page, "admin-bot-add")
    assert violations(page) == []


def test_the_api_docs_render_under_the_policy(server, page):
    page.goto(f"{server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "ChatBase API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag")  # the operations, from /api/schema/
    screenshot(page, "api-docs")
    assert violations(page) == []
