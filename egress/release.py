"""Release: an approved output leaves as a signed, self-verifying folder.

::

    R-<id>/
      data/<output>.parquet|.csv|.json   the result, in each format
      data/<model>.skops|.card.json|.card.md   a model output: skops file and model card
      report.json                        the egress report (findings never hold values)
      manifest.json                      what this is, where it came from, every file's SHA-256
      manifest.sig                       Ed25519 signature of manifest.json's exact bytes (hex)
      public_key.hex                     the domain's public key

The manifest names the job and its code hash, the scenario, each source dataset with its
version, provider and acquisition date (R5.4), the checks and their results, the DP cost,
and the reviewers. :func:`verify_release` checks a downloaded folder **offline** — no
database, no network: the signature over the manifest, then every listed file's size and
hash, then that no file was added. One changed byte anywhere fails it. A folder signed
with a different key is caught when the verifier pins the domain's key
(``--public-key``); the bundled key only proves the folder is self-consistent.

Only ``approved`` jobs are released (``auto_released`` DP outputs pass from ``gated``); a
rejected job has no held outputs and no release, so it can never be downloaded. Releasing
does not touch the privacy budget: it was charged when the answer was computed, so an
approval after the budget ran out still releases what was paid for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from egress.errors import ReleaseError
from egress.gate_tables import egress_releases, egress_reviews
from egress.registry import record_download, register_product, release_path
from enclave.jobstore import get_job, transition
from enclave.scenarios import DatasetRow, dataset_rows
from enclave.signing import verify_signature

if TYPE_CHECKING:
    from egress.checks import OutputSpec
    from egress.gate import Gate
    from egress.report import EgressReport
    from enclave.jobstore import Job
    from policies.scenario import Scenario

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PUBLIC_KEY",
    "SIGNATURE",
    "Held",
    "Packaged",
    "Release",
    "ReleaseVerification",
    "download_release",
    "package",
    "register",
    "release_job",
    "sources_of",
    "verify_release",
]

FORMAT = "shuyu-release/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "public_key.hex"
_UNLISTED = frozenset({MANIFEST, SIGNATURE, PUBLIC_KEY})
_FORMATS = ("parquet", "csv", "json")
_INSERT_RELEASE = egress_releases.insert()  # built once: every release runs it


@dataclass(frozen=True)
class Release:
    release_id: str
    job_id: str
    path: Path
    manifest_sha256: str
    auto: bool


@dataclass(frozen=True)
class Held:
    """What the gate's transaction has just kept for a job, as it committed: handed to the
    job's auto-release so the release does not read back and decrypt what is in memory."""

    job: Job
    outputs: Sequence[OutputSpec]
    report: EgressReport
    report_sha256: str
    required_reviewers: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_table(table: pa.Table, base: Path, fmt: str) -> Path:
    path = base.with_suffix(f".{fmt}")
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        body = {
            "columns": table.column_names,
            "rows": [list(r.values()) for r in table.to_pylist()],
        }
        path.write_text(
            json.dumps(body, ensure_ascii=False, default=str, separators=(",", ":")) + "\n",
            encoding="utf-8",
        )
    return path


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "output"


def _existing(conn: sa.Connection, job_id: str) -> Release | None:
    row = conn.execute(sa.select(egress_releases).where(egress_releases.c.job_id == job_id)).first()
    if row is None:
        return None
    return Release(row.id, job_id, Path(row.path), row.manifest_sha256, bool(row.auto))


