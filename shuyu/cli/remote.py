"""Run CLI commands against a remote shuyu server: ``--url``, a token, and ``shuyu login``.

A command that takes :data:`UrlOption` runs locally (opening ``$SHUYU_HOME``) when no URL
is given, and through the HTTP API when ``--url`` or ``SHUYU_URL`` names a server. The
token comes from ``SHUYU_TOKEN`` or from the credentials file ``~/.shuyu/credentials``
that ``shuyu login`` writes with mode 0600; a file that others can read is refused, and
a token saved for one server is never sent to another.

    shuyu login --url https://shuyu.example.gov.cn --token sy_...
    shuyu job list --url https://shuyu.example.gov.cn
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any

import typer

from shuyu.cli.render import console
from shuyu.client import Client
from shuyu.errors import AuthError, SettingsError

__all__ = [
    "COMMANDS",
    "UrlOption",
    "credentials_path",
    "load_credentials",
    "remote_client",
    "save_credentials",
]

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="SHUYU_URL",
        help="Run against this shuyu server instead of the local domain "
        "(token from SHUYU_TOKEN or `shuyu login`).",
        show_default=False,
    ),
]


def credentials_path() -> Path:
    """``~/.shuyu/credentials``: the URL and token saved by ``shuyu login``."""
    return Path.home() / ".shuyu" / "credentials"


def _normal_url(url: str) -> str:
    return url.strip().rstrip("/")


def save_credentials(url: str, token: str, path: Path | None = None) -> Path:
    """Write the credentials file with mode 0600 (its folder 0700), replacing any old one."""
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the first byte (no window where it is world-readable), then
    # chmod in case an older file with a wider mode was already there.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": _normal_url(url), "token": token}, fh)
        fh.write("\n")
    os.chmod(path, 0o600)
    return path


def load_credentials(path: Path | None = None) -> dict[str, str] | None:
    """The saved URL and token, or None if there is no file; a readable-by-others file fails."""
    path = path or credentials_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SettingsError(
            f"{path} has mode {mode:04o}: other users could read your token",
            code="service.credentials_mode",
            hint=f"run `chmod 600 {path}` (or `shuyu login` again), then retry",
        )
    try:
        data: Any = json.loads(path.read_text())
        return {"url": str(data["url"]), "token": str(data["token"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise SettingsError(
            f"{path} is not a shuyu credentials file",
            code="service.credentials_invalid",
            hint="run `shuyu login --url URL --token TOKEN` to write it again",
        ) from exc


def resolve_token(url: str) -> str:
    """The token for ``url``: ``SHUYU_TOKEN``, else the credentials file saved for that URL."""
    if token := os.environ.get("SHUYU_TOKEN", "").strip():
        return token
    creds = load_credentials()
    if creds is None:
        raise AuthError(
            f"no token for {url}",
            code="service.no_credentials",
            hint="run `shuyu login --url URL --token TOKEN`, or set SHUYU_TOKEN",
        )
    if _normal_url(creds["url"]) != _normal_url(url):
        raise AuthError(
            f"the saved token is for {creds['url']}, not {url}",
            code="service.credentials_other_server",
            hint=f"run `shuyu login --url {url} --token TOKEN`, or set SHUYU_TOKEN",
        )
    return creds["token"]


def remote_client(url: str | None) -> Client | None:
    """A client for ``url`` with its token, or None when the command should run locally."""
    if not url:
        return None
    return Client(_normal_url(url), resolve_token(url))


def login(
    url: Annotated[str, typer.Option("--url", envvar="SHUYU_URL", help="The server's URL.")],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="SHUYU_TOKEN",
            prompt=True,
            hide_input=True,
            help="Your API token (prompted, hidden, if not given).",
        ),
    ],
) -> None:
    """Check a token against a server and save both in ~/.shuyu/credentials (mode 0600)."""
    with Client(_normal_url(url), token) as client:
        me = client.me()
    path = save_credentials(url, token)
    console.print(
        f"[green]logged in[/green] to {_normal_url(url)} as {me.user_id} "
        f"({', '.join(me.roles)}); token saved in {path} (mode 0600)"
    )


def logout() -> None:
    """Delete the saved credentials file."""
    path = credentials_path()
    if path.exists():
        path.unlink()
        console.print(f"removed {path}")
    else:
        console.print("no saved credentials")


COMMANDS = (login, logout)
