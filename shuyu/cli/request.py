"""`shuyu request create|list|approve|refuse`: data requests within a scenario (R2.4)."""

from __future__ import annotations

from typing import Annotated

import typer

from shuyu.cli.render import console, print_json, print_table
from shuyu.cli.user import AsUser, require_as
from shuyu.context import open_domain

__all__ = ["app"]

app = typer.Typer(
    help="Operators request datasets of a scenario; providers approve or refuse.",
    no_args_is_help=True,
)


@app.command()
def create(
    scenario_id: Annotated[str, typer.Argument()],
    dataset: Annotated[str, typer.Argument()],
    note: Annotated[str, typer.Option(help="What the data is needed for.")] = "",
    as_user: AsUser = None,
) -> None:
    """Ask the dataset's provider for access within the scenario."""
    r = open_domain().requests.create(require_as(as_user), scenario_id, dataset, note)
    console.print(f"requested {r.dataset} in {r.scenario_id}: {r.id} (to {r.provider_org})")


@app.command("list")
def list_(
    scenario: Annotated[str | None, typer.Option(help="Only this scenario.")] = None,
    state: Annotated[str | None, typer.Option(help="pending, approved or refused.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_user: AsUser = None,
) -> None:
    """Requests you may see: providers theirs, operators their organisation's."""
    reqs = open_domain().requests.list_requests(
        require_as(as_user), scenario_id=scenario, state=state
    )
    if json_:
        print_json([r.to_dict() for r in reqs])
        return
    print_table(
        "data requests",
        ("id", "scenario", "dataset", "provider", "by", "state", "reason"),
        (
            [
                r.id,
                r.scenario_id,
                r.dataset,
                r.provider_org,
                r.requested_by,
                r.state,
                r.reason or "",
            ]
            for r in reqs
        ),
    )


@app.command()
def approve(
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Optional note.")] = "",
    as_user: AsUser = None,
) -> None:
    """Approve a request for your organisation's dataset."""
    r = open_domain().requests.approve(require_as(as_user), request_id, reason)
    console.print(f"[green]approved[/green] {r.id}: {r.dataset} in {r.scenario_id}")


@app.command()
def refuse(
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; the operator and authority see it.")],
    as_user: AsUser = None,
) -> None:
    """Refuse a request, with a reason."""
    r = open_domain().requests.refuse(require_as(as_user), request_id, reason)
    console.print(f"[yellow]refused[/yellow] {r.id}: {r.dataset} in {r.scenario_id}")
