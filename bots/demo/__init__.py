"""The demo bot: Brightwave Solar, a (fictional) rooftop-solar installer in Chennai.

Its documents in `documents/` exercise every extractor (Markdown, text, HTML) and
`eval.jsonl` labels questions with the document that answers them, for
`manage.py evaluate_retrieval`.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from bots.models import Bot, Document
from bots.services.bots import bot_create, bot_update
from bots.services.documents import document_create, document_reingest
from chatbase.core.models import User

DEMO_DIR = Path(__file__).resolve().parent
DOCUMENTS_DIR = DEMO_DIR / "documents"
EVAL_FILE = DEMO_DIR / "eval.jsonl"
DEMO_BOT_NAME = "Brightwave Solar assistant"
CONTENT_TYPES = {".md": "text/markdown", ".txt": "text/plain", ".html": "text/html"}


def demo_origins(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


def demo_bot_seed(*, owner: User) -> Bot:
    """Create or bring up to date the demo bot and its documents. Idempotent."""
    fields = {
        "description": "Answers questions about Brightwave Solar's plans, installation, warranty and service areas.",
        "welcome_message": "Hi! I'm Brightwave's solar assistant. Ask me about prices, subsidies or installation.",
        "suggestions": [
            "How much does a 3 kW system cost?",
            "What subsidy can I get?",
            "Do you install in Tambaram?",
        ],
        "theme": {"color": "#f59e0b", "title": "Brightwave Solar", "launcher_text": "Ask us"},
    }
    bot = Bot.objects.filter(owner=owner, name=DEMO_BOT_NAME).first()
    if bot is None:
        bot = bot_create(owner=owner, name=DEMO_BOT_NAME, allowed_origins=demo_origins(settings.PORT), **fields)
    else:
        # Keep whatever the owner configured, but the demo page must be able to connect
        # on the port this run serves.
        origins = sorted(set(bot.allowed_origins) | set(demo_origins(settings.PORT)))
        if origins != sorted(bot.allowed_origins):
            bot_update(bot=bot, allowed_origins=origins)

    existing = {doc.original_filename: doc for doc in Document.objects.filter(bot=bot, source_type="file")}
    for path in sorted(DOCUMENTS_DIR.iterdir()):
        document = existing.get(path.name)
        if document is None:
            upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type=CONTENT_TYPES[path.suffix])
            document_create(bot=bot, upload=upload)
        elif document.status == Document.Status.ERROR:
            document_reingest(document=document)
    bot.refresh_from_db()
    return bot


def demo_bot_get() -> Bot | None:
    """The demo bot seed_demo made, if it ran."""
    return Bot.objects.filter(owner__email=settings.DEMO_OWNER_EMAIL, name=DEMO_BOT_NAME).order_by("pk").first()
