"""`shuyu init` and `shuyu status`."""

from __future__ import annotations

from shuyu.cli.render import console
from shuyu.context import init_domain, open_domain

__all__ = ["COMMANDS"]


def init() -> None:
    """Create a new domain under $SHUYU_HOME: master key, signing key, database."""
    domain = init_domain()
    s = domain.settings
    console.print(f"[green]created domain[/green] at {s.home}")
    console.print(f"  master key   {s.master_key_path} (mode 0600)")
    console.print(f"  signing key  {s.signing_key_path} (mode 0600)")
    console.print(f"  public key   {domain.signer.public_key_hex}")
    console.print(f"  database     {s.resolved_database_url}")


def status() -> None:
    """Show where the domain lives and whether its audit log verifies."""
    domain = open_domain()
    with domain.engine.connect() as conn:
        result = domain.audit.verify(conn)
    s = domain.settings
    console.print(f"home      {s.home}\ndatabase  {s.resolved_database_url}\nkms       {s.kms}")
    console.print(
        f"audit     {'[green]verifies[/green]' if result.ok else '[red]BROKEN[/red]'}"
        f" ({result.entries} entries)"
    )
    from sandbox.errors import ImageError
    from sandbox.image_record import STALE_IMAGE_HINT, current_image_id, stale_image

    with domain.engine.connect() as conn:
        try:
            image = current_image_id(conn)
        except ImageError as exc:
            console.print(f"image     [yellow]none[/yellow] ({exc.hint})")
            return
        why = stale_image(conn)
    state = (
        "[green]current[/green]" if why is None else f"[red]STALE[/red]: {why}; {STALE_IMAGE_HINT}"
    )
    console.print(f"image     {image[:19]}… {state}", highlight=False)


COMMANDS = (init, status)
