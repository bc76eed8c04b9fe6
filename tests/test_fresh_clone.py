"""From a fresh clone with nothing configured, `make run` serves the product.

Slow (it builds a new virtualenv): runs when CHATBASE_SLOW_TESTS=1, as CI does.
`make test` itself is proven by CI, which runs it on a clean clone.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited early with {proc.returncode}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def test_make_run_from_a_fresh_clone(tmp_path: Path):
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True).returncode:
        pytest.skip("no commit to clone yet")
    clone = tmp_path / "chatbase"
    subprocess.run(["git", "clone", "--quiet", str(settings.BASE_DIR), str(clone)], check=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "VAR_DIR", "PYTEST"))}
    env |= {"PORT": str(port)}
    log = open(tmp_path / "make-run.log", "w+")  # noqa: SIM115 - the child writes it until the end
    proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        health = _wait_for(f"{base}/health", proc, timeout=900)
        assert health.json() == {"status": "ok"}

        log.seek(0)
        banner = log.read()
        creds = re.search(r"Admin login: (\S+) / (\S+)", banner)
        assert creds, banner[-2000:]
        with httpx.Client(base_url=base, timeout=10) as http:
            login_page = http.get("/admin/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
            response = http.post(
                "/admin/login/?next=/admin/",
                data={"username": creds.group(1), "password": creds.group(2), "csrfmiddlewaretoken": token},
                headers={"Referer": f"{base}/admin/login/"},
                follow_redirects=True,
            )
            assert response.status_code == 200
            assert "Site administration" in response.text
            docs = http.get("/api/docs/")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
            assert http.get("/api/schema/").status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        # The clone's embedded PostgreSQL keeps running by design; stop it.
        subprocess.run([str(clone / ".venv/bin/python"), "manage.py", "embedded_db", "stop"], cwd=clone, env=env,
                       capture_output=True, timeout=60)  # fmt: skip
