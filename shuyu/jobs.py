"""Job orchestration: the one place that walks a job through the whole domain.

    submit ──► compile (egress.dp) ──► decide (enclave.decisions, audited) ──► authorized
    JobRunner / run_job (decides again, claims) — or submit(run_now=True), whose decision
    claims the job in the same transaction and runs it in the caller's thread:
      authorized ──► running + key release (enclave.key_release: job, image, policy hash;
                     in the claim's transaction) ──► sandbox (operator's session)
                 ──► DP: OpenDP noise in memory; then one transaction
                     (egress.gate.Gate.process_charged): computed, the ledger charge,
                     gated, the egress report, the held output ──► pending_review |
                     auto_released (the signed release, too) | refused (blocked)
                 ──► SDC: trusted statistics query + identifier hashes, in sandboxes
                     ──► computed ──► gate (checks, report, seal) ──► pending_review |
                     refused (blocked)

Everything a job needs to resume is in its row (code, params, policy hash), so a restarted
service finishes what a crashed one started: :meth:`JobRunner.recover` re-queues
``authorized`` jobs and fails ``running``/``computed`` ones whose sandbox is gone — a job
that failed before its noisy values existed has charged nothing, because the charge and the
noisy values commit together.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlglot import exp

from egress.checks import Finding, IdentifierIndex, OutputSpec
from egress.checks.inputs import MeasureKind, OutputStats
from egress.checks.stats_sql import Measure, cell_stats_sql
from egress.dp import CompiledQuery, DatasetCatalog, apply_noise, compile_query
from egress.dp.analyze import Plan, analyze
from egress.dp.release import NoisyResult
from egress.errors import BudgetExhausted, QueryRefused
from egress.ledger import Budget, Ledger
from enclave.errors import EnclaveError, KeyReleaseRefused
from enclave.identity import User
from enclave.jobstore import Job, JobStateError, advance, create_job, get_job, transition
from enclave.jobstore import list_jobs as _list_jobs
from enclave.key_release import KeyReleaseService, ReleaseClaims
from enclave.scenarios import DatasetRow
from enclave.store import DatasetRecord
from enclave.tables import jobs as jobs_table
from policies.decision import JobAccess
from policies.errors import ShuyuError
from policies.scenario import Scenario
from sandbox.job import JobSpec, TableGrant
from shuyu.context import Domain
from shuyu.errors import ServiceError

__all__ = [
    "JobRunner",
    "cancel",
    "get",
    "list_jobs",
    "result_table",
    "run_job",
    "submit",
]

log = logging.getLogger(__name__)

_DEFAULT_EPSILON = 1.0  # when the operator names neither ε nor an accuracy target
_SDC_MEASURES: dict[str, MeasureKind] = {"count": "count", "sum": "sum", "avg": "mean"}


# --- reading the query -------------------------------------------------------------------


def _catalog_for(
    domain: Domain, records: dict[str, DatasetRecord] | None = None
) -> Callable[[str], DatasetCatalog]:
    """Catalogs by dataset name; each record read once, kept in ``records``."""
    if records is None:
        records = {}

    def lookup(name: str) -> DatasetCatalog:
        rec = records.get(name)
        if rec is None:
            rec = records[name] = domain.store.get(name)
        return DatasetCatalog.from_meta(
            rec.meta.to_json(),
            name=rec.name,
            version=rec.version,
            unit_bound_verified=rec.unit_bound_verified,
        )

    return lookup


def _columns_of(plan: Plan) -> dict[str, set[str]]:
    """Every column the operator's query reads, by dataset name."""
    alias_to = {o.alias: o.catalog.name for o in plan.occurrences}
    used: dict[str, set[str]] = {o.catalog.name: set() for o in plan.occurrences}
    nodes: list[exp.Expression] = list(plan.conditions)
    nodes += [k.expr for k in plan.group_keys]
    for a in plan.aggregates:
        nodes += [n for n in (a.arg, a.filter) if n is not None]
    for node in nodes:
        for col in node.find_all(exp.Column):
            ds = alias_to.get(col.table) or (next(iter(used)) if len(used) == 1 else None)
            if ds is not None:
                used[ds].add(col.name.lower())
    return used


def _scenario(domain: Domain, scenario_id: str) -> Scenario:
    rec = domain.scenarios.find(scenario_id)
    if rec is None:
        raise ServiceError(
            f"no scenario {scenario_id}",
            code="service.scenario_not_found",
            kind="not_found",
            hint="check the id with `shuyu scenario list`",
        )
    return rec.scenario


def _epsilon_delta(s: Scenario, epsilon: float | None, accuracy: Any) -> tuple[float | None, float]:
    delta = float(s.privacy_budget.per_job_delta or 0.0)
    if epsilon is None and accuracy is None:
        epsilon = min(_DEFAULT_EPSILON, float(s.privacy_budget.per_job_epsilon))
    return epsilon, delta


