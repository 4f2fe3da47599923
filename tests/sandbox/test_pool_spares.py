"""Spares only save time: a pool whose spares cannot start still serves warm jobs, and cold
jobs then start from nothing (no Docker needed: the starts are replaced)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.errors import SandboxError
from sandbox.limits import SandboxLimits
from sandbox.pool import WarmPool


def test_spares_that_cannot_start_are_switched_off_and_warm_ones_still_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = WarmPool(None, "sha256:x", SandboxLimits(), tmp_path, size=1, idle_s=60, spares=1)
    started: list[bool] = []

    def spawn(spare: bool = False) -> Any:
        started.append(spare)
        if spare:
            raise SandboxError("an old agent", code="sandbox.warm_start_failed")
        return object()

    monkeypatch.setattr(pool, "_spawn", spawn)
    assert pool.spares_enabled
    pool.fill()
    assert pool.idle_count == 1 and pool.spare_count == 0
    assert not pool.spares_enabled  # cold jobs take the ordinary cold path
    assert started == [False, True, True]  # one retry, then off
    assert "spares disabled" in caplog.text


def test_a_warm_sandbox_that_cannot_start_still_fails_the_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = WarmPool(None, "sha256:x", SandboxLimits(), tmp_path, size=1, idle_s=60, spares=1)

    def spawn(spare: bool = False) -> Any:
        raise SandboxError("no engine", code="sandbox.warm_start_failed")

    monkeypatch.setattr(pool, "_spawn", spawn)
    with pytest.raises(SandboxError):
        pool.fill()
