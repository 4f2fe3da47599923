"""Releases: a signed folder that verifies offline and fails on any changed byte; the
registry and the record of who received each product; the review and release CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egress.errors import ReleaseError
from egress.registry import downloads, get_product, withdraw_product
from egress.release import download_release, release_job, verify_release
from egress.review import approve, reject
from enclave.audit import AuditLog
from enclave.signing import Signer
from shuyu.cli import app
from shuyu.context import Domain
from tests.egress.gate_factories import AUDITOR, OPERATOR, REVIEWER_A, REVIEWER_B
from tests.egress.test_review import NO_RISK, World, district_counts, make_world

runner = CliRunner()


@pytest.fixture
def world(domain: Domain) -> World:
    return make_world(domain)


@pytest.fixture
def released(world: World) -> Path:
    job = world.run(district_counts(world))
    outcome = approve(world.domain.gate, job, REVIEWER_A, NO_RISK)
    assert outcome.release is not None
    return outcome.release.path


def test_a_release_holds_data_report_manifest_signature_and_key(
    released: Path, world: World
) -> None:
    names = sorted(p.relative_to(released).as_posix() for p in released.rglob("*") if p.is_file())
    assert names == [
        "data/result.csv",
        "data/result.json",
        "data/result.parquet",
        "manifest.json",
        "manifest.sig",
        "public_key.hex",
        "report.json",
    ]
    m = json.loads((released / "manifest.json").read_text())
    assert m["format"] == "shuyu-release/1"
    assert m["job"]["code_sha256"] and m["scenario"]["id"] == "S-2026-001"
    assert m["datasets"][0]["name"] == "people" and m["datasets"][0]["version"] == 1
    assert m["datasets"][0]["acquired_at"] == "2026-03-01"
    assert m["checks"]["verdict"] == "clean"
    assert {c["name"] for c in m["checks"]["outputs"][0]["checks"]} >= {
        "row_level",
        "identifiers",
        "small_cells",
        "dominance",
        "rounding",
        "differencing",
    }
    assert m["public_key"] == world.domain.signer.public_key_hex
    assert pq.read_table(released / "data/result.parquet").num_rows == 8
    result = verify_release(released)
    assert result.ok and result.files_checked == 4 and not result.key_pinned


def _every_file(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_one_changed_byte_in_any_file_fails_verification(released: Path, tmp_path: Path) -> None:
    for name in _every_file(released):
        copy = tmp_path / f"copy-{name.replace('/', '_')}"
        shutil.copytree(released, copy)
        target = copy / name
        data = bytearray(target.read_bytes())
        i = len(data) // 2
        data[i] = (
            (data[i] + 1) % 256
            if name != "manifest.sig"
            else ord("0" if data[i] != ord("0") else "1")
        )
        target.write_bytes(bytes(data))
        result = verify_release(copy)
        assert not result.ok, f"a changed byte in {name} went unnoticed"


def test_added_or_removed_files_fail_verification(released: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    shutil.copytree(released, extra)
    (extra / "data" / "more.csv").write_text("a\n1\n")
    assert verify_release(extra).problems == ["data/more.csv is not listed in the manifest"]
    gone = tmp_path / "gone"
    shutil.copytree(released, gone)
    (gone / "data" / "result.csv").unlink()
    assert "data/result.csv is missing" in verify_release(gone).problems


def test_a_re_signed_forgery_fails_only_against_the_pinned_key(
    released: Path, tmp_path: Path, world: World
) -> None:
    forged = tmp_path / "forged"
    shutil.copytree(released, forged)
    (forged / "data" / "result.csv").write_text("district,n\nA,1\n")
    m = json.loads((forged / "manifest.json").read_text())
    import hashlib

    for f in m["files"]:
        p = forged / f["path"]
        f["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        f["bytes"] = p.stat().st_size
    attacker = Signer.generate()
    m["public_key"] = attacker.public_key_hex
    body = (json.dumps(m, indent=2, sort_keys=True) + "\n").encode()
    (forged / "manifest.json").write_bytes(body)
    (forged / "manifest.sig").write_text(attacker.sign(body) + "\n")
    (forged / "public_key.hex").write_text(attacker.public_key_hex + "\n")
    assert verify_release(forged).ok  # self-consistent …
    pinned = verify_release(forged, world.domain.signer.public_key_hex)
    assert not pinned.ok and pinned.key_pinned  # … but not the domain's
    assert verify_release(released, world.domain.signer.public_key_hex).ok


def test_release_is_idempotent_and_only_for_approved_jobs(world: World) -> None:
    gate = world.domain.gate
    job = world.run(district_counts(world))
    with pytest.raises(ReleaseError) as err:
        release_job(gate, job, actor=REVIEWER_B)
    assert err.value.code == "egress.not_approved"
    first = approve(gate, job, REVIEWER_A, NO_RISK).release
    assert first is not None
    assert release_job(gate, job, actor=REVIEWER_B) == first


def test_downloads_are_recorded_with_the_user_and_audited(
    released: Path, world: World, tmp_path: Path
) -> None:
    gate = world.domain.gate
    release_id = released.name
    path = download_release(gate, release_id, OPERATOR, tmp_path, purpose="district report")
    assert verify_release(path).ok
    with world.domain.engine.connect() as c:
        [d] = downloads(c, release_id)
        entries = [e for e in AuditLog.entries(c) if e.action == "release.download"]
    assert d["user"] == OPERATOR and d["purpose"] == "district report"
    assert entries[0].actor == OPERATOR and entries[0].target == release_id
    with world.domain.engine.begin() as c:
        withdraw_product(c, world.domain.audit, release_id, actor="boss", reason="superseded")
        assert get_product(c, release_id)["status"] == "withdrawn"
    with pytest.raises(ReleaseError) as err:
        download_release(gate, release_id, OPERATOR, tmp_path / "again")
    assert err.value.code == "egress.release_withdrawn"


# --- the CLI -----------------------------------------------------------------------------------


def test_review_and_release_cli_round_trip(world: World, tmp_path: Path) -> None:
    job = world.run(district_counts(world))
    r = runner.invoke(app, ["review", "list", "--as", REVIEWER_A])
    assert r.exit_code == 0 and "waiting for review" in r.output, r.output
    r = runner.invoke(app, ["review", "list", "--as", REVIEWER_A, "--json"])
    assert [i["job_id"] for i in json.loads(r.output)] == [job]
    r = runner.invoke(app, ["review", "show", job, "--as", REVIEWER_A])
    assert r.exit_code == 0 and "purpose" in r.output and "no findings" in r.output
    r = runner.invoke(
        app, ["review", "comment", job, "looks like a district table", "--as", REVIEWER_B]
    )
    assert r.exit_code == 0, r.output
    answers = ["--scope", "no", "--exposure", "no", "--model-risk", "no", "--other-risk", "no"]
    r = runner.invoke(app, ["review", "approve", job, *answers, "--as", REVIEWER_A])
    assert r.exit_code == 0, r.output
    assert "approved and released" in r.output
    r = runner.invoke(app, ["release", "list", "--json"])
    [product] = json.loads(r.output)
    rid = product["release_id"]
    r = runner.invoke(app, ["release", "download", rid, "--to", str(tmp_path), "--as", OPERATOR])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["release", "verify", str(tmp_path / rid)])
    assert r.exit_code == 0 and "verifies" in r.output
    key = world.domain.signer.public_key_hex
    (tmp_path / rid / "data" / "result.csv").write_text("tampered\n")
    r = runner.invoke(app, ["release", "verify", str(tmp_path / rid), "--public-key", key])
    assert r.exit_code == 2
    r = runner.invoke(app, ["release", "show", rid, "--json"])
    assert json.loads(r.output)["downloads"][0]["user"] == OPERATOR


def test_review_cli_refusals_are_clear(world: World) -> None:
    job = world.run(district_counts(world))
    answers = ["--scope", "no", "--exposure", "yes", "--model-risk", "no", "--other-risk", "no"]
    r = runner.invoke(app, ["review", "approve", job, *answers, "--as", REVIEWER_A])
    assert r.exit_code != 0 and isinstance(r.exception, Exception)
    assert getattr(r.exception, "code", "") == "egress.review_risk"
    r = runner.invoke(app, ["review", "list", "--as", AUDITOR])
    assert r.exit_code == 0
    r = runner.invoke(app, ["review", "approve", job, *answers, "--as", AUDITOR])
    assert getattr(r.exception, "code", "") == "enclave.role_required"
    r = runner.invoke(
        app,
        ["review", "reject", job, "--reason", "exposes incomes", *answers, "--as", REVIEWER_B],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["release", "create", job, "--as", REVIEWER_B])
    assert getattr(r.exception, "code", "") == "egress.not_approved"


def test_rejecting_via_the_api_blocks_download(world: World, tmp_path: Path) -> None:
    job = world.run(district_counts(world))
    reject(world.domain.gate, job, REVIEWER_A, NO_RISK, "not in scope")
    r = runner.invoke(app, ["release", "list", "--json"])
    assert json.loads(r.output) == []