def release_job(
    gate: Gate,
    job_id: str,
    *,
    actor: str,
    auto: bool = False,
    formats: tuple[str, ...] = _FORMATS,
    held: Held | None = None,
) -> Release:
    """Package, sign, register and release an approved job's outputs; idempotent.

    ``held`` is what the gate kept for this job in the transaction that just committed
    (the gate's auto-release); without it the job, outputs and report are read back.
    """
    with gate.engine.connect() as conn:
        done = _existing(conn, job_id)
        if done is not None:
            return done
        job = held.job if held is not None else get_job(conn, job_id)
        if not auto:
            gate.check_actor(conn, actor, "release.create")
        allowed = "gated" if auto else "approved"
        if job.state != allowed:
            raise ReleaseError(
                f"job {job_id} is {job.state}; only "
                + ("clean DP outputs are auto-released" if auto else "approved jobs are released"),
                code="egress.not_approved",
                kind="conflict",
                hint="a job is released once its reviewers approve it; rejected jobs never are",
            )
        if held is not None:
            outputs, report = list(held.outputs), held.report
            report_sha256, required_reviewers = held.report_sha256, held.required_reviewers
        else:
            outputs = gate.load_outputs(conn, job_id)
            stored = gate.stored_report(conn, job_id)
            if stored is None:
                raise _nothing_to_release(job_id)
            report, report_row = stored
            report_sha256 = report_row.report_sha256
            required_reviewers = int(report_row.required_reviewers)
        if not outputs:
            raise _nothing_to_release(job_id)
        scenario = gate.scenario(conn, job.scenario_id)
        sources = _sources(conn, report.datasets)
        reviews = [
            {"user": r.reviewer, "decision": r.action, "at": r.created_at.isoformat()}
            for r in conn.execute(
                sa.select(egress_reviews)
                .where(
                    egress_reviews.c.job_id == job_id,
                    egress_reviews.c.action.in_(["approve"]),
                )
                .order_by(egress_reviews.c.created_at, egress_reviews.c.id)
            )
        ]

    pkg = package(
        gate,
        job,
        outputs,
        report,
        report_sha256,
        0 if auto else required_reviewers,
        scenario=scenario,
        sources=sources,
        reviews=reviews,
        actor=actor,
        auto=auto,
        formats=formats,
    )
    try:
        with gate.engine.begin() as conn:
            rel = register(
                conn,
                gate,
                pkg,
                job,
                scenario=scenario,
                sources=sources,
                actor=actor,
                formats=formats,
            )
    except BaseException:
        shutil.rmtree(pkg.root, ignore_errors=True)
        raise
    return rel


@dataclass(frozen=True)
class Packaged:
    """A release folder written and signed under its final name, not yet registered: until
    :func:`register` commits, no row points at it (the caller removes it on failure)."""

    release_id: str
    root: Path
    manifest_sha256: str
    signature: str
    files: int
    auto: bool


