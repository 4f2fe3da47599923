"""`shuyu budget show`: what an operator or auditor sees of a scenario's budget."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from egress.dp import apply_noise, compile_query
from egress.ledger import Budget
from shuyu.cli import app
from shuyu.context import Domain
from tests.egress.dp_support import catalogs, duck, make_residents, run_exact

runner = CliRunner()


def _charge(domain: Domain, job: str, epsilon: float) -> None:
    con = duck({"residents": make_residents(200, seed=1)})
    c = compile_query(
        f"SELECT COUNT(*) FROM residents WHERE age > {int(epsilon * 10)}",
        catalogs(),
        epsilon=epsilon,
        delta=0.0,
    )
    domain.ledger.charge_and_record(
        domain.engine,
        scenario_id="S-cli",
        job_id=job,
        compiled=c,
        result=apply_noise(c, run_exact(c, con)),
        budget=Budget(3.0, 1e-6),
    )


def test_budget_show_lists_total_spent_left_and_charges(domain: Domain) -> None:
    _charge(domain, "J-a", 0.5)
    _charge(domain, "J-b", 1.0)
    out = runner.invoke(app, ["budget", "show", "S-cli"])
    assert out.exit_code == 0, out.output
    assert "1.5 spent of 3" in out.output and "1.5 left" in out.output
    assert "J-a" in out.output and "J-b" in out.output
    data = json.loads(runner.invoke(app, ["budget", "show", "S-cli", "--json"]).output)
    assert data["epsilon_left"] == 1.5 and len(data["charges"]) == 2


def test_budget_show_of_an_unknown_scenario_is_a_clear_error(domain: Domain) -> None:
    out = runner.invoke(app, ["budget", "show", "S-nope"])
    assert out.exit_code != 0
    assert out.exception is not None
    assert getattr(out.exception, "code", "") == "egress.unknown_scenario"