@dataclass(frozen=True)
class _Prepared:
    """What compiling a job yields: the SQL the sandbox runs and what it reads."""

    columns: dict[str, set[str]]
    compiled: CompiledQuery | None = None
    plan: Plan | None = None
    # The dataset records the query was compiled against, by name: the run reads and
    # decrypts exactly these versions (and does not read the catalog a third time).
    records: dict[str, DatasetRecord] = field(default_factory=dict)


def _prepare(
    domain: Domain,
    job_kind: str,
    output_mode: str,
    code: str,
    s: Scenario | None,
    params: Mapping[str, Any],
) -> _Prepared:
    if job_kind == "python":
        assert s is not None  # a Python job reads its scenario's datasets
        # A Python job sees its scenario's datasets, as the desensitized sample view's columns.
        return _Prepared({name: set(scope.columns) for name, scope in s.datasets.items()})
    records: dict[str, DatasetRecord] = {}
    if output_mode == "dp_aggregate":
        catalog_for = _catalog_for(domain, records)
        compiled = compile_query(
            code,
            catalog_for,
            epsilon=params.get("epsilon"),
            accuracy=params.get("accuracy"),
            delta=float(params.get("delta", 0.0)),
            seed=int(params["seed"]),
        )
        plan = analyze(code, catalog_for)
        return _Prepared(_columns_of(plan), compiled=compiled, plan=plan, records=records)
    if output_mode == "sdc_aggregate":
        plan = analyze(code, _catalog_for(domain, records))
        _sdc_shape(plan)  # refuse early what the statistics query cannot express
        return _Prepared(_columns_of(plan), plan=plan, records=records)
    raise QueryRefused(
        f"a SQL job cannot have output mode {output_mode!r}",
        hint="SQL jobs release dp_aggregate or sdc_aggregate outputs; models come from Python jobs",
    )


def _access(
    kind: str, output_mode: str, prepared: _Prepared, epsilon: float | None, delta: float
) -> JobAccess:
    """What the access decision is asked about: every column read, kind, mode, cost."""
    return JobAccess(
        columns={k: frozenset(v) for k, v in prepared.columns.items()},
        kind=kind,
        output_mode=output_mode,
        epsilon=epsilon,
        delta=delta if output_mode == "dp_aggregate" else None,
    )


def _strip_alias(node: exp.Expression) -> str:
    def unqualify(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Column):
            return exp.column(n.name, quoted=True)
        return n

    return node.copy().transform(unqualify).sql(dialect="duckdb")


def _sdc_shape(plan: Plan) -> tuple[str, list[str], list[Measure], str | None]:
    """(dataset, key columns, measures, trusted WHERE) of a disclosure-checked aggregate."""
    if len(plan.occurrences) != 1:
        raise QueryRefused(
            "a disclosure-checked aggregate reads one dataset",
            hint="join in a dp_aggregate job, or aggregate each dataset alone",
        )
    keys: list[str] = []
    for k in plan.group_keys:
        if not isinstance(k.expr, exp.Column) or k.name.lower() != k.expr.name.lower():
            raise QueryRefused(
                f"group key {k.name!r} is an expression",
                hint="disclosure-checked aggregates group by plain columns; use a "
                "dp_aggregate job to group by an expression",
            )
        keys.append(k.expr.name)
    measures: list[Measure] = []
    for a in plan.visible:
        kind = _SDC_MEASURES.get(a.kind)
        arg_ok = a.arg is None or isinstance(a.arg, exp.Column)
        if kind is None or not arg_ok or a.filter is not None:
            raise QueryRefused(
                f"aggregate {a.written or a.name!r} is not COUNT, SUM or AVG of a column",
                hint="disclosure-checked aggregates allow COUNT(*), COUNT(col), SUM(col), "
                "AVG(col); for other statistics use a dp_aggregate job",
            )
        col = a.arg.name if isinstance(a.arg, exp.Column) else None
        measures.append(Measure(a.name, kind, col))
    if plan.having is not None or plan.order or plan.limit is not None:
        raise QueryRefused(
            "HAVING, ORDER BY and LIMIT are not applied to disclosure-checked aggregates",
            hint="sort and filter the released table yourself",
        )
    where = " AND ".join(f"({_strip_alias(c)})" for c in plan.conditions) or None
    return plan.occurrences[0].catalog.name, keys, measures, where


# --- submit ------------------------------------------------------------------------------


