"""`shuyu review list|show|approve|reject|comment|send-back`: the reviewer's commands (R1.3).

Thin: each command calls one function of :mod:`egress.review` and renders the result.
`show` prints the job's code, the scenario's purpose, the egress report and the held
output (aggregates only; blocked outputs are never held).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from egress import review
from shuyu.cli.remote import UrlOption, remote_client
from shuyu.cli.render import console, print_json, print_table
from shuyu.cli.user import AsUser, require_as
from shuyu.context import open_domain

__all__ = ["app"]

app = typer.Typer(help="Review outputs waiting at the egress gate.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class YesNo(StrEnum):
    yes = "yes"
    no = "no"


def _answer(flag: str, question: str) -> Any:
    return typer.Option(f"--{flag}", help=f"(R1.3) {question}", case_sensitive=False)


Scope = Annotated[YesNo, _answer("scope", review.QUESTIONS["beyond_scope"])]
Exposure = Annotated[YesNo, _answer("exposure", review.QUESTIONS["direct_exposure"])]
ModelRisk = Annotated[YesNo, _answer("model-risk", review.QUESTIONS["model_attack"])]
OtherRisk = Annotated[YesNo, _answer("other-risk", review.QUESTIONS["other_risk"])]


def _answers(scope: YesNo, exposure: YesNo, model: YesNo, other: YesNo) -> review.ReviewAnswers:
    return review.ReviewAnswers(
        scope == YesNo.yes, exposure == YesNo.yes, model == YesNo.yes, other == YesNo.yes
    )


@app.command("list")
def list_(as_user: AsUser = None, json_: JsonOpt = False, url: UrlOption = None) -> None:
    """Jobs waiting for review, oldest first."""
    client = remote_client(url)
    if client is not None:
        items = [i.model_dump() for i in client.reviews()]
    else:
        items = review.review_queue(open_domain().gate, require_as(as_user))
    if json_:
        print_json(items)
        return
    if not items:
        console.print("nothing is waiting for review")
        return
    print_table(
        "waiting for review",
        ["job", "scenario", "submitter", "mode", "verdict", "approvals", "since"],
        [
            (
                i["job_id"] + (" (yours)" if i["own_job"] else ""),
                i["scenario_id"],
                i["submitter"],
                i["output_mode"],
                i["verdict"],
                f"{i['approvals']}/{i['required']}",
                i["waiting_since"][:19],
            )
            for i in items
        ],
    )


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="The job to review.")],
    as_user: AsUser = None,
    rows: Annotated[int, typer.Option(help="Output rows to print per output.")] = 20,
    json_: JsonOpt = False,
) -> None:
    """The job's code, the scenario's purpose, the egress report and the output."""
    view = review.show(open_domain().gate, job_id, require_as(as_user))
    if json_:
        view["outputs"] = [
            {**{k: v for k, v in o.items() if k != "table"}, "rows": o["table"].to_pylist()}
            for o in view["outputs"]
        ]
        print_json(view)
        return
    job, sc, rep = view["job"], view["scenario"], view["report"]
    console.print(f"[bold]{job['id']}[/bold] ({job['state']}) by {job['submitter']}")
    if sc:
        console.print(f"scenario [bold]{sc['id']}[/bold] {sc['title']}\n  purpose: {sc['purpose']}")
    console.rule("code")
    console.print(job["code"], markup=False, highlight=False)
    if rep:
        console.rule(f"egress report: {rep['verdict']}")
        for out in rep["outputs"]:
            for f in out["findings"]:
                fix = f" — fix: {f['fix']['description']}" if "fix" in f else ""
                console.print(
                    f"  [{f['severity']}] {out['name']}: {f['message']}{fix}", markup=False
                )
            if not out["findings"]:
                console.print(f"  {out['name']}: no findings")
    for o in view["outputs"]:
        t = o["table"]
        print_table(
            f"output {o['name']} ({t.num_rows} rows)",
            t.column_names,
            [list(r.values()) for r in t.slice(0, rows).to_pylist()],
        )
    console.print(
        f"approvals {len(view['approvals'])}/{view['required_reviewers']}"
        + (f": {', '.join(view['approvals'])}" if view["approvals"] else "")
    )
    for r in view["reviews"]:
        console.print(f"  {r['at'][:19]} {r['reviewer']} {r['action']}: {r['text']}", markup=False)


@app.command()
def approve(
    job_id: Annotated[str, typer.Argument()],
    scope: Scope,
    exposure: Exposure,
    model_risk: ModelRisk,
    other_risk: OtherRisk,
    reason: Annotated[str, typer.Option(help="Why it may leave.")] = "",
    as_user: AsUser = None,
    url: UrlOption = None,
) -> None:
    """Approve (all four answers must be "no"); the last approval releases the output."""
    client = remote_client(url)
    if client is not None:
        answers = _answers(scope, exposure, model_risk, other_risk).to_dict()
        decision = client.approve(job_id, answers, reason)
        console.print(
            f"[green]approved[/green] {job_id}: {decision.state}, "
            f"{decision.approvals}/{decision.required} approvals"
            + (f"; release {decision.release_id}" if decision.release_id else "")
        )
        return
    out = review.approve(
        open_domain().gate,
        job_id,
        require_as(as_user),
        _answers(scope, exposure, model_risk, other_risk),
        reason,
    )
    if out.release is None:
        console.print(
            f"[green]approved[/green] {job_id}: {out.approvals}/{out.required} approvals; "
            "waiting for another reviewer"
        )
    else:
        console.print(f"[green]approved and released[/green] {job_id} as {out.release.release_id}")
        console.print(f"  {out.release.path}")


@app.command()
def reject(
    job_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="What is wrong (the operator sees it).")],
    scope: Scope,
    exposure: Exposure,
    model_risk: ModelRisk,
    other_risk: OtherRisk,
    as_user: AsUser = None,
    url: UrlOption = None,
) -> None:
    """Reject for good: the held output is deleted and never released."""
    client = remote_client(url)
    if client is not None:
        client.reject(job_id, _answers(scope, exposure, model_risk, other_risk).to_dict(), reason)
        console.print(f"[red]rejected[/red] {job_id}")
        return
    review.reject(
        open_domain().gate,
        job_id,
        require_as(as_user),
        _answers(scope, exposure, model_risk, other_risk),
        reason,
    )
    console.print(f"[red]rejected[/red] {job_id}")


@app.command("send-back")
def send_back(
    job_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="What to change before resubmitting.")],
    as_user: AsUser = None,
    url: UrlOption = None,
) -> None:
    """Reject asking for changes; the operator fixes the job and submits it again."""
    client = remote_client(url)
    if client is not None:
        client.send_back(job_id, reason)
    else:
        review.send_back(open_domain().gate, job_id, require_as(as_user), reason)
    console.print(f"[yellow]sent back[/yellow] {job_id} for changes")


@app.command()
def comment(
    job_id: Annotated[str, typer.Argument()],
    text: Annotated[str, typer.Argument(help="The comment.")],
    as_user: AsUser = None,
) -> None:
    """Comment on a job under review (no decision)."""
    rid = review.comment(open_domain().gate, job_id, require_as(as_user), text)
    console.print(f"commented on {job_id} ({rid})")
