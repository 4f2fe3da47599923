"""`shuyu release list|show|create|download|verify`: released products (R4.2, R5.4, R5.5).

`verify` works offline on a downloaded folder: it needs neither the domain nor a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from egress.registry import downloads, get_product, list_products
from egress.release import download_release, release_job, verify_release
from shuyu.cli.render import console, err_console, print_json, print_table
from shuyu.cli.user import AsUser, require_as
from shuyu.context import open_domain

__all__ = ["app"]

app = typer.Typer(help="Released products: list, download, verify.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("list")
def list_(
    scenario: Annotated[str | None, typer.Option(help="Only this scenario's.")] = None,
    json_: JsonOpt = False,
) -> None:
    """The product registry: every release with its sources."""
    with open_domain().engine.connect() as conn:
        items = list_products(conn, scenario_id=scenario)
    if json_:
        print_json(items)
        return
    print_table(
        "released products",
        ["release", "name", "scenario", "status", "sources", "registered"],
        [
            (
                p["release_id"],
                p["name"],
                p["scenario_id"],
                p["status"],
                ", ".join(f"{s['name']} v{s.get('version')}" for s in p["sources"]),
                (p["registered_at"] or "")[:19],
            )
            for p in items
        ],
    )


@app.command()
def show(release_id: Annotated[str, typer.Argument()], json_: JsonOpt = False) -> None:
    """One product's registry entry and who received it."""
    with open_domain().engine.connect() as conn:
        body = {**get_product(conn, release_id), "downloads": downloads(conn, release_id)}
    if json_:
        print_json(body)
        return
    console.print(f"[bold]{body['release_id']}[/bold] {body['name']} ({body['status']})")
    console.print(f"  {body['summary']}")
    for s in body["sources"]:
        console.print(
            f"  source {s['name']} v{s.get('version')} acquired {s.get('acquired_at')}",
            markup=False,
        )
    for d in body["downloads"]:
        console.print(f"  downloaded by {d['user']} at {d['at'][:19]}", markup=False)


@app.command()
def create(job_id: Annotated[str, typer.Argument()], as_user: AsUser = None) -> None:
    """Release an approved job (normally done by its last approval; this retries)."""
    rel = release_job(open_domain().gate, job_id, actor=require_as(as_user))
    console.print(f"released {job_id} as {rel.release_id}\n  {rel.path}")


@app.command()
def download(
    release_id: Annotated[str, typer.Argument()],
    to: Annotated[Path, typer.Option(help="Folder to copy the release into.")] = Path("."),
    purpose: Annotated[str, typer.Option(help="What the product is for (recorded).")] = "",
    as_user: AsUser = None,
) -> None:
    """Receive a product: recorded with your name (R4.2), then copied to --to."""
    path = download_release(
        open_domain().gate, release_id, require_as(as_user), to, purpose=purpose
    )
    console.print(f"downloaded {release_id} to {path}")


@app.command()
def verify(
    folder: Annotated[Path, typer.Argument(help="A release folder.")],
    public_key: Annotated[
        str | None,
        typer.Option(help="The domain's public key (hex); without it the bundled key is used."),
    ] = None,
) -> None:
    """Check a release offline: signature, every file's SHA-256, nothing added. Exit 2 if bad."""
    result = verify_release(folder, public_key)
    if result.ok:
        console.print(
            f"[green]release {result.release_id} verifies[/green]: {result.files_checked} "
            f"files, signed by {result.public_key}"
        )
        if not result.key_pinned:
            console.print(
                "[yellow]note[/yellow]: checked against the key shipped in the folder; pass "
                "--public-key with the domain's published key to rule out a re-signed copy"
            )
        return
    err_console.print(f"[bold red]release does NOT verify[/bold red] ({folder})")
    for p in result.problems:
        err_console.print(f"  - {p}", markup=False)
    raise typer.Exit(2)
