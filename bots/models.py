"""Bots, their personalities (prompt templates) and their knowledge (documents and chunks)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIMENSIONS = 384
# Full-text search language of the `search_vector` column; a generated column
# needs a fixed (immutable) configuration.
TEXT_SEARCH_CONFIG = "english"


def new_public_key() -> str:
    return "pk_" + secrets.token_urlsafe(18)


def new_identity_secret() -> str:
    return "sk_" + secrets.token_urlsafe(32)


class PromptTemplate(models.Model):
    """A bot personality: its system prompt, sampling settings and when to pick it."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    system_prompt = models.TextField(
        help_text="May use {bot_name}, {name}, {age}, {interests}, {mood}, {topics} and {time_of_day}."
    )
    temperature = models.FloatField(default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    max_tokens = models.PositiveIntegerField(default=600, validators=[MinValueValidator(16), MaxValueValidator(8000)])
    personality_traits = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    is_default = models.BooleanField(default=False)
    # {"keywords": [...], "topics": [...], "hours": [start, end], "min_age": n, "max_age": n, "priority": n}
    selection_rules = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_prompt_template"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Bot(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"

    class Provider(models.TextChoices):
        # Empty: follow LLM_PROVIDERS. Otherwise this provider is tried first.
        DEFAULT = "", "Default order (LLM_PROVIDERS)"
        OPENAI = "openai", "OpenAI (or compatible)"
        ANTHROPIC = "anthropic", "Anthropic"
        EXTRACTIVE = "extractive", "Offline extractive"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bots")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    welcome_message = models.CharField(max_length=500, blank=True, default="Hi! How can I help you today?")
    template = models.ForeignKey(PromptTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="bots")
    provider = models.CharField(max_length=20, choices=Provider.choices, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, help_text="Model name; empty uses the provider's default.")
    temperature = models.FloatField(default=0.3, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    public_key = models.CharField(max_length=40, unique=True, default=new_public_key, editable=False)
    # Signs identity-verification hashes of logged-in site users; never sent to browsers.
    identity_secret = models.CharField(max_length=64, default=new_identity_secret, editable=False)
    allowed_origins = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    suggestions = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    theme = models.JSONField(default=dict, blank=True)
    configuration = models.JSONField(default=dict, blank=True)
    # Denormalised so that retrieval can pick exact or index scans without a COUNT.
    chunk_count = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Document(models.Model):
    class SourceType(models.TextChoices):
        FILE = "file", "File"
        TEXT = "text", "Text"
        URL = "url", "Web page"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        ERROR = "error", "Error"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    source_type = models.CharField(max_length=10, choices=SourceType.choices)
    original_filename = models.CharField(max_length=300, blank=True)
    # file: the upload; text: the text itself as a .txt file; url: the last fetched body.
    file = models.FileField(upload_to="documents/%Y/%m/", max_length=300, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    url = models.URLField(max_length=2000, blank=True)
    # SHA-256 of the extracted text: what decides whether anything must be re-embedded.
    content_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    error = models.TextField(blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    # Where the document came from beyond the above (e.g. a Gmail message id).
    metadata = models.JSONField(default=dict, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["bot", "-created_at"]),
            models.Index(fields=["status", "updated_at"]),
            models.Index(fields=["source_type", "last_synced_at"]),
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField()
    # SHA-256 of the text: re-ingesting changed content reuses the embeddings of unchanged chunks.
    text_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    # {"page_start": n, "page_end": n, "headings": [...]} where the source has them.
    metadata = models.JSONField(default=dict, blank=True)
    search_vector = models.GeneratedField(
        expression=SearchVector("text", config=TEXT_SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["document", "position"]
        constraints = [models.UniqueConstraint(fields=["document", "position"], name="chunk_document_position")]
        indexes = [
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                # 128 rather than 64: bench/retrieval.py measured p99 6.8 ms vs 14 ms and
                # recall 0.998 vs 0.992 on the large bot, for a 40 % longer build.
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
            # The bot FK's own index serves exact scans of small bots; this one finds
            # reusable embeddings by text when content changes.
            models.Index(fields=["bot", "text_hash"], name="chunk_bot_text_hash"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"
