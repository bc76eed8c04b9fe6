"""Local settings: what `make run` uses. Runs with nothing configured."""

import secrets

from .base import *
from .base import VAR_DIR, env

DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])


def _persistent_secret_key() -> str:
    # Sessions, signed visitor tokens and the demo API token must survive a restart,
    # so a generated key is kept under VAR_DIR rather than made anew per process.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x") as fh:
                fh.write(secrets.token_urlsafe(50))
            path.chmod(0o600)
        except FileExistsError:
            pass  # another process won the race; read theirs
    return path.read_text().strip()


SECRET_KEY = env("SECRET_KEY", default="") or _persistent_secret_key()
