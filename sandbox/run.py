"""Run one authorized job end to end: release its keys, then run it in a sandbox.

This is what the orchestrator calls::

    output = run_sandboxed(
        domain.engine, key_release, executor,
        job_id=job.id, kind="sql", code=rewritten_sql,
        tables={"residents": TableRequest(ds.id, ds.path, ("age", "district"))},
        policy_hash=job.policy_hash, authorized={ds.id: decision.scope[...]},
        operator=job.submitter, scenario_id=job.scenario_id,
    )
    output.result            # a pyarrow.Table (SQL); .tables/.metrics/.models (Python)

Keys are released for the image the executor runs, checked against the image this domain
records (``shuyu image build``); they go into the sandbox's stdin and nowhere else.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from enclave.key_release import KeyReleaseService, ReleaseClaims
from sandbox.executor import Executor, run_job
from sandbox.image_record import current_image_id
from sandbox.job import JobKind, JobOutput, JobSpec, TableGrant

__all__ = ["TableRequest", "run_sandboxed"]


@dataclass(frozen=True)
class TableRequest:
    """A table the job reads: which dataset version, and which of its columns."""

    dataset_id: str
    path: str  # the dataset version's folder under the store: "<dataset id>/v<version>"
    columns: tuple[str, ...]


def run_sandboxed(
    engine: Engine,
    key_release: KeyReleaseService,
    executor: Executor,
    *,
    job_id: str,
    kind: JobKind,
    code: str,
    tables: Mapping[str, TableRequest],
    policy_hash: str,
    authorized: Mapping[str, Collection[str]],
    image_id: str,
    operator: str = "",
    scenario_id: str = "",
    holdout: Mapping[str, tuple[float, int]] | None = None,
    actor: str = "sandbox",
) -> JobOutput:
    """Release the job's keys (or :class:`KeyReleaseRefused`), run it, return its output.

    ``image_id`` is the image the executor runs (its claim); the key service compares it
    with the image recorded for this domain. Raises the executor's errors
    (:class:`LimitExceeded`, :class:`JobFailed`, :class:`OutputRejected`, …) unchanged.
    """
    columns: dict[str, set[str]] = {}
    for req in tables.values():
        columns.setdefault(req.dataset_id, set()).update(req.columns)
    with engine.connect() as conn:
        trusted = current_image_id(conn)
        key_ids = key_release.required_key_ids(conn, columns)
    keys = key_release.release(
        engine,
        ReleaseClaims(
            job_id=job_id,
            image_id=image_id,
            policy_hash=policy_hash,
            columns={k: sorted(v) for k, v in columns.items()},
            key_ids=key_ids,
        ),
        trusted_image_id=trusted,
        authorized=authorized,
        actor=actor,
    )
    spec = JobSpec(
        job_id=job_id,
        kind=kind,
        code=code,
        tables={name: TableGrant(r.path, r.columns) for name, r in tables.items()},
        keys=keys,
        operator=operator,
        scenario_id=scenario_id,
        holdout=dict(holdout or {}),
    )
    del keys
    return run_job(executor, spec)
