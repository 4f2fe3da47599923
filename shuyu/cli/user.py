"""`shuyu user add|activate|list|disable`: the authority's personnel commands (R4.1).

The first authority is created by the local administrator, without ``--as``:

    shuyu user add chen --org ORG-BUREAU --role authority

Running on the domain's host with access to ``$SHUYU_HOME`` (and so to its master key) is
the root of trust; that is the only command that works without ``--as``, and only for
authorities. Every other command acts as a user (``--as`` or ``SHUYU_USER``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import typer

from enclave.errors import IdentityError
from enclave.identity import PersonnelSteps, User
from shuyu.cli.render import console, print_json, print_table
from shuyu.context import open_domain

__all__ = ["AsUser", "DateOption", "app", "require_as", "user_row"]

app = typer.Typer(
    help="Register users, record their personnel steps, list and disable them.",
    no_args_is_help=True,
)

AsUser = Annotated[
    str | None,
    typer.Option("--as", envvar="SHUYU_USER", help="Act as this user (or set SHUYU_USER)."),
]
DateOption = Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], show_default=False)]


def require_as(as_user: str | None) -> str:
    """The acting user; commands other than the bootstrap need one."""
    if not as_user:
        raise IdentityError(
            "this command acts as a user: give --as USER (or set SHUYU_USER)",
            code="enclave.actor_required",
            hint="the first authority is created with `shuyu user add NAME --org ORG "
            "--role authority` and no --as",
        )
    return as_user


def _day(value: datetime | None) -> date | None:
    return value.date() if value else None


def user_row(u: User, now: datetime) -> list[object]:
    missing = ", ".join(g.code.split(".", 1)[1] for g in u.gaps(now))
    gate = "" if not u.has("operator") else ("open" if not missing else f"missing: {missing}")
    return [u.id, u.org, ",".join(u.roles), u.status, gate, u.display_name]


@app.command()
def add(
    user_id: Annotated[str, typer.Argument(help="Login name, e.g. wang.li")],
    org: Annotated[str, typer.Option(help="Organisation code the user belongs to.")],
    role: Annotated[
        list[str],
        typer.Option(help="authority, provider, operator, reviewer or auditor; repeatable."),
    ],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    as_user: AsUser = None,
) -> None:
    """Register a user. Without --as: the local administrator bootstraps an authority."""
    domain = open_domain()
    u = domain.identity.add_user(as_user, user_id, org=org, roles=role, display_name=name)
    console.print(f"[green]added[/green] {u.id} ({', '.join(u.roles)}) of {u.org}")
    gaps = u.gaps(datetime.now(UTC))
    if gaps:
        console.print("operator account not open yet; record with `shuyu user activate`:")
        for g in gaps:
            console.print(f"  - {g.message}")


@app.command()
def activate(
    user_id: Annotated[str, typer.Argument(help="The user whose steps are recorded.")],
    verified_ref: Annotated[
        str | None, typer.Option(help="Reference of the real-name verification.")
    ] = None,
    verified_on: DateOption = None,
    training_ref: Annotated[
        str | None, typer.Option(help="Reference of the completed training.")
    ] = None,
    trained_on: DateOption = None,
    agreement_ref: Annotated[
        str | None, typer.Option(help="Reference of the signed confidentiality agreement.")
    ] = None,
    agreement_signed_on: DateOption = None,
    agreement_from: DateOption = None,
    agreement_until: DateOption = None,
    as_user: AsUser = None,
) -> None:
    """Record personnel steps (R4.1) and (re-)enable the account; the authority's review.

    An operator's account opens once verification, training and a confidentiality
    agreement with its term are all recorded; steps can be recorded one at a time.
    """
    domain = open_domain()
    steps = PersonnelSteps(
        real_name_ref=verified_ref,
        real_name_verified_on=_day(verified_on),
        training_ref=training_ref,
        trained_on=_day(trained_on),
        agreement_ref=agreement_ref,
        agreement_signed_on=_day(agreement_signed_on),
        agreement_valid_from=_day(agreement_from),
        agreement_valid_until=_day(agreement_until),
    )
    u = domain.identity.activate(require_as(as_user), user_id, steps)
    gaps = u.gaps(datetime.now(UTC))
    if not u.has("operator"):
        console.print(f"[green]{u.id} is active[/green]")
    elif not gaps:
        console.print(f"[green]{u.id}'s operator account is open[/green]")
    else:
        console.print(f"[yellow]{u.id}'s operator account is not open yet:[/yellow]")
        for g in gaps:
            console.print(f"  - {g.message}")


@app.command("list")
def list_(
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_user: AsUser = None,
) -> None:
    """List users, their roles and, for operators, whether their account is open."""
    domain = open_domain()
    users = domain.identity.list_users(require_as(as_user), org=org)
    now = datetime.now(UTC)
    if json_:
        print_json([u.to_dict(now) for u in users])
        return
    print_table(
        "users",
        ("user", "org", "roles", "status", "operator account", "name"),
        (user_row(u, now) for u in users),
    )


@app.command()
def disable(
    user_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")],
    as_user: AsUser = None,
) -> None:
    """Close an account at once; its tokens stop working."""
    domain = open_domain()
    u = domain.identity.disable(require_as(as_user), user_id, reason)
    console.print(f"[yellow]disabled[/yellow] {u.id}")