def submit(
    domain: Domain,
    user: User,
    scenario_id: str,
    *,
    kind: str,
    code: str,
    output_mode: str,
    epsilon: float | None = None,
    accuracy: Any = None,
    dry_run: bool = False,
    run_now: bool = False,
) -> dict[str, Any]:
    """Check, price and authorize a job; queue it (or, with ``dry_run``, only report).

    With ``run_now`` the job is not queued: the transaction whose decision authorizes it
    also claims it (``authorized`` then ``running``, both audited), and it runs in this
    thread to the gate; the view returned is its final one. For a caller that waits for the
    answer anyway (a held API request): no runner is woken, and nothing is decided twice,
    because no time passes between the decision and the run. The caller bounds how many
    such runs go at once.

    A dry run touches no data and charges nothing: it returns the rewritten SQL, the
    privacy cost, the budget left after it, the expected error of every output column, and
    the access decision with every reason.
    """
    s = _scenario(domain, scenario_id)
    if kind == "python" and output_mode == "model":
        from shuyu.model_jobs import check_submission  # imports shuyu.jobs: import it late

        check_submission(code, s)  # a malformed model job is refused now, not queued
    eps, delta = (
        _epsilon_delta(s, epsilon, accuracy) if output_mode == "dp_aggregate" else (None, 0.0)
    )
    seed = int.from_bytes(hashlib.sha256(f"{scenario_id}|{code}".encode()).digest()[:4], "big")
    params: dict[str, Any] = {"epsilon": eps, "accuracy": accuracy, "delta": delta, "seed": seed}
    prepared = _prepare(domain, kind, output_mode, code, s, params)
    access = _access(kind, output_mode, prepared, eps, delta)
    ledger = Ledger(domain.audit, domain.keys)
    budget = Budget.of(s.privacy_budget)
    if dry_run:
        decision = domain.access.decide_job(user.id, scenario_id, access)
        report: dict[str, Any] = {
            "scenario_id": scenario_id,
            "allowed": decision.allowed,
            "decision": decision.to_dict(),
            "columns_read": {k: sorted(v) for k, v in prepared.columns.items()},
        }
        if prepared.compiled is not None:
            priced = ledger.dry_run(domain.engine, scenario_id, prepared.compiled, budget)
            report["dp"] = _jsonable(asdict(priced.report))
            report["budget_left_before"] = ledger.status(
                domain.engine, scenario_id, budget
            ).to_dict()
            left = priced.report.budget_left_after
            report["budget_left_after"] = (
                None if left is None else {"epsilon": left[0], "delta": left[1]}
            )
            report["repeat"] = (
                ledger.lookup(domain.engine, scenario_id, prepared.compiled.query_key) is not None
            )
        return report
    if prepared.compiled is not None:
        params["query_key"] = prepared.compiled.query_key
        params["cost"] = {
            "epsilon": prepared.compiled.cost.epsilon,
            "delta": prepared.compiled.cost.delta,
        }
        # Refuse before queueing when the budget cannot pay (and it is not a repeat).
        if ledger.lookup(domain.engine, scenario_id, prepared.compiled.query_key) is None:
            ledger.check(domain.engine, scenario_id, prepared.compiled.cost, budget)
    params["columns"] = {k: sorted(v) for k, v in prepared.columns.items()}
    # One transaction: the job, the decision (audited) and the job's move to authorized or
    # refused commit together — a job is never queued without the decision that allowed it.
    with domain.engine.begin() as conn:
        job = create_job(
            conn,
            domain.audit,
            scenario_id=scenario_id,
            submitter=user.id,
            kind=kind,
            output_mode=output_mode,
            code=code,
            params=params,
        )
        decision = domain.access.decide_job(user.id, scenario_id, access, job_id=job.id, conn=conn)
        denied = decision.denial()
        if denied is not None:
            transition(
                conn,
                domain.audit,
                job.id,
                "refused",
                actor="system",
                error_code=denied.code,
                error_message=denied.message,
            )
        else:
            job = advance(
                conn,
                domain.audit,
                job,
                "authorized",
                actor="system",
                policy_hash=decision.policy_hash,
            )
            if not run_now:
                return job.view()
            job = advance(conn, domain.audit, job, "running", actor="system")
            scope = {name: sorted(cols) for name, cols in decision.scope.items()}
            job = replace(job, params={**job.params, "authorized_scope": scope})
            ready, refused = _prepare_dp_run(domain, conn, _Decided(job, s, prepared))
    if denied is not None:
        raise denied
    return _run_claimed(domain, ready, refused)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)


# --- reading jobs ------------------------------------------------------------------------


def _may_see(user: User, job: Job) -> bool:
    if user.id == job.submitter:
        return True
    return any(user.has(r) for r in ("authority", "reviewer", "auditor"))


def _visible_job(domain: Domain, user: User, job_id: str) -> Job:
    """The job, if this user may see it; otherwise the same error as a job that does not
    exist, so ids of other operators' jobs cannot be probed."""
    with domain.engine.connect() as conn:
        job = get_job(conn, job_id)
    if not _may_see(user, job):
        raise EnclaveError(
            f"no job {job_id}",
            code="enclave.job_not_found",
            kind="not_found",
            hint="check the job id (`shuyu job list`)",
        )
    return job


def get(domain: Domain, user: User, job_id: str) -> dict[str, Any]:
    job = _visible_job(domain, user, job_id)
    return job.view()


