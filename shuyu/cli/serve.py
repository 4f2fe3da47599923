"""`shuyu serve`: the HTTP API, the reviewer console and the job runner in one process."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from shuyu.cli.render import err_console

__all__ = ["COMMANDS"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default SHUYU_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default SHUYU_PORT, 8750).")] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate: serve HTTPS (needed off loopback).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    jobs: Annotated[
        bool, typer.Option(help="Run the job runner in this process (--no-jobs: API only).")
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the API (/v1, /openapi.json, /metrics, /healthz) and the console (/console)."""
    import uvicorn

    from shuyu.api import create_app
    from shuyu.api.logging import configure_logging
    from shuyu.context import open_domain

    domain = open_domain()
    settings = domain.settings
    bind_host = host or settings.host
    bind_port = port or settings.port
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither")
    if not tls_cert and not _is_loopback(bind_host):
        # Bearer tokens and console cookies would cross the network in clear text.
        err_console.print(
            f"[yellow]warning[/yellow]: serving plain HTTP on {bind_host}; tokens cross the "
            "network unencrypted. Give --tls-cert/--tls-key or put a TLS proxy in front."
        )
    configure_logging(log_level)
    runner = None
    if jobs:
        from sandbox.image_record import STALE_IMAGE_HINT, stale_image

        with domain.engine.connect() as conn:
            why = stale_image(conn)
        if why is not None:
            err_console.print(f"[yellow]warning[/yellow]: {why}; {STALE_IMAGE_HINT}")
        from shuyu.jobs import JobRunner

        runner = JobRunner(domain, workers=settings.job_workers)
    app = create_app(domain, runner=runner)
    uvicorn.run(
        app,
        host=bind_host,
        port=bind_port,
        log_config=None,  # our JSON logging, configured above
        access_log=False,  # the API logs each request itself, without query strings
        server_header=False,
        proxy_headers=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )


COMMANDS = (serve,)
