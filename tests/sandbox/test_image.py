"""The image build: content hashes, the mirror, cached builds, the record jobs run on."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sandbox.errors import ImageError
from sandbox.image import AGENT_DIR, IMAGES_DIR, ImageSources, apt_mirror
from sandbox.image_record import current_image_id
from shuyu.context import Domain


@pytest.fixture
def sources(tmp_path: Path) -> ImageSources:
    shutil.copytree(IMAGES_DIR, tmp_path / "images")
    shutil.copytree(AGENT_DIR, tmp_path / "agent")
    return ImageSources(tmp_path / "images", tmp_path / "agent")


def test_the_image_hash_follows_the_agent_and_the_base_hash_does_not(
    sources: ImageSources,
) -> None:
    base, image = sources.base_hash(), sources.image_hash("offline")
    (sources.agent_dir / "sql.py").write_text((sources.agent_dir / "sql.py").read_text() + "#\n")
    assert sources.base_hash() == base  # no debootstrap for an agent edit
    assert sources.image_hash("offline") != image
    req = sources.images_dir / "requirements.txt"
    req.write_text(req.read_text() + "\n# bump\n")
    assert sources.base_hash() != base


def test_the_image_holds_agent_code_only() -> None:
    names = {p.name for p in ImageSources().agent_files()}
    assert "main.py" in names and "crypto.py" in names
    for f in ImageSources().agent_files():
        text = f.read_text()
        # docstrings may name the host side (the model checks' host half is egress.models);
        # code may import none of it
        for ours in ("enclave", "shuyu", "egress", "policies"):
            for form in (f"import {ours}", f"from {ours}"):
                assert form not in text, f"{f.name} imports {ours}"


def test_the_mirror_comes_from_apt_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n")
    oneline = tmp_path / "sources.list"
    oneline.write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert apt_mirror([deb822]) == "http://mirror.example/debian"
    assert apt_mirror([oneline]) == "http://other.example/debian"
    assert apt_mirror([tmp_path / "missing"]) == "http://deb.debian.org/debian"


def test_no_recorded_image_is_a_clear_error(domain: Domain) -> None:
    with domain.engine.connect() as conn, pytest.raises(ImageError) as err:
        current_image_id(conn)
    assert err.value.code == "sandbox.no_image"


def test_an_image_built_from_other_agent_code_is_called_stale(
    domain: Domain, sources: ImageSources
) -> None:
    from sandbox.image import BuiltImage
    from sandbox.image_record import record_image, stale_image
    from shuyu.cli import app

    current = sources.image_hash("offline")  # the copy equals this checkout's sources
    image = BuiltImage("sha256:" + "a" * 64, current, "offline", "t", False)
    with domain.engine.begin() as conn:
        record_image(conn, domain.audit, image, "t")
    with domain.engine.connect() as conn:
        assert stale_image(conn, sources) is None
    env = {"SHUYU_HOME": str(domain.settings.home)}
    shown = CliRunner().invoke(app, ["status"], env=env)
    assert shown.exit_code == 0 and "current" in shown.output, shown.output
    (sources.agent_dir / "main.py").write_text((sources.agent_dir / "main.py").read_text() + "#\n")
    with domain.engine.connect() as conn:
        why = stale_image(conn, sources)
    assert why is not None and current[:12] in why and sources.image_hash("offline")[:12] in why
    older = BuiltImage("sha256:" + "b" * 64, "0" * 64, "offline", "t", False)
    with domain.engine.begin() as conn:
        record_image(conn, domain.audit, older, "t")  # as if built by an older shuyu
    shown = CliRunner().invoke(app, ["status"], env=env)
    assert shown.exit_code == 0 and "STALE" in shown.output, shown.output
    assert "shuyu image build" in shown.output


@pytest.mark.docker
def test_a_cached_build_takes_seconds_and_is_recorded(
    domain: Domain, docker_client: Any, sandbox_image_id: str
) -> None:
    from shuyu.cli import app

    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["image", "build"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - t0 < 20
    assert sandbox_image_id in result.output
    with domain.engine.connect() as conn:
        assert current_image_id(conn) == sandbox_image_id
    shown = CliRunner().invoke(app, ["image", "show"])
    assert shown.output.strip() == sandbox_image_id
