"""Production settings refuse to start half-configured and pass `check --deploy`."""

import os
import subprocess
import sys

from django.conf import settings

MANAGE = [sys.executable, str(settings.BASE_DIR / "manage.py")]


def _run(args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ALLOWED_HOSTS", "DEBUG")}
    base["DJANGO_SETTINGS_MODULE"] = "chatbase.settings.production"
    return subprocess.run(
        MANAGE + args, env=base | env, capture_output=True, text=True, timeout=120, cwd=settings.BASE_DIR
    )


def test_check_deploy_is_clean_with_production_env():
    result = _run(
        ["check", "--deploy", "--fail-level", "WARNING"],
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        ALLOWED_HOSTS="chat.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_secret_key():
    result = _run(["check"], ALLOWED_HOSTS="chat.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = _run(["check"], SECRET_KEY="a-long-random-production-secret-" + "x" * 40)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set" in result.stderr
