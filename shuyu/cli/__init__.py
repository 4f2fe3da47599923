"""The ``shuyu`` command line: thin commands that parse, call one plain function, render.

Each area has its own module with a Typer app; this module only mounts them.
"""

from __future__ import annotations

import importlib
import sys

import typer

from policies.errors import ShuyuError
from shuyu.cli.render import console, print_error

__all__ = ["app", "main"]

app = typer.Typer(
    name="shuyu",
    help="shuyu (数域): compute on public data you may use but never see.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module under shuyu.cli, command name). A module holds `app` (a group) or `command`.
_AREAS: tuple[tuple[str, str], ...] = (
    ("domain", ""),  # init, status
    ("dataset", "dataset"),
    ("audit", "audit"),
    ("demo", "demo"),
    ("image", "image"),
    ("user", "user"),
    ("token", "token"),
    ("scenario", "scenario"),
    ("request", "request"),
    ("job", "job"),
    ("budget", "budget"),
    ("review", "review"),
    ("release", "release"),
    ("report", "report"),
    ("serve", ""),
    ("remote", ""),  # login, logout
)

for _module, _name in _AREAS:
    try:
        _mod = importlib.import_module(f"shuyu.cli.{_module}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"shuyu.cli.{_module}":
            raise
        continue
    if _name:
        app.add_typer(_mod.app, name=_name)
    else:
        for _cmd in getattr(_mod, "COMMANDS", ()):
            app.command()(_cmd)


def main() -> None:
    """Entry point: shuyu errors become one clear message and exit code 1, never a traceback."""
    try:
        app()
    except ShuyuError as exc:
        print_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
