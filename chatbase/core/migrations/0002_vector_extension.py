# pgvector must exist before any app declares a vector column; bots' Chunk
# migration depends on this one.
from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [VectorExtension()]
