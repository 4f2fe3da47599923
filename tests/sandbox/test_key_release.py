"""Key release: keys only for an authorized job, the recorded image, its policy hash and
exactly the keys of the columns it may read; every refusal recorded and audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from enclave.catalog import parse_meta
from enclave.errors import KeyReleaseRefused
from enclave.jobstore import create_job, transition
from enclave.key_release import KeyReleaseService, ReleaseClaims, key_releases
from enclave.store import DatasetStore
from enclave.tables import audit_log
from shuyu.context import Domain
from shuyu.synthetic import demo_meta, write_demo_data

IMAGE = "sha256:" + "ab" * 32
POLICY = "p" * 64


@pytest.fixture
def setup(domain: Domain, tmp_path: Path) -> dict[str, Any]:
    write_demo_data(tmp_path, 500, seed=1)
    store = DatasetStore(domain.engine, domain.keys, domain.audit, domain.settings.store_dir)
    rec = store.import_dataset(
        tmp_path / "residents.parquet", name="residents", meta=parse_meta(demo_meta()), actor="a"
    )
    with domain.engine.begin() as conn:
        job = create_job(
            conn, domain.audit, scenario_id="S-1", submitter="op", kind="sql",
            output_mode="dp_aggregate", code="SELECT 1", params={}, policy_hash=POLICY,
        )  # fmt: skip
        transition(conn, domain.audit, job.id, "authorized", actor="policy")
    return {"ds": rec.id, "job": job.id, "service": KeyReleaseService(domain.keys, domain.audit)}


def _claims(s: dict[str, Any], **over: Any) -> ReleaseClaims:
    ds = s["ds"]
    base: dict[str, Any] = {
        "job_id": s["job"],
        "image_id": IMAGE,
        "policy_hash": POLICY,
        "columns": {ds: ["age", "district"]},  # both grade L2
        "key_ids": frozenset({f"{ds}.footer", f"{ds}.L2"}),
    }
    return ReleaseClaims(**{**base, **over})


def _release(domain: Domain, s: dict[str, Any], claims: ReleaseClaims) -> dict[str, bytes]:
    authorized = {s["ds"]: ["age", "district", "sex", "income"]}
    return s["service"].release(  # type: ignore[no-any-return]
        domain.engine, claims, trusted_image_id=IMAGE, authorized=authorized
    )


def test_keys_are_released_for_exactly_the_claimed_columns(
    domain: Domain, setup: dict[str, Any]
) -> None:
    keys = _release(domain, setup, _claims(setup))
    assert sorted(keys) == sorted([f"{setup['ds']}.footer", f"{setup['ds']}.L2"])
    assert all(len(k) == 32 for k in keys.values())
    with domain.engine.connect() as conn:
        row = conn.execute(sa.select(key_releases)).one()
        audit = conn.execute(sa.select(audit_log).where(audit_log.c.action == "key.release")).one()
    assert (row.result, row.image_id, row.policy_hash) == ("released", IMAGE, POLICY)
    for k in keys.values():  # no key material in the record or the audit log
        assert k.hex() not in json.dumps(row.key_ids) + audit.details


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"image_id": "sha256:" + "cd" * 32}, "image_mismatch"),
        ({"policy_hash": "q" * 64}, "policy_mismatch"),
        ({"job_id": "J-nope"}, "job_unknown"),
        ("more_keys", "key_ids_mismatch"),
        ("fewer_keys", "key_ids_mismatch"),
        ("out_of_scope", "scope_exceeded"),
        ("unknown_column", "scope_exceeded"),
    ],
)
def test_any_mismatch_is_refused_recorded_and_audited(
    domain: Domain, setup: dict[str, Any], override: Any, reason: str
) -> None:
    ds = setup["ds"]
    extra: dict[str, Any] = (
        {
            "more_keys": {"key_ids": frozenset({f"{ds}.footer", f"{ds}.L2", f"{ds}.L3"})},
            "fewer_keys": {"key_ids": frozenset({f"{ds}.L2"})},
            "out_of_scope": {
                "columns": {ds: ["age", "name"]},
                "key_ids": frozenset({f"{ds}.footer", f"{ds}.L2", f"{ds}.L4"}),
            },
            "unknown_column": {"columns": {ds: ["nope"]}},
        }.get(override, override)
        if isinstance(override, str)
        else override
    )
    with pytest.raises(KeyReleaseRefused) as err:
        _release(domain, setup, _claims(setup, **extra))
    assert err.value.code == "enclave.key_release_refused"
    assert err.value.details == {"reason": reason}
    with domain.engine.connect() as conn:
        row = conn.execute(sa.select(key_releases)).one()
        audit = conn.execute(sa.select(audit_log).where(audit_log.c.action == "key.release")).one()
    assert (row.result, row.reason) == ("refused", reason)
    assert audit.result == "denied"


def test_a_job_that_is_no_longer_authorized_gets_no_keys(
    domain: Domain, setup: dict[str, Any]
) -> None:
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, setup["job"], "cancelled", actor="op")
    with pytest.raises(KeyReleaseRefused) as err:
        _release(domain, setup, _claims(setup))
    assert err.value.details == {"reason": "job_state"}


def test_a_deleted_dataset_gets_no_keys(domain: Domain, setup: dict[str, Any]) -> None:
    from enclave.tables import datasets

    with domain.engine.begin() as conn:
        conn.execute(datasets.update().values(status="deleted"))
    with pytest.raises(KeyReleaseRefused) as err:
        _release(domain, setup, _claims(setup))
    assert err.value.details == {"reason": "dataset_not_active"}
