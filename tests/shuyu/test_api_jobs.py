"""Jobs over HTTP: submit (202), dry run, status, list, cancel, the per-scenario limit,
server-sent events, and the released result as Arrow, CSV and JSON.

No Docker here: nothing runs the queue, so a submitted job stays ``authorized``; results
come from jobs taken through the gate by the egress factories (see api_support).
"""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from enclave.catalog import load_meta
from policies.scenario import parse_scenario
from shuyu.client import Client
from shuyu.synthetic import write_demo_data
from tests.shuyu.api_support import Api, pending_review_job

SCENARIO = "S-2026-101"
DP_SQL = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"
NO_RISK = dict.fromkeys(("beyond_scope", "direct_exposure", "model_attack", "other_risk"), False)


@pytest.fixture
def world(api: Api) -> Api:
    """A real encrypted dataset, a scenario for op.wang's organisation, the request approved."""
    domain = api.domain
    files = write_demo_data(domain.settings.home / "src", 300, seed=3)
    meta = load_meta(files.meta_path)
    domain.store.import_dataset(files.data_path, name="residents", meta=meta, actor="auth.chen")
    domain.identity.add_user("auth.chen", "prov.mzj", org=meta.provider.code, roles=["provider"])
    today = date.today()
    domain.scenarios.grant(
        "auth.chen",
        parse_scenario(
            {
                "id": SCENARIO,
                "title": "Residents by district",
                "operator_org": "OP-ACME",
                "purpose": "Plan outreach per district with counts of residents.",
                "use_class": "public_welfare",
                "datasets": {"residents": {"columns": ["person_id", "district", "age"]}},
                "job_kinds": ["sql"],
                "output_modes": ["dp_aggregate", "sdc_aggregate"],
                "privacy_budget": {"epsilon": 3.0, "delta": 1e-6, "per_job_epsilon": 1.0},
                "validity": {
                    "start": today.isoformat(),
                    "end": (today + timedelta(days=300)).isoformat(),
                },
            }
        ),
    )
    req = domain.requests.create("op.wang", SCENARIO, "residents")
    domain.requests.approve("prov.mzj", req.id, reason="within purpose")
    return api


def sdk(api: Api, user_id: str = "op.wang") -> Client:
    return Client("http://testserver", api.tokens[user_id], http=api.client)


