"""`shuyu job submit|run|show|list|cancel|result`: the operator's commands.

Locally (no ``--url``) the command acts as ``--as USER`` on ``$SHUYU_HOME`` and, unless
``--no-run``, runs the job to the gate in this process; against a server (``--url`` or
``SHUYU_URL``) it submits through the HTTP API and waits with a progress spinner.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import pyarrow.csv as pacsv
import typer

from egress.models.output import is_model_table, save_model_result
from shuyu import jobs
from shuyu.cli.remote import UrlOption, remote_client
from shuyu.cli.render import console, print_json, print_table
from shuyu.cli.user import AsUser, require_as
from shuyu.context import Domain, open_domain

__all__ = ["app"]

app = typer.Typer(help="Submit jobs and follow them to the gate.", no_args_is_help=True)

OutputMode = Literal["dp_aggregate", "sdc_aggregate", "model"]
_SHOWN = ("id", "scenario_id", "kind", "output_mode", "state", "error_code", "updated_at")


def _code(sql: str | None, sql_file: Path | None, python: Path | None) -> tuple[str, str]:
    given = [x for x in (sql, sql_file, python) if x is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --sql, --sql-file or --python")
    if python is not None:
        return "python", python.read_text(encoding="utf-8")
    if sql_file is not None:
        return "sql", sql_file.read_text(encoding="utf-8")
    assert sql is not None
    return "sql", sql


@contextmanager
def _local() -> Iterator[Domain]:
    """The local domain, closed on the way out so no warm sandbox outlives the command."""
    domain = open_domain()
    try:
        yield domain
    finally:
        domain.close()


def _render(view: dict[str, Any]) -> None:
    print_table("job", ["field", "value"], [(k, view.get(k)) for k in _SHOWN])
    if view.get("error_message"):
        console.print(f"[red]{view['error_message']}[/red]", highlight=False)


@app.command()
def submit(
    scenario: Annotated[str, typer.Option(help="The scenario the job runs under.")],
    sql: Annotated[str | None, typer.Option(help="The SQL, inline.")] = None,
    sql_file: Annotated[Path | None, typer.Option(help="A file holding the SQL.")] = None,
    python: Annotated[Path | None, typer.Option(help="A Python training script.")] = None,
    mode: Annotated[
        str, typer.Option(help="dp_aggregate, sdc_aggregate or model.")
    ] = "dp_aggregate",
    epsilon: Annotated[float | None, typer.Option(help="Privacy cost to spend (DP).")] = None,
    accuracy: Annotated[
        float | None, typer.Option(help="Instead of ε: the 95% error you want (DP).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only price and check; run nothing.")
    ] = False,
    no_run: Annotated[
        bool, typer.Option("--no-run", help="Queue only (a server's runner picks it up).")
    ] = False,
    as_user: AsUser = None,
    url: UrlOption = None,
) -> None:
    """Submit a job; with --dry-run see its cost, expected error and access decision."""
    kind, code = _code(sql, sql_file, python)
    if kind == "python" and mode == "dp_aggregate":
        mode = "model"
    client = remote_client(url)
    if client is not None:
        with client:
            remote: Any
            if kind == "python" and python is not None:
                remote = client.submit_python(scenario, python)
            else:
                remote = client.submit_sql(
                    scenario,
                    code,
                    dry_run=dry_run,
                    epsilon=epsilon,
                    accuracy=accuracy,
                    output_mode=cast(OutputMode, mode),
                )
            if dry_run or no_run:
                print_json(remote.model_dump())
                return
            with console.status("waiting for the job …"):
                done = client.wait(remote.id)
            _render(done.model_dump())
        return
    with _local() as domain:
        user = domain.identity.get(require_as(as_user))
        view = jobs.submit(
            domain,
            user,
            scenario,
            kind=kind,
            code=code,
            output_mode=mode,
            epsilon=epsilon,
            accuracy=accuracy,
            dry_run=dry_run,
        )
        if dry_run:
            print_json(view)
            return
        if not no_run:
            with console.status(f"running {view['id']} in a sandbox …"):
                view = jobs.run_job(domain, view["id"])
        _render(view)


@app.command()
def run(job_id: str, as_user: AsUser = None) -> None:
    """Run a queued (authorized) job to the gate, in this process."""
    require_as(as_user)
    with _local() as domain, console.status(f"running {job_id} …"):
        _render(jobs.run_job(domain, job_id))


@app.command()
def show(job_id: str, as_user: AsUser = None, url: UrlOption = None) -> None:
    """A job's state, error code and message (never data)."""
    client = remote_client(url)
    if client is not None:
        with client:
            _render(client.job(job_id).model_dump())
        return
    domain = open_domain()
    _render(jobs.get(domain, domain.identity.get(require_as(as_user)), job_id))


@app.command("list")
def list_(
    scenario: Annotated[str | None, typer.Option(help="Only this scenario.")] = None,
    as_user: AsUser = None,
    url: UrlOption = None,
) -> None:
    """The jobs you may see."""
    client = remote_client(url)
    if client is not None:
        with client:
            views = [v.model_dump() for v in client.jobs(scenario)]
    else:
        domain = open_domain()
        views = jobs.list_jobs(domain, domain.identity.get(require_as(as_user)), scenario)
    print_table("jobs", list(_SHOWN), ([v.get(k) for k in _SHOWN] for v in views))


@app.command()
def cancel(job_id: str, as_user: AsUser = None, url: UrlOption = None) -> None:
    """Cancel a job that has not been released."""
    client = remote_client(url)
    if client is not None:
        with client:
            _render(client.cancel(job_id).model_dump())
        return
    domain = open_domain()
    _render(jobs.cancel(domain, domain.identity.get(require_as(as_user)), job_id))


@app.command()
def result(
    job_id: str,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write CSV here; default: print. A model job: the .skops file to write "
            "(its card goes next to it); default ./<job id>.skops."
        ),
    ] = None,
    as_user: AsUser = None,
    url: UrlOption = None,
) -> None:
    """A released job's result (refused until a reviewer approves it)."""
    client = remote_client(url)
    if client is not None:
        with client:
            table = client.result(job_id)
    else:
        domain = open_domain()
        table = jobs.result_table(domain, domain.identity.get(require_as(as_user)), job_id)
    if is_model_table(table):
        _save_model(table, out or Path(f"{job_id}.skops"))
        return
    if out is not None:
        pacsv.write_csv(table, out)
        console.print(f"{table.num_rows} rows written to {out}")
        return
    rows = table.to_pylist()
    print_table(
        f"result of {job_id}",
        table.column_names,
        (
            [
                json.dumps(r[c], ensure_ascii=False) if isinstance(r[c], (dict, list)) else r[c]
                for c in table.column_names
            ]
            for r in rows
        ),
    )


def _save_model(table: Any, path: Path) -> None:
    """Write a released model and its card; say how to load it without trusting everything."""
    saved = save_model_result(table, path)
    console.print(
        f"model written to {saved.model_path} ({saved.size_bytes} bytes, sha256 {saved.sha256})"
    )
    console.print(f"card: {saved.card_json_path} and {saved.card_markdown_path}")
    console.print(
        "load it with skops and exactly these trusted types (never trusted=True; "
        "docs/models.md lists the allow-list):"
    )
    console.print(saved.load_code(), markup=False, highlight=False, soft_wrap=True)
