"""`shuyu dataset …` end to end through the CLI: import, list, show (no data), delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shuyu.cli import app
from shuyu.context import Domain
from shuyu.synthetic import DemoFiles, write_demo_data


@pytest.fixture
def demo(tmp_path: Path) -> DemoFiles:
    return write_demo_data(tmp_path / "src", 3_000, canaries=["CANARY-CLI-1", "CANARY-CLI-2"])


def _run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_import_list_show_delete(domain: Domain, demo: DemoFiles) -> None:
    code, out = _run(
        "dataset",
        "import",
        str(demo.data_path),
        "--name",
        "residents",
        "--meta",
        str(demo.meta_path),
        "--as",
        "alice",
        "--progress",
    )
    assert code == 0, out
    assert "imported residents version 1: 3,000 rows, grade L4" in out
    assert "bound verified" in out

    code, out = _run("dataset", "list", "--json")
    assert code == 0 and json.loads(out)[0]["name"] == "residents"

    code, out = _run("dataset", "show", "residents")
    assert code == 0, out
    assert "DEMO-430100-MZJ" in out and "身份证号" in out and "[0, 500000]" in out
    code, shown = _run("dataset", "show", "residents", "--json")
    assert json.loads(shown)["catalog"]["privacy_unit"] == "person_id"
    for text in (out, shown):
        assert "CANARY-CLI" not in text  # the catalog, never the data

    code, out = _run("dataset", "delete", "residents", "--as", "bob", input="n\n")
    assert code == 1 and "nothing deleted" in out
    assert domain.store.get("residents").status == "active"
    code, out = _run("dataset", "delete", "residents", "--yes", "--as", "bob")
    assert code == 0 and "keys destroyed" in out
    code, out = _run("dataset", "list", "--all", "--json")
    assert json.loads(out)[0]["status"] == "deleted"

    with domain.engine.connect() as conn:
        entries = [e for e in domain.audit.entries(conn) if e.action.startswith("dataset.")]
    assert [(e.action, e.actor) for e in entries] == [
        ("dataset.import", "alice"),
        ("dataset.delete", "bob"),
    ]


def test_cli_errors_are_clear(domain: Domain, demo: DemoFiles, tmp_path: Path) -> None:
    bad_meta = tmp_path / "bad.yaml"
    bad_meta.write_text(
        demo.meta_path.read_text(encoding="utf-8").replace("grade: L4", "grade: core", 1)
    )
    result = CliRunner().invoke(
        app, ["dataset", "import", str(demo.data_path), "--name", "x", "--meta", str(bad_meta)]
    )
    assert result.exception is not None and getattr(result.exception, "code", "") == (
        "enclave.catalog_refused"
    )
    with domain.engine.connect() as conn:
        (denied,) = [e for e in domain.audit.entries(conn) if e.action == "dataset.import"]
    assert denied.result == "denied" and denied.details["code"] == "enclave.catalog_refused"
    result = CliRunner().invoke(app, ["dataset", "show", "nothing"])
    assert getattr(result.exception, "code", "") == "enclave.dataset_unknown"