def test_submit_answers_202_and_the_job_can_be_followed(world: Api) -> None:
    r = world.client.post(
        "/v1/jobs",
        headers=world.as_role("operator"),
        json={"scenario_id": SCENARIO, "code": DP_SQL, "epsilon": 0.5},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "authorized" and job["submitter"] == "op.wang"
    assert sdk(world).job(job["id"]).state == "authorized"
    assert [j.id for j in sdk(world).jobs(SCENARIO)] == [job["id"]]
    # a reviewer sees it too; a provider may not list jobs at all
    assert sdk(world, "rev.zhao").job(job["id"]).id == job["id"]


def test_dry_run_prices_the_query_and_charges_nothing(world: Api) -> None:
    report = sdk(world).submit_sql(SCENARIO, DP_SQL, dry_run=True, epsilon=0.5)
    assert report.allowed is True
    assert report.dp is not None and report.budget_left_before is not None
    assert "district" in report.columns_read["residents"]
    assert sdk(world).budget(SCENARIO).epsilon_spent == 0.0
    assert sdk(world).jobs() == []


def test_a_refused_job_says_why(world: Api) -> None:
    r = world.client.post(
        "/v1/jobs",
        headers=world.as_role("operator"),
        json={"scenario_id": SCENARIO, "code": "SELECT name FROM residents"},
    )
    assert r.status_code in (403, 422), r.text
    body = r.json()
    assert body["code"] and body["message"] and body["request_id"]


def test_the_concurrent_job_limit_answers_429(world: Api) -> None:
    world.domain.settings.max_concurrent_jobs_per_scenario = 1
    body = {"scenario_id": SCENARIO, "code": DP_SQL, "epsilon": 0.1}
    first = world.client.post("/v1/jobs", headers=world.as_role("operator"), json=body)
    assert first.status_code == 202
    r = world.client.post("/v1/jobs", headers=world.as_role("operator"), json=body)
    assert r.status_code == 429 and r.json()["code"] == "service.too_many_jobs"
    assert r.headers["retry-after"] == "5"
    # cancelling the first frees the slot
    sdk(world).cancel(first.json()["id"])
    assert (
        world.client.post("/v1/jobs", headers=world.as_role("operator"), json=body).status_code
        == 202
    )


def test_cancel_is_for_the_submitter_or_an_authority(world: Api) -> None:
    job = sdk(world).submit_sql(SCENARIO, DP_SQL, epsilon=0.1)
    r = world.client.post(f"/v1/jobs/{job.id}/cancel", headers=world.as_role("authority"))
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = world.client.post(f"/v1/jobs/{job.id}/cancel", headers=world.as_role("operator"))
    assert r.status_code == 200 and r.json()["state"] == "cancelled"  # idempotent
    r = world.client.post(f"/v1/jobs/{job.id}/cancel", headers=world.as_role("reviewer"))
    assert r.status_code == 403


def test_events_stream_each_state_until_the_job_is_final(api: Api) -> None:
    job = pending_review_job(api)

    def approve_soon() -> None:
        time.sleep(1.0)
        sdk(api, "rev.zhao").approve(job, NO_RISK, "ok")

    threading.Thread(target=approve_soon).start()
    events = list(sdk(api).events(job, timeout_s=30))
    states = [e.state for e in events]
    assert states[0] == "pending_review"
    assert states[-1] == "released" and events[-1].terminal
    with api.client.stream("GET", f"/v1/jobs/{job}/events", headers=api.as_role("operator")) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert "event: state" in text and '"state":"released"' in text


def test_events_of_an_unknown_job_are_a_404_not_an_empty_stream(api: Api) -> None:
    r = api.client.get("/v1/jobs/J-nope/events", headers=api.as_role("operator"))
    assert r.status_code == 404 and r.json()["code"] == "enclave.job_not_found"


def test_wait_returns_once_the_job_settles(api: Api) -> None:
    job = pending_review_job(api)
    view = sdk(api).wait(job, timeout_s=10)
    assert view.state == "pending_review"


def test_the_result_downloads_only_once_released_in_three_formats(api: Api) -> None:
    job = pending_review_job(api)
    r = api.client.get(f"/v1/jobs/{job}/result", headers=api.as_role("operator"))
    assert r.status_code == 409 and r.json()["code"] == "service.not_released"
    sdk(api, "rev.zhao").approve(job, NO_RISK, "ok")

    table = sdk(api).result(job)
    assert isinstance(table, pa.Table) and table.column_names == ["district", "n"]
    assert table.num_rows == 8

    r = api.client.get(f"/v1/jobs/{job}/result?format=csv", headers=api.as_role("operator"))
    assert r.headers["content-type"].startswith("text/csv")
    assert pacsv.read_csv(io.BytesIO(r.content)).num_rows == 8

    r = api.client.get(f"/v1/jobs/{job}/result?format=json", headers=api.as_role("operator"))
    body = json.loads(r.content)
    assert body["columns"] == ["district", "n"] and len(body["rows"]) == 8

    other = api.client.get(f"/v1/jobs/{job}/result", headers=api.as_role("authority"))
    assert other.status_code == 200  # the authority may see every job


def test_wait_on_submit_holds_the_answer_and_says_202_while_the_job_is_on_its_way(
    world: Api,
) -> None:
    # Nothing runs the queue here: the job stays authorized, so the wait runs out.
    body = {"scenario_id": SCENARIO, "code": DP_SQL, "epsilon": 0.1}
    t0 = time.monotonic()
    r = world.client.post("/v1/jobs?wait=0.6", headers=world.as_role("operator"), json=body)
    took = time.monotonic() - t0
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "authorized"
    assert 0.5 <= took < 5


def test_wait_on_a_job_answers_200_as_soon_as_a_change_here_settles_it(world: Api) -> None:
    job = sdk(world).submit_sql(SCENARIO, DP_SQL, epsilon=0.1)

    def cancel_soon() -> None:
        time.sleep(0.5)
        sdk(world, "auth.chen").cancel(job)

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    t0 = time.monotonic()
    r = world.client.get(f"/v1/jobs/{job.id}?wait=30", headers=world.as_role("operator"))
    took = time.monotonic() - t0
    canceller.join()  # its own request may still be finishing; the client closes after
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled"
    assert took < 5  # woken by the commit, not by the 30 s


def test_wait_sees_a_change_another_process_committed(world: Api) -> None:
    """A change made through another engine (another process: the CLI, a second server)
    wakes nobody here; the wait's fallback poll still finds it."""
    from enclave.db import make_engine
    from enclave.jobstore import transition

    job = sdk(world).submit_sql(SCENARIO, DP_SQL, epsilon=0.1)
    other = make_engine(world.domain.settings.resolved_database_url)

    def cancel_elsewhere() -> None:
        time.sleep(0.3)
        with other.begin() as conn:
            transition(conn, world.domain.audit, job.id, "cancelled", actor="auth.chen")

    canceller = threading.Thread(target=cancel_elsewhere)
    canceller.start()
    view = sdk(world).wait(job, timeout_s=20)
    canceller.join()
    other.dispose()
    assert view.state == "cancelled"


def test_a_wait_beyond_the_limit_is_refused_with_the_limit(world: Api) -> None:
    body = {"scenario_id": SCENARIO, "code": DP_SQL, "epsilon": 0.1}
    r = world.client.post("/v1/jobs?wait=61", headers=world.as_role("operator"), json=body)
    assert r.status_code == 422 and "60" in r.text
    assert sdk(world).jobs() == []  # refused before anything was queued


def test_the_sdk_wait_times_out_with_the_jobs_state(world: Api) -> None:
    job = sdk(world).submit_sql(SCENARIO, DP_SQL, epsilon=0.1)
    with pytest.raises(TimeoutError, match="authorized"):
        sdk(world).wait(job, timeout_s=0.8)


def test_query_says_a_job_still_on_its_way_is_not_released_and_names_it(world: Api) -> None:
    from shuyu.errors import NotReleased

    with pytest.raises(NotReleased, match="authorized") as caught:
        sdk(world).query(SCENARIO, DP_SQL, epsilon=0.1, timeout_s=0.5)
    job = caught.value.job
    assert job.state == "authorized" and "still running" in caught.value.hint
    assert sdk(world).job(job.id).state == "authorized"  # the job itself goes on


def test_a_submit_that_accepts_arrow_gets_json_while_nothing_is_released(world: Api) -> None:
    r = world.client.post(
        "/v1/jobs?wait=0.2",
        headers={**world.as_role("operator"), "Accept": "application/vnd.apache.arrow.stream"},
        json={"scenario_id": SCENARIO, "code": DP_SQL, "epsilon": 0.1},
    )
    assert r.status_code == 202 and r.headers["content-type"].startswith("application/json")
    assert r.json()["state"] == "authorized"


def test_arrow_is_wanted_only_when_accept_lists_it_above_quality_zero() -> None:
    from starlette.requests import Request

    from shuyu.api.routers.jobs import _wants_arrow

    def accept(value: str) -> bool:
        return _wants_arrow(Request({"type": "http", "headers": [(b"accept", value.encode())]}))

    arrow = "application/vnd.apache.arrow.stream"
    assert accept(arrow)
    assert accept(f"{arrow}, application/json;q=0.5")
    assert accept(f"application/json, {arrow};q=0.9")
    assert not accept("application/json")
    assert not accept(f"{arrow};q=0, application/json")
    assert not accept(f"{arrow}x")