def list_jobs(domain: Domain, user: User, scenario_id: str | None = None) -> list[dict[str, Any]]:
    with domain.engine.connect() as conn:
        found = _list_jobs(conn, scenario_id=scenario_id)
    return [j.view() for j in found if _may_see(user, j)]


def cancel(domain: Domain, user: User, job_id: str) -> dict[str, Any]:
    with domain.engine.begin() as conn:
        job = get_job(conn, job_id)
        if user.id != job.submitter and not user.has("authority"):
            raise ServiceError(
                f"only the submitter or an authority may cancel {job_id}",
                code="service.forbidden",
                kind="forbidden",
                hint="ask the submitter to cancel it",
            )
        transition(conn, domain.audit, job_id, "cancelled", actor=user.id)
        return get_job(conn, job_id).view()


def result_table(domain: Domain, user: User, job_id: str) -> pa.Table:
    """The released result of a job; refused until the job is released."""
    job = _visible_job(domain, user, job_id)
    if job.state not in ("released", "auto_released"):
        raise ServiceError(
            f"job {job_id} is {job.state}; only released results can be downloaded",
            code="service.not_released",
            kind="conflict",
            hint="wait for a reviewer to approve it (`shuyu job show`)",
        )
    with domain.engine.connect() as conn:
        outputs = domain.gate.load_outputs(conn, job_id)
    return outputs[0].table


# --- running -----------------------------------------------------------------------------


def _fail(domain: Domain, job_id: str, exc: ShuyuError) -> None:
    with domain.engine.begin() as conn:
        try:
            transition(
                conn,
                domain.audit,
                job_id,
                "failed",
                actor="system",
                error_code=exc.code,
                error_message=str(exc),
            )
        except ShuyuError:
            log.warning("job %s could not be marked failed", job_id)


def _release_keys(
    domain: Domain,
    job: Job,
    columns: Mapping[str, Collection[str]],
    records: Mapping[str, DatasetRecord],
    *,
    actor: str,
) -> dict[str, bytes]:
    """Ask the key service for exactly the keys of ``columns``, bound to this job.

    The claims are checked against an *independent* statement of what may be read: for the
    operator's run, the scope of the access decision taken just before the run (plus each
    dataset's privacy unit, which the trusted rewrite and the statistics query read); for
    the gate's own trusted runs (``actor="gate"``), the columns the catalog marks
    identifying, which only trusted SQL ever reads.
    """
    service, claims, authorized = _key_claims(domain, job, columns, records, actor=actor)
    return service.release(
        domain.engine,
        claims,
        trusted_image_id=domain.sandboxes.image_id,
        authorized=authorized,
        actor=actor,
    )


def _key_claims(
    domain: Domain,
    job: Job,
    columns: Mapping[str, Collection[str]],
    records: Mapping[str, DatasetRecord],
    *,
    actor: str,
) -> tuple[KeyReleaseService, ReleaseClaims, dict[str, set[str]]]:
    """The key service, the claims for ``columns`` and the scope they are checked against
    (see :func:`_release_keys`)."""
    sb = domain.sandboxes
    service = KeyReleaseService(domain.keys, domain.audit)
    by_id = {records[name].id: set(cols) for name, cols in columns.items()}
    authorized: dict[str, set[str]] = {}
    for name, rec in records.items():
        if actor == "gate":
            allowed = {c.name for c in rec.meta.columns if c.role == "identifier"}
        else:
            scope = job.params.get("authorized_scope", {})
            allowed = set(scope.get(name, ()))
            # A dataset in the decision's scope may be read by unit even when the operator
            # names no column (SELECT COUNT(*)): the trusted rewrite bounds per unit.
            if name in scope and rec.meta.privacy_unit:
                allowed.add(rec.meta.privacy_unit)
        authorized[rec.id] = allowed
    # The claim comes from the catalog entries the job was compiled against; the key
    # service resolves it again from the database when it checks it.
    key_ids = service.key_ids_from_catalog({r.id: r.meta for r in records.values()}, by_id)
    claims = ReleaseClaims(
        job_id=job.id,
        image_id=sb.image_id,
        policy_hash=job.policy_hash or "",
        columns=by_id,
        key_ids=key_ids,
    )
    return service, claims, authorized


def _spec(
    job: Job,
    code: str,
    columns: Mapping[str, Collection[str]],
    records: Mapping[str, DatasetRecord],
    keys: Mapping[str, bytes],
    *,
    suffix: str = "",
) -> JobSpec:
    return JobSpec(
        job_id=job.id + suffix,
        kind="python" if job.kind == "python" and not suffix else "sql",
        code=code,
        tables={
            n: TableGrant(path=records[n].path, columns=tuple(sorted(c)))
            for n, c in columns.items()
        },
        keys=keys,
        operator=job.submitter,
        scenario_id=job.scenario_id,
    )