def package(
    gate: Gate,
    job: Job,
    outputs: Sequence[OutputSpec],
    report: EgressReport,
    report_sha256: str,
    required_reviewers: int,
    *,
    scenario: Scenario | None,
    sources: list[dict[str, Any]],
    reviews: list[dict[str, Any]],
    actor: str,
    auto: bool,
    formats: tuple[str, ...] = _FORMATS,
    report_json: str | None = None,
) -> Packaged:
    """Write the release folder of ``job``'s outputs: data files, report, signed manifest.

    ``report_json`` is ``report.to_json()`` when the caller has it already."""
    release_id = f"R-{uuid.uuid4().hex[:16]}"
    root = gate.releases_dir / release_id
    root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = gate.releases_dir / f".tmp-{release_id}"
    (tmp / "data").mkdir(parents=True)
    try:
        files: list[dict[str, Any]] = []
        for o in outputs:
            base = tmp / "data" / _safe_name(o.name)
            if o.mode == "model":  # the skops file and its card (egress.models.output)
                from egress.models.output import write_model_files

                written = write_model_files(o.table, base)
            else:
                written = [(_write_table(o.table, base, fmt), fmt) for fmt in formats]
            for p, fmt in written:
                files.append(
                    {
                        "path": p.relative_to(tmp).as_posix(),
                        "output": o.name,
                        "format": fmt,
                        "bytes": p.stat().st_size,
                        "sha256": _sha256(p),
                    }
                )
        report_path = tmp / "report.json"
        report_path.write_text((report_json or report.to_json()) + "\n", encoding="utf-8")
        files.append(
            {
                "path": "report.json",
                "output": None,
                "format": "json",
                "bytes": report_path.stat().st_size,
                "sha256": _sha256(report_path),
            }
        )
        params = job.params
        dp_cost = None
        if job.output_mode == "dp_aggregate" or "epsilon" in params:
            dp_cost = {
                "epsilon": params.get("epsilon_spent", params.get("epsilon")),
                "delta": params.get("delta_spent", params.get("delta", 0.0)),
            }
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "release_id": release_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "released_by": actor,
            "job": {
                "id": job.id,
                "kind": job.kind,
                "output_mode": job.output_mode,
                "code_sha256": job.code_sha256,
                "submitter": job.submitter,
                "submitted_at": job.created_at.isoformat(timespec="seconds"),
                "policy_hash": job.policy_hash,
            },
            "scenario": {
                "id": job.scenario_id,
                "title": scenario.title if scenario else "",
                "purpose": scenario.purpose if scenario else "",
                "operator_org": scenario.operator_org if scenario else "",
                "use_class": scenario.use_class if scenario else "",
            },
            "datasets": sources,
            "checks": {
                "verdict": report.verdict,
                "report_sha256": report_sha256,
                "counts": report.counts(),
                "thresholds": report.thresholds.to_dict(),
                "outputs": [
                    {
                        "name": o["name"],
                        "verdict": o["verdict"],
                        "checks": [{"name": c["name"], "result": c["result"]} for c in o["checks"]],
                    }
                    for o in report.to_dict()["outputs"]
                ],
            },
            "dp_cost": dp_cost,
            "review": {
                "auto_released": auto,
                "required_reviewers": required_reviewers,
                "reviewers": reviews,
            },
            "files": files,
            "public_key": gate.signer.public_key_hex,
        }
        manifest_bytes = (
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode("utf-8")
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        signature = gate.signer.sign(manifest_bytes)
        (tmp / SIGNATURE).write_text(signature + "\n", encoding="ascii")
        (tmp / PUBLIC_KEY).write_text(gate.signer.public_key_hex + "\n", encoding="ascii")
        manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Packaged(release_id, root, manifest_sha, signature, len(files), auto)


def register(
    conn: sa.Connection,
    gate: Gate,
    pkg: Packaged,
    job: Job,
    *,
    scenario: Scenario | None,
    sources: list[dict[str, Any]],
    actor: str,
    formats: tuple[str, ...] = _FORMATS,
    cells_held: bool = True,
) -> Release:
    """In the caller's transaction: the release and product rows, the job's move to
    (auto_)released, the audit entry and a signed checkpoint. ``cells_held=False`` says the
    job recorded no cells in the differencing history (DP outputs), so none are marked."""
    params = job.params
    auto = pkg.auto
    conn.execute(
        _INSERT_RELEASE,
        {
            "id": pkg.release_id,
            "job_id": job.id,
            "scenario_id": job.scenario_id,
            "path": str(pkg.root),
            "manifest_sha256": pkg.manifest_sha256,
            "signature": pkg.signature,
            "public_key": gate.signer.public_key_hex,
            "released_by": actor,
            "auto": auto,
            "created_at": datetime.now(UTC),
        },
    )
    register_product(
        conn,
        release_id=pkg.release_id,
        name=str(params.get("product_name") or f"{job.scenario_id} {job.id}"),
        summary=str(
            params.get("product_summary")
            or (scenario.title if scenario and scenario.title else "")
            or f"output of job {job.id} under scenario {job.scenario_id}"
        ),
        formats=formats,
        scenario_id=job.scenario_id,
        operator_org=scenario.operator_org if scenario else "",
        sources=sources,
    )
    if cells_held:
        gate.history.mark_released(conn, job.id)
    transition(
        conn,
        gate.audit,
        job.id,
        "auto_released" if auto else "released",
        actor=actor,
        details={"release": pkg.release_id},
    )
    gate.audit.record(
        conn,
        actor=actor,
        action="release.create",
        target=pkg.release_id,
        details={
            "job": job.id,
            "manifest_sha256": pkg.manifest_sha256,
            "files": pkg.files,
            "auto": auto,
        },
    )
    gate.audit.checkpoint(conn)
    return Release(pkg.release_id, job.id, pkg.root, pkg.manifest_sha256, auto)


def _nothing_to_release(job_id: str) -> ReleaseError:
    return ReleaseError(
        f"job {job_id} has no held outputs to release",
        code="egress.nothing_to_release",
        kind="conflict",
        hint="only outputs that passed the gate are held for release",
    )


def _sources(conn: sa.Connection, names: list[str]) -> list[dict[str, Any]]:
    return sources_of(dataset_rows(conn, names), names)


def sources_of(rows: Mapping[str, DatasetRow], names: Sequence[str]) -> list[dict[str, Any]]:
    """Each source dataset: version, provider, acquisition date, time coverage (R5.4)."""
    out: list[dict[str, Any]] = []
    for n in names:
        r = rows.get(n)
        if r is None:
            out.append({"name": n, "id": None, "version": None})
            continue
        meta = r.meta
        acquired = r.created_at
        out.append(
            {
                "name": n,
                "id": r.id,
                "version": r.version,
                "grade": r.grade,
                "provider": meta.get("provider"),
                "acquired_at": acquired.date().isoformat()
                if isinstance(acquired, datetime)
                else (str(acquired)[:10] if acquired else None),
                "time_coverage": meta.get("time_coverage"),
            }
        )
    return out


@dataclass
class ReleaseVerification:
    """What :func:`verify_release` found; ``ok`` only when ``problems`` is empty."""

    path: Path
    release_id: str | None = None
    public_key: str | None = None
    key_pinned: bool = False
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_release(path: Path, public_key: str | None = None) -> ReleaseVerification:
    """Check a release folder offline; every problem is listed, none stops the others."""
    result = ReleaseVerification(path=path, key_pinned=public_key is not None)
    try:
        manifest_bytes = (path / MANIFEST).read_bytes()
    except OSError:
        result.problems.append(f"{MANIFEST} is missing")
        return result
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        result.problems.append(f"{MANIFEST} is not valid JSON")
        manifest = {}
    if not isinstance(manifest, dict):
        result.problems.append(f"{MANIFEST} is not a JSON object")
        manifest = {}
    result.release_id = manifest.get("release_id")
    bundled = None
    try:
        bundled = (path / PUBLIC_KEY).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        if public_key is None:
            result.problems.append(f"{PUBLIC_KEY} is missing and no --public-key was given")
    key = (public_key or bundled or "").strip().lower()
    result.public_key = key or None
    if public_key is not None and bundled is not None and bundled.lower() != key:
        result.problems.append(f"{PUBLIC_KEY} is not the domain key you gave")
    if key and manifest.get("public_key", "").lower() != key:
        result.problems.append("the manifest names a different public key")
    try:
        signature = (path / SIGNATURE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        result.problems.append(f"{SIGNATURE} is missing or unreadable")
        signature = ""
    if signature and key and not verify_signature(key, manifest_bytes, signature):
        result.problems.append(f"{MANIFEST} does not match its signature")
    listed: set[str] = set()
    for entry in manifest.get("files", []) if isinstance(manifest.get("files"), list) else []:
        rel = str(entry.get("path", ""))
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts:
            result.problems.append(f"the manifest lists an unsafe path {rel!r}")
            continue
        listed.add(rel)
        p = path / pure
        if not p.is_file():
            result.problems.append(f"{rel} is missing")
            continue
        result.files_checked += 1
        if p.stat().st_size != entry.get("bytes"):
            result.problems.append(f"{rel} has a different size than the manifest says")
        if _sha256(p) != entry.get("sha256"):
            result.problems.append(f"{rel} does not match its SHA-256 in the manifest")
    for p in sorted(path.rglob("*")):
        if p.is_file():
            rel = p.relative_to(path).as_posix()
            if rel not in listed and rel not in _UNLISTED:
                result.problems.append(f"{rel} is not listed in the manifest")
    return result


def download_release(
    gate: Gate, release_id: str, user: str, dest: Path, *, purpose: str = ""
) -> Path:
    """Hand a released product to ``user``: record who received it (R4.2), copy the folder.

    The record and its audit entry commit before the copy is made, so no copy exists
    without a record of who took it.
    """
    with gate.engine.begin() as conn:
        gate.check_actor(conn, user, "release.download")
        record_download(conn, release_id, user, purpose=purpose, audit=gate.audit)
        src = Path(release_path(conn, release_id))
    target = dest / release_id
    shutil.copytree(src, target)
    return target
