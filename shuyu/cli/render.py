"""Rendering helpers shared by every CLI command: Rich tables, JSON, errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from policies.errors import ShuyuError

__all__ = ["console", "err_console", "print_error", "print_json", "print_table"]

console = Console()
err_console = Console(stderr=True)


def print_error(exc: ShuyuError) -> None:
    err_console.print(
        f"[bold red]error[/bold red] [dim]{exc.code}[/dim]: {exc.message}",
        highlight=False,
        markup=True,
    )
    if exc.hint:
        err_console.print(f"[yellow]what to do:[/yellow] {exc.hint}", highlight=False)


def print_json(obj: Any) -> None:
    console.print_json(json.dumps(obj, default=str, ensure_ascii=False))


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    console.print(table)
