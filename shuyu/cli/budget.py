"""`shuyu budget show SCENARIO`: a scenario's differential-privacy budget and its ledger."""

from __future__ import annotations

from typing import Annotated

import typer

from egress.ledger import Budget
from shuyu.cli.render import console, print_json, print_table
from shuyu.context import open_domain

__all__ = ["app"]

app = typer.Typer(
    help="Show a scenario's privacy budget: total, spent, left, and every DP charge.",
    no_args_is_help=True,
)


@app.command()
def show(
    scenario_id: Annotated[str, typer.Argument(help="The scenario id.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Total, spent and left (epsilon, delta), and the charges that spent it."""
    domain = open_domain()
    record = domain.scenarios.find(scenario_id)
    budget = Budget.of(record.scenario.privacy_budget) if record is not None else None
    report = domain.ledger.report(domain.engine, scenario_id, budget)
    if json_:
        print_json(report)
        return
    console.print(f"[bold]{scenario_id}[/bold] privacy budget")
    console.print(
        f"  epsilon  {report['epsilon_spent']:.4g} spent of {report['epsilon_total']:g}, "
        f"[bold]{report['epsilon_left']:.4g} left[/bold]"
    )
    console.print(
        f"  delta    {report['delta_spent']:.3g} spent of {report['delta_total']:.3g}, "
        f"{report['delta_left']:.3g} left"
    )
    console.print(f"  rho      {report['rho_spent']:.4g} (zCDP, all charges composed)")
    if report["per_job_epsilon"] is not None:
        console.print(f"  per job  epsilon at most {report['per_job_epsilon']:g}")
    charges = report["charges"]
    if not charges:
        console.print("  no DP charges yet")
        return
    print_table(
        f"{len(charges)} charge(s)",
        ("job", "epsilon", "delta", "rho", "time"),
        (
            (
                c["job_id"],
                f"{c['epsilon']:.4g}",
                f"{c['delta']:.3g}",
                f"{c['rho']:.4g}",
                c["created_at"][:19],
            )
            for c in charges
        ),
    )