def _run_claimed(
    domain: Domain, ready: _Decided, refused: KeyReleaseRefused | None = None
) -> dict[str, Any]:
    """Run a job this thread holds (``running``) to the gate; its final view. Any error
    fails the job, as the runner would: a known one with its code, a bug as internal (as
    does ``refused``, a key release its claim's transaction refused and recorded)."""
    job = ready.job
    try:
        if refused is not None:
            raise refused
        _run(domain, job, ready.scenario, ready.prepared, ready)
    except ShuyuError as exc:
        _fail(domain, job.id, exc)
    except Exception:
        log.exception("job %s crashed while it ran", job.id)
        _fail(domain, job.id, _internal_error())
    with domain.engine.connect() as conn:
        return get_job(conn, job.id).view()


def _internal_error() -> ServiceError:
    return ServiceError(
        "internal error while running the job",
        code="service.internal",
        hint="report it; the job charged nothing",
    )


def run_job(domain: Domain, job_id: str) -> dict[str, Any]:
    """Run one authorized job to the gate; returns its view. Safe to call twice."""
    with domain.engine.connect() as conn:
        job = get_job(conn, job_id)
    if job.state != "authorized":
        return job.view()
    claim = _Claim()
    try:
        decided = _decide_again(domain, job, claim)
        if decided is None:
            with domain.engine.connect() as conn:
                return get_job(conn, job_id).view()
        _run(domain, decided.job, decided.scenario, decided.prepared, decided)
    except ShuyuError as exc:
        # Fail only a job this runner holds (or one nobody has taken yet): a runner of
        # another process may be running it.
        if claim.held or _still(domain, job_id, "authorized"):
            _fail(domain, job_id, exc)
    with domain.engine.connect() as conn:
        return get_job(conn, job_id).view()


@dataclass
class _Claim:
    """Whether this runner won the job's compare-and-set to `running`."""

    held: bool = False


def _still(domain: Domain, job_id: str, state: str) -> bool:
    with domain.engine.connect() as conn:
        return get_job(conn, job_id).state == state


@dataclass(frozen=True)
class _Decided:
    """A job this runner claimed and may run: what the run needs from the claim's
    transaction."""

    job: Job  # carries the decision's scope (in memory only) for key release
    scenario: Scenario
    prepared: _Prepared
    # A DP job: an earlier release of the same query (a repeat: nothing to run), else the
    # data keys released to its run.
    earlier: NoisyResult | None = None
    keys: dict[str, bytes] | None = None


def _decide_again(domain: Domain, job: Job, claim: _Claim) -> _Decided | None:
    """Claim the job and decide once more just before the run (audited); None when another
    runner took the job or it is now refused.

    Claim and decision are one transaction: the compare-and-set to `running` lets exactly
    one runner, in any process sharing the database, take the job, and the decision that
    lets it run commits with it. Between submit and run the scenario may have been
    suspended or revoked, the operator's agreement may have lapsed, the provider may have
    withdrawn approval. The returned job carries the decision's scope (in memory only) for
    key release to check claims against; the scenario and the compiled query go on to the
    run, so a job is compiled once here.

    A DP job's data keys are released in the same transaction, under the decision that
    allows the run (unless the ledger already holds an answer to the query: a repeat needs
    no run). A refused key release is recorded there too; it is raised once that commits.
    """
    # A SQL job is compiled from the catalog alone; its scenario is read once, by the
    # decision, in the claim's transaction. A Python job's columns are its scenario's.
    before = _scenario(domain, job.scenario_id) if job.kind == "python" else None
    params = dict(job.params)
    prepared = _prepare(domain, job.kind, job.output_mode, job.code, before, params)
    access = _access(
        job.kind,
        job.output_mode,
        prepared,
        params.get("epsilon"),
        float(params.get("delta") or 0.0),
    )
    with domain.engine.begin() as conn:
        try:
            claim.held = transition(conn, domain.audit, job.id, "running", actor="system")
        except JobStateError:  # another runner took it and has moved it on
            claim.held = False
        if not claim.held:
            return None
        decision, rec = domain.access.decide_job_in(
            conn, job.submitter, job.scenario_id, access, job_id=job.id
        )
        problem = None
        if not decision.allowed:
            problem = "; ".join(r.message for r in decision.reasons) or "access denied"
        elif decision.policy_hash != job.policy_hash:
            problem = "the scenario's policy changed since the job was authorized"
        if problem is not None:
            transition(
                conn,
                domain.audit,
                job.id,
                "refused",
                actor="system",
                error_code="policy.denied_at_run",
                error_message=problem,
            )
            return None
        assert rec is not None  # an allowed decision had the scenario's grant
        scope = {name: sorted(cols) for name, cols in decision.scope.items()}
        ready, refused = _prepare_dp_run(
            domain,
            conn,
            _Decided(
                replace(job, params={**job.params, "authorized_scope": scope}),
                rec.scenario,
                prepared,
            ),
        )
    if refused is not None:
        raise refused
    return ready


