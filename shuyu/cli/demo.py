"""`shuyu demo …`: synthetic data and (later) the whole flow end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from shuyu.cli.render import console
from shuyu.synthetic import write_demo_data

__all__ = ["app"]

app = typer.Typer(help="Synthetic demo data and an end-to-end demo.", no_args_is_help=True)


@app.command()
def data(
    rows: Annotated[int, typer.Option(min=1, max=100_000_000, help="Number of rows.")] = 10_000,
    out: Annotated[Path, typer.Option(help="Folder to write the data and META.yaml into.")] = Path(
        "demo-data"
    ),
    format_: Annotated[
        str, typer.Option("--format", help="parquet or csv.", case_sensitive=False)
    ] = "parquet",
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 0,
    max_rows_per_person: Annotated[
        int, typer.Option(min=1, max=100, help="Most records one person may own.")
    ] = 5,
) -> None:
    """Write a synthetic resident / social-benefit table and its META.yaml (all made up)."""
    fmt = format_.lower()
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("use parquet or csv", param_hint="--format")
    chosen: Literal["parquet", "csv"] = "parquet" if fmt == "parquet" else "csv"
    start = time.perf_counter()
    with console.status(f"generating {rows:,} rows…"):
        files = write_demo_data(
            out, rows, fmt=chosen, seed=seed, max_rows_per_person=max_rows_per_person
        )
    took = time.perf_counter() - start
    console.print(f"[green]wrote[/green] {files.rows:,} rows in {took:.1f} s")
    console.print(f"  data  {files.data_path}")
    console.print(f"  meta  {files.meta_path}")
    console.print(
        f"import it with: shuyu dataset import {files.data_path} --name residents "
        f"--meta {files.meta_path}"
    )


@app.command()
def run(
    rows: Annotated[
        int, typer.Option(min=1_000, max=10_000_000, help="Synthetic residents to generate.")
    ] = 1_000_000,
) -> None:
    """The whole flow end to end in $SHUYU_HOME: every role, DP and SDC jobs, reviews,
    signed releases, the audit log."""
    from shuyu.demo import run_demo
    from shuyu.settings import load_settings

    result = run_demo(load_settings(), rows=rows, say=lambda m: console.print(m, highlight=False))
    if not result.audit_ok:
        raise typer.Exit(2)
