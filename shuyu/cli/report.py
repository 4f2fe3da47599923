"""`shuyu report supervision|quarterly|disclosure` (R6)."""

from __future__ import annotations

from typing import Annotated

import typer

from policies.errors import PolicyError
from shuyu.cli.render import console, print_json, print_table
from shuyu.cli.user import AsUser, require_as
from shuyu.context import open_domain
from shuyu.supervision import disclosure_list, quarterly_report, supervision_report

__all__ = ["app"]

app = typer.Typer(
    help="Supervision, quarterly and public disclosure reports.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def supervision(
    scenario_id: Annotated[str, typer.Argument()],
    days: Annotated[int, typer.Option(help="Look back this many days.")] = 90,
    json_: JsonOpt = False,
    as_user: AsUser = None,
) -> None:
    """Over-scope and over-purpose attempts, unused data, abnormal use (R6.1)."""
    r = supervision_report(open_domain(), require_as(as_user), scenario_id, window_days=days)
    if json_:
        print_json(r.to_dict())
        return
    console.print(
        f"[bold]{r.scenario_id}[/bold] ({r.operator_org}, {r.state}), last {r.window_days} days: "
        f"{r.decisions_allowed} jobs allowed, {r.decisions_denied} denied"
    )
    if not r.flags:
        console.print("[green]no findings[/green]")
        return
    print_table(
        "findings",
        ("kind", "subject", "finding"),
        ([f.kind, f.subject, f.message] for f in r.flags),
    )


@app.command()
def quarterly(
    scenario_id: Annotated[str, typer.Argument()],
    quarter: Annotated[str, typer.Option(help="The quarter, e.g. 2026Q3.")],
    json_: JsonOpt = False,
    as_user: AsUser = None,
) -> None:
    """Jobs run, datasets used, budget spent, outputs released/rejected, fees (R6.4, R8)."""
    try:
        r = quarterly_report(open_domain(), require_as(as_user), scenario_id, quarter)
    except ValueError as exc:
        raise PolicyError(
            str(exc), code="policy.quarter_invalid", hint="e.g. --quarter 2026Q3"
        ) from exc
    if json_:
        print_json(r.to_dict())
        return
    spent = "not reported" if r.epsilon_spent is None else f"epsilon {r.epsilon_spent:g}"
    rows = [
        ("jobs submitted", r.jobs_submitted),
        ("jobs run (metered)", r.jobs_run),
        ("jobs by state", ", ".join(f"{k} {v}" for k, v in r.jobs_by_state.items())),
        ("datasets used", ", ".join(f"{k} ({v})" for k, v in r.datasets_used.items())),
        ("job decisions denied", r.decisions_denied),
        ("outputs released", r.outputs_released),
        ("outputs rejected", r.outputs_rejected),
        ("privacy budget spent", spent),
        ("fee (CNY)", f"{r.fee_cny} ({r.use_class})"),
    ]
    print_table(f"{r.scenario_id} {r.quarter} ({r.operator_org})", ("item", "value"), rows)
    for note in r.notes:
        console.print(f"[dim]note: {note}[/dim]")


@app.command()
def disclosure(json_: JsonOpt = False) -> None:
    """The public list of authorizations in force: operator, content, scope, term (R6.5)."""
    entries = disclosure_list(open_domain())
    if json_:
        print_json([e.to_dict() for e in entries])
        return
    print_table(
        "authorizations in force",
        ("scenario", "operator", "purpose", "use", "data (columns)", "providers", "term", "state"),
        (
            [
                e.scenario_id,
                e.operator_org,
                e.purpose,
                e.use_class,
                "; ".join(f"{k} ({len(v)})" for k, v in e.datasets.items()),
                ", ".join(e.providers),
                f"{e.valid_from} .. {e.valid_until}",
                e.state,
            ]
            for e in entries
        ),
    )