def _prepare_dp_run(
    domain: Domain, conn: Connection, ready: _Decided
) -> tuple[_Decided, KeyReleaseRefused | None]:
    """In the transaction that claims a DP job under its decision: the ledger's earlier
    answer to the query (a repeat needs no run), else the data keys released to the run. A
    refused release is recorded in ``conn`` and handed back, to raise once it commits."""
    prepared, job = ready.prepared, ready.job
    if prepared.compiled is None:
        return ready, None
    earlier = Ledger(domain.audit, domain.keys).lookup(
        conn, job.scenario_id, prepared.compiled.query_key
    )
    if earlier is not None:
        return replace(ready, earlier=earlier), None
    records = _records_of(domain, prepared)
    service, claims, authorized = _key_claims(
        domain, job, _with_units(prepared.columns, records), records, actor="system"
    )
    try:
        keys = service.release_in(
            conn,
            claims,
            trusted_image_id=domain.sandboxes.image_id,
            authorized=authorized,
            actor="system",
        )
    except KeyReleaseRefused as exc:
        return ready, exc  # recorded in this transaction, which commits
    return replace(ready, keys=keys), None


def _records_of(domain: Domain, prepared: _Prepared) -> dict[str, DatasetRecord]:
    """The dataset versions a job reads: those it was compiled against."""
    return {name: prepared.records.get(name) or domain.store.get(name) for name in prepared.columns}


def _run(
    domain: Domain, job: Job, s: Scenario, prepared: _Prepared, decided: _Decided | None = None
) -> None:
    """Run a claimed job to the gate; ``decided`` is what its claim's transaction already
    did for the run (a DP job's repeat lookup and key release), if it did."""
    records = _records_of(domain, prepared)
    sb = domain.sandboxes
    if prepared.compiled is not None:
        _run_dp(domain, job, s, prepared.compiled, prepared, records, sb, decided)
    elif job.output_mode == "sdc_aggregate" and prepared.plan is not None:
        _run_sdc(domain, job, s, prepared.plan, records, sb)
    elif job.kind == "python" and job.output_mode == "model":
        from shuyu.model_jobs import run_model_job  # imports shuyu.jobs: import it late

        run_model_job(domain, job, s, records, sb)
    else:
        raise ServiceError(
            f"a {job.kind} job with output mode {job.output_mode} cannot run",
            code="service.not_implemented",
            kind="conflict",
            hint="Python jobs release models (output mode model); SQL jobs release "
            "dp_aggregate or sdc_aggregate outputs",
        )


def _with_units(
    prepared_cols: Mapping[str, set[str]], records: Mapping[str, DatasetRecord]
) -> dict[str, set[str]]:
    """The operator's columns plus each dataset's privacy unit, which trusted bounding uses."""
    out = {n: set(c) for n, c in prepared_cols.items()}
    for n in out:
        unit = records[n].meta.privacy_unit
        if unit:
            out[n].add(unit)
    return out


def _run_dp(
    domain: Domain,
    job: Job,
    s: Scenario,
    compiled: CompiledQuery,
    prepared: _Prepared,
    records: Mapping[str, DatasetRecord],
    sb: Any,
    decided: _Decided | None = None,
) -> None:
    ledger = Ledger(domain.audit, domain.keys)
    if decided is not None and (decided.earlier is not None or decided.keys is not None):
        earlier, keys = decided.earlier, decided.keys  # looked up / released with the claim
    else:
        earlier = ledger.lookup(domain.engine, job.scenario_id, compiled.query_key)
        keys = None
    if earlier is None:
        columns = _with_units(prepared.columns, records)
        if keys is None:
            keys = _release_keys(domain, job, columns, records, actor="system")
        out = sb.run(_spec(job, compiled.rewritten_sql, columns, records, keys), warm=True)
        noisy = apply_noise(compiled, out.result)
        try:
            # The exact answer becomes noisy in memory. The charge, the noisy values, the
            # job's moves, the egress report, the held output and (auto-released) the
            # release all commit in one transaction. The ledger may hand back an earlier
            # answer (this job's own charge after a crash, or the same query released
            # meanwhile); then only the moves commit here, and that answer — never a
            # second noisy draw — goes through the gate below.
            answered: list[NoisyResult] = []

            def charge(conn: Connection) -> bool:
                transition(conn, domain.audit, job.id, "computed", actor="system")
                rel = ledger.charge_and_record(
                    conn,
                    scenario_id=job.scenario_id,
                    job_id=job.id,
                    compiled=compiled,
                    result=noisy,
                    budget=Budget.of(s.privacy_budget),
                    actor=job.submitter,
                )
                transition(conn, domain.audit, job.id, "gated", actor="system")
                if rel.charged:  # these very values were paid for
                    return True
                answered.append(rel.result)
                return False

            done = domain.gate.process_charged(
                job,
                [_dp_output(compiled, noisy, records)],
                charge=charge,
                auto_release_clean_dp=s.auto_release_clean_dp,
                identifiers=IdentifierIndex.empty(),
                precomputed=_aggregate_only("DP"),
                scenario=s,
                rows=_catalog_rows(records),
            )
        except BudgetExhausted as exc:
            ledger.record_denial(
                domain.engine, exc, scenario_id=job.scenario_id, job_id=job.id, actor=job.submitter
            )
            raise
        if done is not None:
            return
        noisy = answered[0]
    else:
        # A repeat: the earlier noisy answer, charged nothing — averaging gains nothing.
        with domain.engine.begin() as conn:
            transition(
                conn,
                domain.audit,
                job.id,
                "computed",
                actor="system",
                details={"repeat_of_query": compiled.query_key},
            )
            transition(conn, domain.audit, job.id, "gated", actor="system")
        noisy = earlier
    domain.gate.process(
        job.id,
        [_dp_output(compiled, noisy, records)],
        identifiers=IdentifierIndex.empty(),
        precomputed=_aggregate_only("DP"),
        auto_release_clean_dp=s.auto_release_clean_dp,
    )


