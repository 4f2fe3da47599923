"""`shuyu dataset import|list|show|delete`: the provider's and authority's dataset commands.

`show` prints the catalog entry only — never a row. Nothing here can read data.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from enclave.catalog import catalog_entry, column_entry, load_meta
from enclave.errors import CatalogError
from enclave.store import DatasetRecord, ImportProgress
from shuyu.cli.render import console, print_json, print_table
from shuyu.context import open_domain

__all__ = ["app", "current_actor"]

app = typer.Typer(help="Import, list, show and delete encrypted datasets.", no_args_is_help=True)

# Show a progress bar for sources at least this big; small imports finish before it helps.
_PROGRESS_MIN_BYTES = 32 * 1024 * 1024

AsUser = Annotated[
    str | None, typer.Option("--as", help="Act as this user (default: the OS user name).")
]


def current_actor(as_user: str | None = None) -> str:
    """Who the audit log names for a CLI action.

    The one place to change when tokens arrive: today the OS user, or ``--as``.
    """
    return as_user or getpass.getuser()


def _summary(r: DatasetRecord) -> list[object]:
    return [
        r.name,
        r.version,
        r.grade,
        r.status,
        f"{r.num_rows:,}",
        f"{r.num_bytes / 1024**2:,.1f} MiB",
        "yes" if r.unit_bound_verified else "no",
        f"{r.created_at:%Y-%m-%d %H:%M}",
    ]


_SUMMARY_COLUMNS = ("name", "version", "grade", "status", "rows", "stored", "unit bound", "created")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV (UTF-8, header row), Parquet or Arrow file.")],
    name: Annotated[str, typer.Option(help="Dataset name: the table name in SQL.")],
    meta: Annotated[Path, typer.Option(help="The dataset's META.yaml (see docs/datasets.md).")],
    as_user: AsUser = None,
    progress: Annotated[
        bool | None, typer.Option(help="Show a progress bar (default: for big files).")
    ] = None,
) -> None:
    """Check FILE against its META.yaml and store it encrypted; atomic, never plaintext on disk."""
    domain = open_domain()
    actor = current_actor(as_user)
    try:
        catalog = load_meta(meta)
    except CatalogError as exc:
        domain.store.record_refusal(name, actor, exc)  # policy refusals are audited
        raise
    show = progress if progress is not None else file.stat().st_size >= _PROGRESS_MIN_BYTES
    if show:
        with Progress(
            TextColumn("[bold]importing[/bold] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(file.name, total=file.stat().st_size)

            def report(p: ImportProgress) -> None:
                bar.update(task, completed=p.bytes_read)

            record = domain.store.import_dataset(
                file, name=name, meta=catalog, actor=actor, progress=report
            )
    else:
        record = domain.store.import_dataset(file, name=name, meta=catalog, actor=actor)
    console.print(
        f"[green]imported[/green] {record.name} version {record.version}: "
        f"{record.num_rows:,} rows, grade {record.grade}, encrypted "
        f"({record.num_bytes / 1024**2:,.1f} MiB); privacy-unit bound "
        + ("verified" if record.unit_bound_verified else "[yellow]not verified[/yellow]")
    )


@app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Include deleted datasets.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The datasets of this domain (catalog only)."""
    records = open_domain().store.list_datasets(include_deleted=all_)
    if json_:
        print_json([dict(zip(_SUMMARY_COLUMNS, _summary(r), strict=True)) for r in records])
        return
    print_table("datasets", _SUMMARY_COLUMNS, (_summary(r) for r in records))


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[int | None, typer.Option(help="A version (default: newest).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The catalog entry of NAME and its data items — metadata only, never data."""
    record = open_domain().store.get(name, version)
    if json_:
        print_json(
            {
                **dict(zip(_SUMMARY_COLUMNS, _summary(record), strict=True)),
                "id": record.id,
                "content_sha256": record.content_sha256,
                "catalog": record.meta.to_json(),
            }
        )
        return
    print_table(
        f"{record.name} v{record.version}",
        ("field", "value"),
        [
            *catalog_entry(record.meta),
            ("行数 rows", f"{record.num_rows:,}"),
            (
                "存储 stored",
                f"{record.num_bytes:,} bytes, encrypted, sha256 {record.content_sha256}",
            ),
            (
                "隐私单元上限已核验 unit bound verified",
                "yes" if record.unit_bound_verified else "no",
            ),
        ],
    )
    items = [column_entry(record.meta, c) for c in record.meta.columns]
    print_table("数据项 data items", list(items[0]), ([*i.values()] for i in items))


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[
        int | None, typer.Option(help="Delete only this version (default: every version).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_user: AsUser = None,
) -> None:
    """Crypto-shred NAME: destroy its keys and files; a tombstone stays in the catalog."""
    domain = open_domain()
    record = domain.store.get(name, version)
    which = f"version {version} of {name}" if version is not None else f"every version of {name}"
    if not yes and not typer.confirm(
        f"Destroy the keys and files of {which} ({record.grade})? This cannot be undone."
    ):
        console.print("nothing deleted")
        raise typer.Exit(1)
    gone = domain.store.delete_dataset(name, actor=current_actor(as_user), version=version)
    versions = ", ".join(str(r.version) for r in gone)
    console.print(
        f"[green]deleted[/green] {name} (version {versions}): keys destroyed, files removed"
    )
