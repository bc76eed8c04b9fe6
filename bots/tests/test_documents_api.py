"""The documents endpoints, end to end: upload -> ingestion (in-process here) -> status."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from bots.models import Chunk, Document
from bots.tests.conftest import stored_files
from bots.tests.factories import BotFactory

pytestmark = pytest.mark.django_db

MARKDOWN = b"# Opening hours\n\nThe Anna Nagar showroom opens at 10 am and closes at 8 pm every day.\n"


@pytest.fixture
def bot(owner_client):
    return BotFactory(owner=owner_client.user)


@pytest.fixture
def post_document(owner_client, bot, django_capture_on_commit_callbacks):
    """POST a document and run what follows the commit (the ingestion, in-process without a broker).

    Tests run inside a transaction that never commits, so the on-commit ingestion is
    run when the request is over; the response itself shows the document pending.
    """

    def post(data, fmt="multipart"):
        with django_capture_on_commit_callbacks(execute=True):
            response = owner_client.post(f"/api/v1/bots/{bot.pk}/documents/", data, format=fmt)
        return response

    return post


def test_multipart_upload_is_ingested_and_reported(owner_client, bot, media_root, post_document):
    upload = SimpleUploadedFile("hours.md", MARKDOWN, content_type="text/markdown")
    response = post_document({"file": upload})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending" and body["original_filename"] == "hours.md"
    detail = owner_client.get(f"/api/v1/documents/{body['id']}/").json()
    assert detail["status"] == "ready" and detail["progress"] == 100
    assert detail["chunk_count"] >= 1
    listing = owner_client.get(f"/api/v1/bots/{bot.pk}/documents/").json()
    assert [d["id"] for d in listing["results"]] == [body["id"]]


def test_json_text_document(bot, media_root, post_document):
    response = post_document({"title": "Returns", "text": "Returns are free for 30 days."}, fmt="json")
    assert response.status_code == 201
    assert response.json()["title"] == "Returns"
    assert Chunk.objects.filter(document_id=response.json()["id"]).count() == 1


@pytest.mark.parametrize(
    ("upload", "status", "code"),
    [
        (SimpleUploadedFile("empty.txt", b"", content_type="text/plain"), 400, "empty_file"),
        (SimpleUploadedFile("fake.pdf", b"just text, not a PDF", content_type="application/pdf"), 400, "type_mismatch"),
        (SimpleUploadedFile("tool.exe", b"MZ\x90\x00binary", content_type="application/octet-stream"), 415, None),
    ],
)
def test_bad_uploads_get_their_4xx_and_store_nothing(owner_client, bot, media_root, upload, status, code):
    response = owner_client.post(f"/api/v1/bots/{bot.pk}/documents/", {"file": upload}, format="multipart")
    assert response.status_code == status
    assert set(response.json()) >= {"detail", "code"}
    if code:
        assert response.json()["code"] == code
    assert not Document.objects.exists()
    assert stored_files(media_root) == []


def test_too_large_upload_is_413(owner_client, bot, media_root, settings):
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 100
    upload = SimpleUploadedFile("big.txt", b"x" * 101, content_type="text/plain")
    response = owner_client.post(f"/api/v1/bots/{bot.pk}/documents/", {"file": upload}, format="multipart")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert not Document.objects.exists()


def test_exactly_one_source(owner_client, bot):
    response = owner_client.post(
        f"/api/v1/bots/{bot.pk}/documents/", {"text": "a", "url": "https://example.com"}, format="json"
    )
    assert response.status_code == 400
    assert "exactly one" in response.json()["detail"]
    assert owner_client.post(f"/api/v1/bots/{bot.pk}/documents/", {}, format="json").status_code == 400


def test_private_url_is_refused_when_not_allowed(owner_client, bot, settings):
    settings.URL_FETCH_ALLOW_PRIVATE = False
    response = owner_client.post(
        f"/api/v1/bots/{bot.pk}/documents/", {"url": "http://127.0.0.1:9/admin"}, format="json"
    )
    assert response.status_code == 400
    assert not Document.objects.exists()


def test_delete_document_removes_chunks_and_file(
    owner_client, bot, media_root, post_document, django_capture_on_commit_callbacks
):
    upload = SimpleUploadedFile("hours.md", MARKDOWN, content_type="text/markdown")
    doc_id = post_document({"file": upload}).json()["id"]
    assert stored_files(media_root)
    with django_capture_on_commit_callbacks(execute=True):  # the file goes after commit
        assert owner_client.delete(f"/api/v1/documents/{doc_id}/").status_code == 204
    assert not Chunk.objects.filter(document_id=doc_id).exists()
    assert stored_files(media_root) == []
    bot.refresh_from_db()
    assert bot.chunk_count == 0


def test_another_owners_document_is_404(owner_client, other_owner, media_root):
    other_doc = Document.objects.create(bot=BotFactory(owner=other_owner), title="secret", source_type="text")
    assert owner_client.get(f"/api/v1/documents/{other_doc.pk}/").status_code == 404
    assert owner_client.delete(f"/api/v1/documents/{other_doc.pk}/").status_code == 404
    assert owner_client.post(f"/api/v1/documents/{other_doc.pk}/resync/").status_code == 404
    assert Document.objects.filter(pk=other_doc.pk).exists()


def test_resync_of_unchanged_text_re_embeds_nothing(
    owner_client, bot, media_root, post_document, django_capture_on_commit_callbacks
):
    doc_id = post_document({"text": "Warranty lasts five years."}, fmt="json").json()["id"]
    chunk_ids = set(Chunk.objects.filter(document_id=doc_id).values_list("id", flat=True))
    assert chunk_ids
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/api/v1/documents/{doc_id}/resync/")
    assert response.status_code == 202
    assert owner_client.get(f"/api/v1/documents/{doc_id}/").json()["status"] == "ready"
    assert set(Chunk.objects.filter(document_id=doc_id).values_list("id", flat=True)) == chunk_ids