def _catalog_rows(records: Mapping[str, DatasetRecord]) -> dict[str, DatasetRow]:
    """The dataset versions a job read, as the gate sees catalog rows."""
    return {
        name: DatasetRow(
            id=r.id,
            name=r.name,
            version=r.version,
            status=r.status,
            kind=r.kind,
            owner_org=r.owner_org,
            grade=r.grade,
            scenario_id=None,
            meta=r.meta.to_json(),
            created_at=r.created_at,
        )
        for name, r in records.items()
    }


def _dp_output(
    compiled: CompiledQuery, noisy: NoisyResult, records: Mapping[str, DatasetRecord]
) -> OutputSpec:
    """The gate's view of a DP answer: its table, sources and visible measures."""
    measures: dict[str, MeasureKind] = {}
    for o in compiled.outputs:
        kind = _SDC_MEASURES.get(o.kind)
        if kind is not None and not o.hidden and o.name in noisy.table.column_names:
            measures[o.name] = kind
    return OutputSpec(
        name="result",
        table=noisy.table,
        datasets=tuple(records),
        mode="dp_aggregate",
        measures=measures,
    )


def _run_sdc(
    domain: Domain,
    job: Job,
    s: Scenario,
    plan: Plan,
    records: Mapping[str, DatasetRecord],
    sb: Any,
) -> None:
    dataset, keys, measures, where = _sdc_shape(plan)
    rec = records[dataset]
    unit = rec.meta.privacy_unit
    if not unit:
        raise QueryRefused(
            f"dataset {dataset} has no privacy unit",
            hint="disclosure checks count units; ask the provider to declare one",
        )
    index = IdentifierIndex.empty()
    # The statistics query is trusted SQL, written here from the parsed query: it returns
    # the aggregates and, per cell, the units behind it and the largest contributions.
    # Units are hashed with the gate history's salt, the same for every job, so this
    # output's cells can be compared with every earlier release (differencing).
    with domain.engine.begin() as conn:
        unit_salt = domain.gate.history.unit_salt(conn)
    sql = cell_stats_sql(f'"{dataset}"', keys, measures, unit, unit_salt, where)
    cols = {dataset: set(keys) | {m.column for m in measures if m.column} | {unit}}
    cols[dataset] |= set(_columns_of(plan).get(dataset, set()))
    release = _release_keys(domain, job, cols, records, actor="system")
    out = sb.run(_spec(job, sql, cols, records, release), warm=True)
    # Still `running`: the gate's own trusted run needs keys, which only a running job gets.
    identifiers = _identifier_index(domain, job, rec, index, sb)
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, job.id, "computed", actor="system")
    result = out.result
    sums = [m.name for m in measures if m.kind != "count"]
    stats = OutputStats.from_arrow(result, sums)
    output = OutputSpec(
        name="result",
        table=result.select([*keys, *(m.name for m in measures)]),
        datasets=(dataset,),
        mode="sdc_aggregate",
        measures={m.name: m.kind for m in measures},
        keys=tuple(keys),
        stats=stats,
    )
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, job.id, "gated", actor="system")
    domain.gate.process(
        job.id,
        [output],
        identifiers=identifiers,
        precomputed=_aggregate_only("disclosure-checked"),
    )


