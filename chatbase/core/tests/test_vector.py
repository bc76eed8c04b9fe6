"""The embedded (or configured) PostgreSQL really has pgvector."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_vector_extension_stores_and_orders_by_cosine_distance():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchone() is not None
        cursor.execute("CREATE TEMP TABLE probe (id int, embedding vector(3))")
        cursor.execute("INSERT INTO probe VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
        cursor.execute("SELECT id, embedding <=> '[1,0,0]' FROM probe ORDER BY embedding <=> '[1,0,0]'")
        rows = cursor.fetchall()
    assert [r[0] for r in rows] == [1, 3, 2]
    assert rows[0][1] == pytest.approx(0.0)
