"""`shuyu token create|revoke|list`: API tokens, shown once, stored only as a hash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from shuyu.cli.render import console, err_console, print_table
from shuyu.cli.user import AsUser, require_as
from shuyu.context import open_domain

__all__ = ["app"]

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@app.command()
def create(
    for_user: Annotated[
        str | None, typer.Option("--for", help="Whose token (authorities only; default: yours).")
    ] = None,
    ttl_days: Annotated[int, typer.Option(help="Days until it expires (1-366).")] = 90,
    label: Annotated[str, typer.Option(help="What it is for, e.g. the machine.")] = "",
    as_user: AsUser = None,
) -> None:
    """Create a token. It is printed once; the domain keeps only its SHA-256."""
    domain = open_domain()
    issued = domain.identity.create_token(
        require_as(as_user), for_user, ttl_days=ttl_days, label=label
    )
    err_console.print(
        f"token {issued.id} for {issued.user_id}, expires {issued.expires_at:%Y-%m-%d %H:%M} "
        "UTC. [bold]Copy it now: it is not shown again.[/bold]"
    )
    console.print(issued.secret, highlight=False, soft_wrap=True)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_...), not the token.")],
    as_user: AsUser = None,
) -> None:
    """Revoke a token at once."""
    domain = open_domain()
    info = domain.identity.revoke_token(require_as(as_user), token_id)
    console.print(f"[yellow]revoked[/yellow] {info.id} of {info.user_id}")


@app.command("list")
def list_(
    for_user: Annotated[str | None, typer.Option("--for", help="Whose tokens.")] = None,
    as_user: AsUser = None,
) -> None:
    """List tokens by id and state (never the tokens themselves)."""
    domain = open_domain()
    tokens = domain.identity.list_tokens(require_as(as_user), for_user)
    now = datetime.now(UTC)
    print_table(
        "tokens",
        ("id", "user", "label", "created", "expires", "state"),
        (
            [
                t.id,
                t.user_id,
                t.label,
                f"{t.created_at:%Y-%m-%d}",
                f"{t.expires_at:%Y-%m-%d}",
                t.state(now),
            ]
            for t in tokens
        ),
    )
