"""`shuyu image build|show`: build the sandbox image and record the one jobs run on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from enclave.errors import KeyMaterialError
from sandbox.engine import docker_client
from sandbox.image import build_image
from sandbox.image_record import current_image_id, record_image
from shuyu.cli.render import console, err_console
from shuyu.context import open_domain
from shuyu.settings import load_settings

__all__ = ["app"]

app = typer.Typer(help="Build and show the sandbox image.", no_args_is_help=True)


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shuyu" / "image"


@app.command()
def build(
    method: Annotated[
        str, typer.Option(help="auto (registry if reachable, else offline), registry, offline.")
    ] = "auto",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where the rootfs and wheels are cached.")
    ] = None,
) -> None:
    """Build the sandbox image (or reuse an identical one) and record its image ID."""
    if method not in ("auto", "registry", "offline"):
        raise typer.BadParameter("method must be auto, registry or offline")
    chosen: Literal["auto", "registry", "offline"] = method  # type: ignore[assignment]
    settings = load_settings()
    client = docker_client(timeout_s=900)
    built = build_image(
        client,
        settings.sandbox_image,
        cache_dir or _default_cache(),
        method=chosen,
        progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]", highlight=False),
    )
    try:
        domain = open_domain(settings)
    except KeyMaterialError:
        err_console.print(
            f"[yellow]no domain at {settings.home}: image not recorded[/yellow] "
            "(run `shuyu init`, then this again)"
        )
    else:
        with domain.engine.begin() as conn:
            record_image(conn, domain.audit, built, actor="cli")
        domain.close()
    console.print(built.image_id, highlight=False)


@app.command()
def show() -> None:
    """Print the image ID jobs run on in this domain."""
    domain = open_domain()
    with domain.engine.connect() as conn:
        console.print(current_image_id(conn), highlight=False)
    domain.close()
