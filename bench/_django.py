"""Django set-up shared by the benchmarks: a separate, persistent database.

Benchmarks must not write into the database `make run` uses, and loading their
data sets takes long enough that keeping them between runs is worth it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DATABASE = "chatbase_bench"


@contextlib.contextmanager
def bench_database(*, rebuild: bool = False):
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbase.settings.local")
    import django
    from django.conf import settings

    # Before setup: the database settings are read when connections are made.
    settings.DATABASES["default"]["TEST"] = {"NAME": BENCH_DATABASE}
    django.setup()
    from django.db import connection

    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=not rebuild, serialize=False)
    try:
        yield
    finally:
        connection.close()
