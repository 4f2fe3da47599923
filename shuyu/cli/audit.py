"""`shuyu audit verify|export|checkpoint`: the auditor's commands."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from enclave.audit import AuditLog
from shuyu.cli.render import console, err_console
from shuyu.context import open_domain

__all__ = ["app"]

app = typer.Typer(help="Verify and export the tamper-evident audit log.", no_args_is_help=True)


@app.command()
def verify(
    against: Annotated[
        Path | None, typer.Option(help="A checkpoint file exported earlier, kept elsewhere.")
    ] = None,
) -> None:
    """Check the hash chain and every signed checkpoint; name the first bad entry."""
    domain = open_domain()
    external = json.loads(against.read_text()) if against else None
    with domain.engine.connect() as conn:
        result = domain.audit.verify(conn, against=external)
    if result.ok:
        console.print(
            f"[green]audit log verifies[/green]: {result.entries} entries, "
            f"{result.checkpoints} signed checkpoints"
        )
        return
    err_console.print(
        f"[bold red]audit log does NOT verify[/bold red]: first bad entry "
        f"{result.first_bad_seq}: {result.reason}"
    )
    raise typer.Exit(2)


@app.command()
def export(
    since: Annotated[
        datetime | None, typer.Option(help="Only entries at or after this time.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="File to write; default standard output.")
    ] = None,
) -> None:
    """Write the audit entries as JSON lines."""
    domain = open_domain()
    fh = out.open("w") if out else sys.stdout
    try:
        with domain.engine.connect() as conn:
            for entry in AuditLog.entries(conn, since):
                fh.write(entry.to_json() + "\n")
    finally:
        if out:
            fh.close()


@app.command()
def checkpoint(
    export: Annotated[Path | None, typer.Option(help="Write the signed checkpoint here.")] = None,
) -> None:
    """Sign the current head now and optionally export it to keep outside the domain."""
    domain = open_domain()
    with domain.engine.begin() as conn:
        cp = domain.audit.checkpoint(conn)
    if cp is None:
        console.print("the audit log is empty")
        return
    text = json.dumps(cp, indent=2)
    if export:
        export.write_text(text + "\n")
        console.print(f"checkpoint at entry {cp['seq']} written to {export}")
    else:
        console.print(text)
