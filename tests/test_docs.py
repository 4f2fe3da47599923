"""The README is kept honest: its tour runs as written and every command it names exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent


def _tour() -> str:
    section = README[README.index("## A five-minute tour") :]
    start = section.index("```bash") + len("```bash")
    return section[start : section.index("```", start)]


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    script = (
        _tour()
        .replace("/tmp/shuyu-tour", str(tmp_path / "home"))
        .replace("/tmp/res", str(tmp_path / "res"))
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "audit log verifies" in done.stdout
    assert "person_id" in done.stdout  # the catalog is shown …
    assert "11010" not in done.stdout  # … and no ID number is


@pytest.mark.parametrize(
    "command", sorted(set(re.findall(r"`(shuyu [a-z]+(?: [a-z]+)?)`", README)))
)
def test_every_command_the_readme_names_exists(command: str) -> None:
    from typer.testing import CliRunner

    from shuyu.cli import app

    result = CliRunner().invoke(app, [*command.split()[1:], "--help"])
    assert result.exit_code == 0, f"`{command} --help` failed: {result.output[-500:]}"
