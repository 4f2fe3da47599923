"""`shuyu scenario grant|list|show|suspend|resume|revoke|fusion-approve|sweep|sample-sql`.

One scenario, one authorization (R2): the authority grants a scenario file (see
``policies/examples/``), suspends and resumes it during supervision, and revokes it for
good; revocation crypto-shreds everything the domain kept for it (R6.3).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from enclave.identity import local_admin_actor
from enclave.scenarios import ScenarioRecord
from policies.scenario import load_scenario_file
from shuyu.cli.render import console, print_json, print_table
from shuyu.cli.user import AsUser, require_as
from shuyu.context import open_domain

__all__ = ["app"]

app = typer.Typer(
    help="Grant, inspect, suspend, resume and revoke scenario authorizations.",
    no_args_is_help=True,
)

Reason = Annotated[str, typer.Option(help="Why; recorded and shown in supervision reports.")]


def _row(r: ScenarioRecord, now: datetime) -> list[object]:
    s = r.scenario
    return [
        s.id,
        s.operator_org,
        s.use_class,
        r.effective_state(now),
        f"{s.validity.starts_at:%Y-%m-%d} .. {s.validity.last_day}",
        ", ".join(sorted(s.datasets)),
        r.policy_hash[:12],
    ]


@app.command()
def grant(
    file: Annotated[Path, typer.Argument(help="The scenario YAML (see policies/examples/).")],
    as_user: AsUser = None,
) -> None:
    """Grant a scenario (authority only); prints its policy hash."""
    scenario = load_scenario_file(file)
    domain = open_domain()
    rec = domain.scenarios.grant(require_as(as_user), scenario)
    console.print(f"[green]granted[/green] {rec.id} to {rec.scenario.operator_org}")
    console.print(
        f"  term         {rec.scenario.validity.start} .. {rec.scenario.validity.last_day}"
    )
    console.print(f"  policy hash  {rec.policy_hash}")


@app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option(help="active, suspended, revoked or expired.")
    ] = None,
    org: Annotated[str | None, typer.Option(help="Only this operator organisation.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List scenarios with their state and term."""
    domain = open_domain()
    now = datetime.now(UTC)
    records = [
        r
        for r in domain.scenarios.list_scenarios(operator_org=org)
        if state is None or r.effective_state(now) == state
    ]
    if json_:
        print_json([r.to_dict(now) for r in records])
        return
    print_table(
        "scenarios",
        ("id", "operator", "use", "state", "term", "datasets", "policy"),
        (_row(r, now) for r in records),
    )


@app.command()
def show(
    scenario_id: Annotated[str, typer.Argument()],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a scenario: its state, term, datasets and columns, and policy hash."""
    domain = open_domain()
    rec = domain.scenarios.get(scenario_id)
    now = datetime.now(UTC)
    if json_:
        print_json(rec.to_dict(now))
        return
    s = rec.scenario
    console.print(f"[bold]{s.id}[/bold] {s.title}")
    console.print(f"  operator     {s.operator_org}  ({s.use_class})")
    console.print(f"  purpose      {s.purpose}")
    state = rec.effective_state(now)
    why = f" — {rec.grant.state_reason}" if rec.grant.state_reason else ""
    console.print(f"  state        {state}{why}")
    console.print(f"  term         {s.validity.start} .. {s.validity.last_day}")
    console.print(f"  jobs         {', '.join(s.job_kinds)} -> {', '.join(s.output_modes)}")
    b = s.privacy_budget
    console.print(
        f"  budget       epsilon {b.epsilon:g} (per job {b.per_job_epsilon:g}), delta {b.delta:g}"
    )
    console.print(f"  policy hash  {rec.policy_hash}")
    for name, scope in sorted(s.datasets.items()):
        fused = " (fusion approved)" if name in rec.fusion_approved else ""
        console.print(f"  {name}{fused}: {', '.join(scope.columns)}")


@app.command()
def suspend(
    scenario_id: Annotated[str, typer.Argument()], reason: Reason, as_user: AsUser = None
) -> None:
    """Close access at once, running jobs included; everything is kept (R6.2)."""
    rec = open_domain().scenarios.suspend(require_as(as_user), scenario_id, reason)
    console.print(f"[yellow]suspended[/yellow] {rec.id}")


@app.command()
def resume(
    scenario_id: Annotated[str, typer.Argument()], reason: Reason, as_user: AsUser = None
) -> None:
    """Reopen a suspended scenario after rectification."""
    rec = open_domain().scenarios.resume(require_as(as_user), scenario_id, reason)
    console.print(f"[green]resumed[/green] {rec.id}")


@app.command()
def revoke(
    scenario_id: Annotated[str, typer.Argument()],
    reason: Reason,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_user: AsUser = None,
) -> None:
    """End the scenario for good: refuse its jobs, crypto-shred its retained data, keep logs."""
    actor = require_as(as_user)
    if not yes:
        typer.confirm(
            f"Revoke {scenario_id} for good and irreversibly destroy the data kept for it?",
            abort=True,
        )
    rec = open_domain().scenarios.revoke(actor, scenario_id, reason)
    console.print(f"[red]revoked[/red] {rec.id}; retained data crypto-shredded, logs kept")


@app.command("fusion-approve")
def fusion_approve(
    scenario_id: Annotated[str, typer.Argument()],
    dataset: Annotated[str, typer.Argument(help="The operator-owned (social) dataset.")],
    reason: Reason,
    as_user: AsUser = None,
) -> None:
    """Approve fusing an operator-owned dataset with public data in this scenario (R2.6)."""
    open_domain().scenarios.approve_fusion(require_as(as_user), scenario_id, dataset, reason)
    console.print(f"[green]fusion approved[/green]: {dataset} in {scenario_id}")


@app.command()
def sweep() -> None:
    """Record the expiry of scenarios whose term ended, and shred their data (run daily)."""
    ended = open_domain().scenarios.expire_due(local_admin_actor())
    console.print(f"expired: {', '.join(ended)}" if ended else "no scenario ended")


@app.command("sample-sql")
def sample_sql(
    scenario_id: Annotated[str, typer.Argument()],
    dataset: Annotated[str, typer.Argument()],
) -> None:
    """Print the SQL of a dataset's desensitized sample view in this scenario (no key shown)."""
    view = open_domain().scenarios.sample_view(scenario_id, dataset)
    console.print(view.view_sql(), highlight=False, soft_wrap=True)
    console.print(json.dumps(dict(view.actions), ensure_ascii=False), highlight=False)