def _identifier_index(
    domain: Domain, job: Job, rec: DatasetRecord, index: IdentifierIndex, sb: Any
) -> IdentifierIndex:
    """Keyed hashes of the dataset's identifying values, computed in a cold trusted sandbox.

    Only hashes come out. The run is the gate's, not the operator's: its keys are released
    for the identifying columns even when the scenario does not let the operator read them,
    and it never runs in the operator's warm session.
    """
    ident_cols = [c.name for c in rec.meta.columns if c.role == "identifier"]
    if not ident_cols:
        return index
    # A dataset version's identifying values never change: hash them once, not per job.
    key = (rec.id, rec.version, tuple(ident_cols))
    cached = domain.identifier_indexes.get(key)
    if cached is not None:
        return cached
    parts = []
    for col in ident_cols:
        q = '"' + col.replace('"', '""') + '"'
        parts.append(
            f"SELECT '{col}' AS origin, * FROM (SELECT DISTINCT {index.hash_sql(q)} "  # noqa: S608
            f'FROM "{rec.name}" WHERE {q} IS NOT NULL)'
        )
    sql = " UNION ALL ".join(parts)
    cols = {rec.name: set(ident_cols)}
    keys = _release_keys(domain, job, cols, {rec.name: rec}, actor="gate")
    out = sb.run(_spec(job, sql, cols, {rec.name: rec}, keys, suffix="-ids"), warm=False)
    table = out.result
    for col in ident_cols:
        mask = pa.compute.equal(table.column("origin"), col)
        part = table.filter(mask)
        index.add_hash_arrays(
            rec.name,
            col,
            part.column("h").to_numpy(),
            part.column("n").to_numpy(),
            part.column("numeric").to_numpy(),
        )
    domain.identifier_indexes.put(key, index)
    return index


def _aggregate_only(mode: str) -> dict[str, dict[str, list[Finding]]]:
    """The row-level check's verdict for SQL outputs: aggregates by construction.

    The compiler refuses any SQL that is not an aggregate per group (no row-level SELECT,
    no grouping by the privacy unit or an identifier), so an output row is a group, never a
    source row. Saying so is more useful to a reviewer than "could not run".
    """
    return {
        "result": {
            "row_level": [
                Finding(
                    check="row_level",
                    severity="info",
                    message=f"{mode} SQL is aggregate-only by construction: the compiler "
                    "refused any row-level select, grouping by the privacy unit or by an "
                    "identifier",
                )
            ]
        }
    }


# --- the background runner ---------------------------------------------------------------


class JobRunner:
    """Runs authorized jobs in the background; resumes what a crash left behind."""

    def __init__(self, domain: Domain, *, poll_s: float = 0.2, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"a job runner needs at least one worker, not {workers}")
        self._domain = domain
        self._poll_s = poll_s
        self._workers = workers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Jobs a worker of this runner has taken and not finished: another worker skips
        # them, so two workers never race one job through its states.
        self._claim_lock = threading.Lock()
        self._claimed: set[str] = set()

    def recover(self) -> int:
        """After a restart: fail jobs whose sandbox vanished; authorized ones run again."""
        with self._domain.engine.connect() as conn:
            stuck = _list_jobs(conn, states=["running", "computed", "gated"])
        for job in stuck:
            _fail(
                self._domain,
                job.id,
                ServiceError(
                    "the service stopped while this job ran; its sandbox is gone",
                    code="service.interrupted",
                    kind="unavailable",
                    hint="submit the job again; nothing was charged unless its result exists",
                ),
            )
        return len(stuck)

    def start(self) -> None:
        """Recover, then start the workers. Several workers overlap one job's compile, key
        release, ledger and gate with another's sandbox run; jobs of one operator under
        one scenario still take turns in its warm session (the session's lock)."""
        self.recover()
        for i in range(self._workers):
            name = "shuyu-jobs" if self._workers == 1 else f"shuyu-jobs-{i + 1}"
            thread = threading.Thread(target=self._loop, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._domain.sandboxes.close()

    def _next(self) -> str | None:
        """Claim the oldest authorized job no other worker of this runner has taken."""
        with self._claim_lock:
            with self._domain.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(jobs_table.c.id)
                    .where(jobs_table.c.state == "authorized")
                    .order_by(jobs_table.c.created_at)
                    .limit(len(self._claimed) + 1)
                ).all()
            for row in rows:
                job_id = str(row.id)
                if job_id not in self._claimed:
                    self._claimed.add(job_id)
                    return job_id
        return None

    def _loop(self) -> None:
        watch = self._domain.job_watch
        while not self._stop.is_set():
            seen = watch.queued  # before looking: a job queued after is not missed
            job_id = self._next()
            if job_id is None:
                # Woken when this process commits a job as authorized (a submit); the
                # timeout catches jobs queued by another process (the CLI) and the stop flag.
                watch.wait_runnable(seen, self._poll_s)
                continue
            try:
                self._run_one(job_id)
            finally:
                with self._claim_lock:
                    self._claimed.discard(job_id)

    def _run_one(self, job_id: str) -> None:
        try:
            run_job(self._domain, job_id)
        except Exception:  # a bug must not kill the worker; the job is failed instead
            log.exception("job %s crashed the runner", job_id)
            _fail(self._domain, job_id, _internal_error())
