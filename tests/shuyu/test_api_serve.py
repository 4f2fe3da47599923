"""`shuyu serve` as a user runs it: a real process on a loopback port, JSON logs, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shuyu.context import init_domain
from shuyu.settings import Settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_logs_json_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_domain(Settings(home=home)).close()
    port = _free_port()
    env = {**os.environ, "SHUYU_HOME": str(home), "SHUYU_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from shuyu.cli import main; main()", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "shuyu serve did not answer"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        rid = r.headers["x-request-id"]
        r = httpx.get(
            f"http://127.0.0.1:{port}/v1/me",
            headers={"Authorization": "Bearer sy_secret-value-123"},
        )
        assert r.status_code == 401
        assert "server" not in r.headers  # no software banner
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(x["msg"] == "Application shutdown complete." for x in lines)
    access = [x for x in lines if x.get("logger") == "shuyu.api.access"]
    assert any(x.get("request_id") == rid and x.get("route") == "/healthz" for x in access)
    assert "sy_secret-value-123" not in err  # the bad token is never logged
