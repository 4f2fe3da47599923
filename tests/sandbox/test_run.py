"""End to end on the host side: an imported dataset, an authorized job, key release, the
agent (fake executor) — and no sandbox start when the keys are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from enclave.catalog import parse_meta
from enclave.errors import KeyReleaseRefused
from enclave.jobstore import create_job, transition
from enclave.key_release import KeyReleaseService
from enclave.store import DatasetStore
from sandbox.fake_executor import FakeExecutor
from sandbox.image import BuiltImage
from sandbox.image_record import record_image
from sandbox.limits import SandboxLimits
from sandbox.run import TableRequest, run_sandboxed
from shuyu.context import Domain
from shuyu.synthetic import demo_meta, write_demo_data

POLICY = "f" * 64


@pytest.fixture
def world(domain: Domain, tmp_path: Path) -> dict[str, Any]:
    write_demo_data(tmp_path, 2000, seed=3)
    store = DatasetStore(domain.engine, domain.keys, domain.audit, domain.settings.store_dir)
    ds = store.import_dataset(
        tmp_path / "residents.parquet", name="residents", meta=parse_meta(demo_meta()), actor="a"
    )
    ex = FakeExecutor(SandboxLimits(timeout_s=60), domain.settings.store_dir)
    with domain.engine.begin() as conn:
        record_image(conn, domain.audit, BuiltImage(ex.image_id, "h", "offline", "t", False), "t")
        job = create_job(
            conn, domain.audit, scenario_id="S-1", submitter="op", kind="sql",
            output_mode="dp_aggregate", code="-", params={}, policy_hash=POLICY,
        )  # fmt: skip
        transition(conn, domain.audit, job.id, "authorized", actor="policy")
    plain = pq.read_table(tmp_path / "residents.parquet")
    return {"ds": ds, "job": job.id, "ex": ex, "plain": plain}


def _run(domain: Domain, w: dict[str, Any], **over: Any) -> Any:
    ds = w["ds"]
    args: dict[str, Any] = {
        "job_id": w["job"],
        "kind": "sql",
        "code": "SELECT district, count(*) AS n FROM residents GROUP BY 1 ORDER BY 1",
        "tables": {"residents": TableRequest(ds.id, ds.path, ("district",))},
        "policy_hash": POLICY,
        "authorized": {ds.id: ["district", "age"]},
        "image_id": w["ex"].image_id,
        "operator": "op",
        "scenario_id": "S-1",
    }
    args.update(over)
    service = KeyReleaseService(domain.keys, domain.audit)
    return run_sandboxed(domain.engine, service, w["ex"], **args)


def test_a_sql_job_runs_on_the_encrypted_store(domain: Domain, world: dict[str, Any]) -> None:
    out = _run(domain, world)
    counts = world["plain"].group_by("district").aggregate([("district", "count")])
    expected = dict(
        zip(counts["district"].to_pylist(), counts["district_count"].to_pylist(), strict=True)
    )
    assert (
        dict(zip(out.result["district"].to_pylist(), out.result["n"].to_pylist(), strict=True))
        == expected
    )
    assert pc.sum(out.result["n"]).as_py() == 2000


def test_a_refused_release_never_starts_a_sandbox(domain: Domain, world: dict[str, Any]) -> None:
    with pytest.raises(KeyReleaseRefused) as err:
        _run(domain, world, image_id="sha256:" + "9" * 64)
    assert err.value.details == {"reason": "image_mismatch"}
    ds = world["ds"]
    with pytest.raises(KeyReleaseRefused) as err2:
        _run(domain, world, tables={"residents": TableRequest(ds.id, ds.path, ("name",))})
    assert err2.value.details == {"reason": "scope_exceeded"}
    assert world["ex"].started_jobs == []


@pytest.mark.docker
def test_the_same_job_runs_in_a_real_sandbox_on_the_private_store(
    domain: Domain, world: dict[str, Any], docker_client: Any, sandbox_image_id: str
) -> None:
    from sandbox.docker_executor import DockerExecutor

    store = domain.settings.store_dir
    assert store.stat().st_mode & 0o007 == 0  # nothing opened to others on the host
    ex = DockerExecutor(docker_client, sandbox_image_id, SandboxLimits(timeout_s=60), store)
    with domain.engine.begin() as conn:
        record_image(
            conn, domain.audit, BuiltImage(sandbox_image_id, "h", "offline", "t", False), "t"
        )
    service = KeyReleaseService(domain.keys, domain.audit)
    ds = world["ds"]
    out = run_sandboxed(
        domain.engine, service, ex, job_id=world["job"], kind="sql",
        code="SELECT count(*) AS n, avg(age) AS a FROM residents",
        tables={"residents": TableRequest(ds.id, ds.path, ("age",))},
        policy_hash=POLICY, authorized={ds.id: ["age"]}, image_id=ex.image_id,
    )  # fmt: skip
    assert out.result.to_pylist()[0]["n"] == 2000
    assert store.stat().st_mode & 0o007 == 0
