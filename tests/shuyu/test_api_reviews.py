"""Review and release over HTTP and through the SDK: queue, show, decide, download."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from shuyu.client import Client
from shuyu.errors import RemoteConflict, RemoteInvalid
from tests.shuyu.api_support import Api, pending_review_job

NO_RISK = {
    "beyond_scope": False,
    "direct_exposure": False,
    "model_attack": False,
    "other_risk": False,
}


def sdk(api: Api, user_id: str) -> Client:
    return Client("http://testserver", api.tokens[user_id], http=api.client)


def test_a_reviewer_sees_the_output_with_its_job_report_and_aggregates(api: Api) -> None:
    job = pending_review_job(api)
    queue = sdk(api, "rev.zhao").reviews()
    assert [(q.job_id, q.required, q.approvals) for q in queue] == [(job, 1, 0)]
    detail = sdk(api, "rev.zhao").review(job)
    assert detail.job["code"].startswith("SELECT district")
    assert detail.scenario is not None and "social-assistance" in detail.scenario["purpose"]
    assert detail.report is not None and detail.report["verdict"] == "needs_review"
    (out,) = detail.outputs
    assert out.columns == ["district", "n"] and out.total_rows == 8
    assert set(detail.questions) == set(NO_RISK)


def test_approve_releases_and_the_release_downloads_as_a_signed_zip(
    api: Api, tmp_path: Path
) -> None:
    job = pending_review_job(api)
    decision = sdk(api, "rev.zhao").approve(job, NO_RISK, "aggregates only, cells large")
    assert decision.state == "released" and decision.release_id
    (release,) = sdk(api, "op.wang").releases()
    assert release.id == decision.release_id and release.job_id == job
    assert release.product is not None and release.product["sources"][0]["name"] == "people"

    path = sdk(api, "aud.qian").download_release(release.id, tmp_path, purpose="audit check")
    names = zipfile.ZipFile(io.BytesIO(path.read_bytes())).namelist()
    assert f"{release.id}/manifest.json" in names and f"{release.id}/manifest.sig" in names

    manifest = api.client.get(
        f"/v1/releases/{release.id}/manifest", headers=api.as_role("operator")
    ).json()
    assert manifest["public_key"] == release.public_key
    entries = api.client.get("/v1/audit/entries?limit=1000", headers=api.as_role("auditor")).json()
    downloads = [e for e in entries if e["action"] == "release.download"]
    assert downloads[-1]["actor"] == "aud.qian"
    assert downloads[-1]["details"] == {"purpose": "audit check"}


def test_an_answer_flagging_a_risk_cannot_approve(api: Api) -> None:
    job = pending_review_job(api)
    with pytest.raises(RemoteInvalid) as exc:
        sdk(api, "rev.zhao").approve(job, {**NO_RISK, "direct_exposure": True}, "hmm")
    assert exc.value.code == "egress.review_risk"


def test_reject_deletes_the_output_and_a_second_decision_conflicts(api: Api) -> None:
    job = pending_review_job(api)
    out = sdk(api, "rev.zhao").reject(job, {**NO_RISK, "direct_exposure": True}, "too fine")
    assert out.state == "rejected"
    with pytest.raises(RemoteConflict) as exc:
        sdk(api, "rev.sun").approve(job, NO_RISK, "late")
    assert exc.value.code == "egress.review_state"
    assert sdk(api, "op.wang").releases() == []


def test_high_grade_outputs_need_two_different_reviewers(api: Api) -> None:
    job = pending_review_job(api, grade="L4")
    first = sdk(api, "rev.zhao").approve(job, NO_RISK, "ok")
    assert (first.state, first.approvals, first.required) == ("pending_review", 1, 2)
    with pytest.raises(RemoteConflict):
        sdk(api, "rev.zhao").approve(job, NO_RISK, "again")
    second = sdk(api, "rev.sun").approve(job, NO_RISK, "ok too")
    assert second.state == "released"


def test_an_operator_downloads_only_its_own_organisations_release(api: Api) -> None:
    job = pending_review_job(api)
    release_id = sdk(api, "rev.zhao").approve(job, NO_RISK, "ok").release_id
    # The factory's scenario belongs to ORG-OP-1; op.wang is of OP-ACME.
    r = api.client.get(f"/v1/releases/{release_id}/archive", headers=api.as_role("operator"))
    assert r.status_code == 403 and r.json()["code"] == "api.not_owner"


def test_a_withdrawn_product_is_no_longer_handed_out(api: Api) -> None:
    job = pending_review_job(api)
    release_id = sdk(api, "rev.zhao").approve(job, NO_RISK, "ok").release_id
    r = api.client.post(
        f"/v1/products/{release_id}/withdraw",
        headers=api.as_role("authority"),
        json={"reason": "superseded"},
    )
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
    r = api.client.get(f"/v1/releases/{release_id}/archive", headers=api.as_role("auditor"))
    assert r.status_code == 409 and r.json()["code"] == "egress.release_withdrawn"
