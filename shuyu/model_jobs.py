"""Python model jobs: train in the sandbox on the desensitized sample, check the model in a
second sandbox next to the data, and send it to the gate (issue 7).

    authorized ──► running ──► keys for the columns the sample view reads (key release)
                               + the scenario's pseudonym key (audited)
               ──► cold sandbox: the prelude materializes the R1.5 sample view, holds out a
                   salted share of its persons and drops key and salt; operator
                   code (RestrictedPython) trains and emits one model as skops bytes
               ──► computed ──► check job: a second cold sandbox, same keys and image, whose
                   trusted prelude rebuilds the same training and held-out rows; the
                   model checks (sandbox/agent/modelcheck) run there and only their
                   report comes back (this worker never decrypts a row)
               ──► gated ──► gate: pending_review (every model needs a reviewer) | refused

What the operator writes (``shuyu/examples/train_logreg.py``)::

    df = shuyu.table("residents")          # the sample view's rows, holdout removed
    model = ...fit(df[features], df["income"] >= 30000)
    shuyu.emit_model("income_model", model, target="income >= 30000")

The checks need the rows the model was trained on and rows it never saw. The platform
knows both: the sample view is deterministic for a scenario (its pseudonym key), and the
holdout is :func:`holdout_split`, by privacy unit, with a salt drawn here for this run only
(the prelude makes it in the operator's sandbox, the check job's prelude makes it again).
The *target* is declared in the source (``target=``, a column or a SQL expression over the table's
columns, read here from the source as a literal) and evaluated by trusted DuckDB; the
*features* are the model's ``feature_names_in_``. If the operator trained on anything else
(another split, derived columns, another target), the trusted refit differs and blocks.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlglot
from sqlalchemy.engine import Connection
from sqlglot import exp

from egress.checks import Finding
from egress.errors import BudgetExhausted, ModelCheckError
from egress.ledger import Budget, Ledger, charge_model
from egress.models import (
    ModelCheckReport,
    ModelFinding,
    ModelThresholds,
    egress_findings,
    model_sha256,
    read_report,
    schema_epsilon,
    thresholds_for,
)
from egress.models.output import model_output
from enclave.jobstore import Job, transition
from enclave.scenarios import pseudonym_key_id
from enclave.store import DatasetRecord
from policies.desensitize import SampleView, quote_ident
from policies.scenario import Scenario
from sandbox.agent.modelcheck.job import CheckRequest
from sandbox.errors import LimitExceeded, SandboxError
from sandbox.job import JobSpec, Prelude
from shuyu.context import Domain
from shuyu.errors import ServiceError

__all__ = [
    "HOLDOUT_FRACTION",
    "HOLDOUT_SALT_VAR",
    "UNIT_COLUMN",
    "HoldoutSplit",
    "ModelCharge",
    "ModelDeclaration",
    "check_submission",
    "holdout_mask",
    "holdout_split",
    "read_declaration",
    "run_model_job",
    "target_sql",
    "unit_sql",
]

log = logging.getLogger(__name__)

#: Share of the sample's rows the platform holds out from training, to test the model on
#: rows it never saw (membership inference, holdout metrics on the card).
HOLDOUT_FRACTION = 0.2

_EMITTERS = ("emit_model", "emit_table", "emit_metric")


def _invalid(message: str, hint: str) -> ServiceError:
    return ServiceError(message, code="service.model_job_invalid", kind="invalid", hint=hint)


# --- what the job declares ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelDeclaration:
    """The one ``shuyu.emit_model(name, model, target=..., table=...)`` call of a model job."""

    name: str
    table: str
    target: str | None


def _literal(node: ast.expr | None, what: str) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise _invalid(
        f"the {what} of shuyu.emit_model is not a string literal",
        hint=f'write it out, e.g. {what}="income >= 30000"'
        if what == "target"
        else f'write it out, e.g. {what}="residents"',
    )


def read_declaration(code: str, tables: Sequence[str]) -> ModelDeclaration:
    """Read the model job's ``shuyu.emit_model`` call from its source (nothing is run).

    A model job emits exactly one model and nothing else: an emitted table or metric would
    leave unchecked. ``table`` may be left out when the scenario has one dataset.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        raise _invalid(
            "the Python does not parse", hint="run it on the sample locally first"
        ) from None
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _EMITTERS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "shuyu"
    ]
    others = sorted({c.func.attr for c in calls if c.func.attr != "emit_model"})  # type: ignore[attr-defined]
    models = [c for c in calls if c.func.attr == "emit_model"]  # type: ignore[attr-defined]
    if others or len(models) != 1:
        raise _invalid(
            "a model job emits exactly one model and nothing else"
            + (f" (it calls shuyu.{', shuyu.'.join(others)})" if others else ""),
            hint="call shuyu.emit_model once; the card reports the model's metrics on the "
            "platform's holdout, so no shuyu.emit_metric is needed",
        )
    call = models[0]
    args: dict[str, ast.expr] = dict(
        zip(("name", "estimator", "target", "table"), call.args, strict=False)
    )
    args.update({k.arg: k.value for k in call.keywords if k.arg is not None})
    name = _literal(args.get("name"), "name")
    if name is None:
        raise _invalid("shuyu.emit_model has no name", hint='shuyu.emit_model("model", est, ...)')
    table = _literal(args.get("table"), "table")
    if table is None:
        if len(tables) != 1:
            raise _invalid(
                "the scenario has several datasets; the model job must say which one the "
                "model was trained on",
                hint='shuyu.emit_model("model", est, target=..., table="<dataset>")',
            )
        table = tables[0]
    if table not in tables:
        raise _invalid(
            f"table {table!r} is not a dataset of the scenario",
            hint="name one of: " + ", ".join(sorted(tables)),
        )
    return ModelDeclaration(name, table, _literal(args.get("target"), "target"))


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def check_submission(code: str, scenario: Scenario) -> ModelDeclaration:
    """Refuse a malformed Python model job when it is submitted, before it is queued.

    The same checks the run makes before anything runs (:func:`read_declaration`: one
    ``shuyu.emit_model``, literal name/target/table, the table one of the scenario's
    datasets; :func:`target_sql`: the target over the columns the scenario grants), plus the
    imports the sandbox would refuse (``sandbox.agent.restricted.ALLOWED_MODULES``). Raises
    ``service.model_job_invalid`` (kind ``invalid``) naming the problem; returns the
    declaration. The run checks again: the sample view may drop a granted column.
    """
    from sandbox.agent.restricted import ALLOWED_MODULES

    decl = read_declaration(code, sorted(scenario.datasets))
    refused = sorted({n for n in _imports(ast.parse(code)) if n not in ALLOWED_MODULES})
    if refused:
        raise _invalid(
            f"the job imports {', '.join(refused)}, which the sandbox does not allow",
            hint="import only: " + ", ".join(sorted(ALLOWED_MODULES)),
        )
    if decl.target is not None:
        target_sql(decl.target, sorted(scenario.columns_of(decl.table)))
    return decl


_TARGET_NODES = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Tuple,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.And,
    exp.Or,
    exp.Not,
    exp.In,
    exp.Is,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Neg,
)


def target_sql(target: str, columns: Sequence[str]) -> str:
    """The declared target as DuckDB SQL over ``columns``: a column, or an expression of
    columns, literals, comparisons, IN, IS, AND/OR/NOT and arithmetic; nothing else."""
    hint = 'a column ("benefit_type") or an expression of columns ("income >= 30000")'
    try:
        tree = sqlglot.parse_one(target, read="duckdb")
    except sqlglot.errors.ParseError:
        raise _invalid("the model's target does not parse as SQL", hint=hint) from None
    known = set(columns)
    for node in tree.walk():
        if not isinstance(node, _TARGET_NODES):
            raise _invalid(
                f"the model's target uses {type(node).__name__}, which is not allowed", hint=hint
            )
        if isinstance(node, exp.Column) and (node.table or node.name not in known):
            raise _invalid(
                "the model's target names a column the sample view does not have",
                hint="the sample has: " + ", ".join(columns),
            )

    def quote(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.column(node.name, quoted=True)
        return node

    return tree.transform(quote).sql(dialect="duckdb")


# --- the split, as the agent makes it ----------------------------------------------------


def holdout_mask(num_rows: int, fraction: float, seed: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """True for held-out rows: the agent's own rule (``sandbox/agent/api.py``), repeated
    here so that trusted code need not import the in-container agent (a test keeps the two
    equal)."""
    mask: np.ndarray[Any, np.dtype[np.bool_]] = (
        np.random.default_rng(seed).random(num_rows) < fraction
    )
    return mask


# --- the holdout, by privacy unit ----------------------------------------------------------

#: DuckDB variable holding this run's holdout salt while the split is made.
HOLDOUT_SALT_VAR = "shuyu_holdout_salt"
_HELD = "__shuyu_held_out"
#: The check job's per-row unit digest (never in the operator's tables).
UNIT_COLUMN = "__shuyu_unit"
_HOLDOUT_BITS = 32


@dataclass(frozen=True)
class HoldoutSplit:
    """Statements that materialize a sample view split by privacy unit, and the two tables.

    A person's rows are all in training or all held out: the split hashes the dataset's
    privacy unit (its raw value, read inside the trusted prelude) with a salt drawn for this
    run, and holds out the units whose first 32 bits fall below the fraction. With rows
    split one by one, a person with several rows would have some on each side, and the
    held-out rows would look like members: membership inference would be measured too low.
    The same statements run in the operator's sandbox and in the check job, so both see
    the same rows in the same order.
    """

    train: str
    holdout: str
    #: what the sandbox's prelude runs: the two tables have the view's columns only
    statements: tuple[tuple[str, tuple[bytes, ...]], ...] = field(repr=False)
    #: what the check job's prelude runs: the same rows in the same order, plus a salted digest
    #: of each row's unit (:data:`UNIT_COLUMN`), so the attacks can count persons
    trusted_statements: tuple[tuple[str, tuple[bytes, ...]], ...] = field(repr=False)


def unit_sql(rec: DatasetRecord, readable: Sequence[str]) -> str:
    """SQL for the unit a holdout keeps together: the privacy unit, else the first
    identifier, else the whole row (one row, one unit), over the raw columns ``readable``."""
    cols = [c for c in rec.meta.columns if c.name in readable]
    unit = rec.meta.privacy_unit if rec.meta.privacy_unit in readable else None
    if unit is None:
        unit = next((c.name for c in cols if c.role == "identifier"), None)
    if unit is not None:
        return f"CAST({quote_ident(unit)} AS VARCHAR)"
    parts = ", ".join(f"CAST({quote_ident(c)} AS VARCHAR)" for c in sorted(readable))
    return f"concat_ws('|', {parts})"


def holdout_split(
    view: SampleView, key: bytes, unit: str, fraction: float, salt: bytes
) -> HoldoutSplit:
    """The sample view's statements, with the holdout split by ``unit`` (SQL over the raw
    table; see :func:`unit_sql`) folded in. The key and the salt are reset before the
    statements end."""
    if not view.select_sql.startswith("SELECT ") or not 0 < fraction < 1:
        raise ServiceError(
            "the sample view cannot be split",
            code="service.model_holdout",
            hint="report it: the view's SQL is not a plain SELECT",
        )
    digest = f"sha256(getvariable('{HOLDOUT_SALT_VAR}') || encode('h|' || {unit}))"
    threshold = int(fraction * (1 << _HOLDOUT_BITS))
    held = f"CAST('0x' || substr({digest}, 1, 8) AS UBIGINT) < {threshold}"
    split = quote_ident(f"{view.name}__split")
    train, hold = f"{view.name}__train", f"{view.name}__holdout"
    flag = quote_ident(_HELD)

    def make(with_unit: bool) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
        extra = f"{digest} AS {quote_ident(UNIT_COLUMN)}, " if with_unit else ""
        labelled = f"SELECT {held} AS {flag}, {extra}" + view.select_sql[len("SELECT ") :]
        return (
            *((sql, tuple(params)) for sql, params in view.setup(key)),
            (f"SET VARIABLE {HOLDOUT_SALT_VAR} = ?", (salt,)),
            (f"CREATE OR REPLACE TABLE {split} AS {labelled}", ()),
            *((sql, ()) for sql in view.teardown),
            (f"RESET VARIABLE {HOLDOUT_SALT_VAR}", ()),
            (
                f"CREATE OR REPLACE TABLE {quote_ident(train)} AS "  # noqa: S608 - quoted names
                f"SELECT * EXCLUDE ({flag}) FROM {split} WHERE NOT {flag}",
                (),
            ),
            (
                f"CREATE OR REPLACE TABLE {quote_ident(hold)} AS "  # noqa: S608 - quoted names
                f"SELECT * EXCLUDE ({flag}) FROM {split} WHERE {flag}",
                (),
            ),
            (f"DROP TABLE {split}", ()),
        )

    return HoldoutSplit(train, hold, make(False), make(True))


# --- the sample view ---------------------------------------------------------------------


def _view_columns(view: SampleView) -> list[str]:
    """Every source column the view's SQL reads (kept, transformed, or sampled by)."""
    tree = sqlglot.parse_one(view.select_sql, read="duckdb")
    return sorted({c.name for c in tree.find_all(exp.Column)})


def _views(
    domain: Domain, job: Job, scenario: Scenario, records: Mapping[str, DatasetRecord]
) -> tuple[dict[str, SampleView], dict[str, list[str]]]:
    views: dict[str, SampleView] = {}
    columns: dict[str, list[str]] = {}
    for name in records:
        view = domain.scenarios.sample_view(job.scenario_id, name)
        cols = _view_columns(view)
        outside = sorted(set(cols) - set(scenario.columns_of(name)))
        if outside:
            raise ServiceError(
                f"the sample view of {name} reads {len(outside)} column(s) the scenario does "
                "not grant (its privacy unit, to sample by)",
                code="service.sample_scope",
                kind="conflict",
                hint="ask the authority to grant the dataset's privacy unit, or a sample rate of 1",
                details={"columns": outside},
            )
        views[name], columns[name] = view, cols
    return views, columns


def _pseudonym_key(domain: Domain, job: Job, views: Mapping[str, SampleView]) -> bytes:
    """The scenario's sample-view key, when a view needs it; its release is audited."""
    if not any(v.needs_key for v in views.values()):
        return b""
    key_id = pseudonym_key_id(job.scenario_id)
    with domain.engine.begin() as conn:
        key = domain.keys.get(conn, key_id)
        domain.audit.record(
            conn,
            actor="system",
            action="key.release",
            target=job.id,
            details={"key_ids": [key_id], "purpose": "sample_view"},
        )
    return key


def _prelude(
    views: Mapping[str, SampleView], key: bytes, table: str, split: HoldoutSplit
) -> Prelude:
    """Every view's statements; the training table's split, whose training rows only the
    job sees (its held-out rows stay in the prelude's connection, which is closed)."""
    statements: list[tuple[str, tuple[bytes, ...]]] = []
    tables: dict[str, str] = {}
    for name, view in views.items():
        if name == table:
            statements += split.statements
            tables[name] = split.train
        else:
            statements += [(sql, tuple(params)) for sql, params in view.statements(key)]
            tables[name] = view.name
    return Prelude(tuple(statements), tables)


# --- checking ----------------------------------------------------------------------------


def _check_spec(
    spec: JobSpec,
    split: HoldoutSplit,
    view_columns: Sequence[str],
    rec: DatasetRecord,
    decl: ModelDeclaration,
    blob: bytes,
    thresholds: ModelThresholds,
) -> JobSpec:
    """The check job: the same datasets and keys as the training run, the split's trusted
    statements (both sides, with each row's unit digest) and the target over each side; the
    request names the model, the tables and what counts as an identifier."""
    statements = list(split.trusted_statements)
    target = None
    if decl.target is not None:
        expr = target_sql(decl.target, view_columns)
        target = (f"{split.train}__y", f"{split.holdout}__y")
        for side, made in zip((split.train, split.holdout), target, strict=True):
            statements.append(
                (
                    f"CREATE OR REPLACE TABLE {quote_ident(made)} AS "  # noqa: S608 - quoted
                    f"SELECT ({expr}) AS y FROM {quote_ident(side)}",
                    (),
                )
            )
    request = CheckRequest(
        model=blob,
        train=split.train,
        holdout=split.holdout,
        target=target,
        unit_column=UNIT_COLUMN,
        identifiers=tuple(_identifier_columns(rec)),
        thresholds=thresholds,
    )
    tables = {t: t for t in request.tables}
    return dataclasses.replace(
        spec,
        job_id=spec.job_id + "-check",
        kind="check",
        code="",
        prelude=Prelude(tuple(statements), tables),
        check=request.to_json(),
    )


def _identifier_columns(rec: DatasetRecord) -> list[str]:
    """The columns whose values (pseudonyms, in the sample) a model must not carry."""
    meta = rec.meta
    names = {c.name for c in meta.columns if c.role == "identifier"}
    if meta.privacy_unit:
        names.add(meta.privacy_unit)
    return sorted(names)


def _check(scenario: Scenario, job: Job, sb: Any, spec: JobSpec, blob: bytes) -> ModelCheckReport:
    """Run the check job in a cold sandbox and read its report back.

    The sandbox is the only place the sample's rows exist: the worker sends the model and
    the split's statements, and gets back the findings, the card and the model's own ε.
    A check job that fails (a limit, a crash) fails the job like any sandbox failure; a
    report that does not read blocks the model. The ε to charge is checked against the
    model's skops schema, read here without loading the model: a charge does not rest on a
    number written by a container that loaded the operator's file.
    """
    try:
        out = sb.run(spec, warm=False)
    except SandboxError as exc:
        # the operator's code did not run here: say that the checks hit the limit
        raise type(exc)(
            f"the model checks (in a sandbox of their own) stopped: {exc.message}",
            code=exc.code,
            hint=_CHECK_LIMIT_HINT if isinstance(exc, LimitExceeded) else exc.hint,
            details={**exc.details, "stage": "model_checks"},
        ) from None
    try:
        report = read_report(out.reports["report"])
        # Under a DP scenario, a model may pass (or be charged) only with the ε its own
        # schema holds: a report may not drop the DP check's block or understate the charge.
        if scenario.models.dp_training and (report.verdict != "block" or report.dp_epsilon):
            declared = schema_epsilon(blob)
            reported = report.dp_epsilon
            if declared is None or reported is None or not math.isclose(declared, reported):
                raise ModelCheckError(
                    f"the check job reported epsilon {reported}, but the model's schema "
                    f"holds {declared}",
                    hint="report it: the model stays blocked and nothing is charged",
                )
        return report
    except ModelCheckError as exc:
        log.warning("model check report of job %s refused: %s", job.id, exc.message)
        found = ModelFinding("model.checks_failed", "block", exc.message, exc.hint or "")
        return ModelCheckReport.unexamined(blob, [found], rows=(0, 0))


_CHECK_LIMIT_HINT = (
    "the checks load the model, refit it and attack it on up to 5,000 persons a side: "
    "release a smaller model (fewer trees, fewer features), or ask the platform's operators "
    "to raise SHUYU_SANDBOX_MEMORY_BYTES or SHUYU_SANDBOX_TIMEOUT_S"
)


def _thresholds(domain: Domain, scenario: Scenario, job: Job) -> ModelThresholds:
    disclosure = domain.scenarios.disclosure(job.scenario_id)
    return thresholds_for(
        scenario.models,
        min_cell_size=disclosure.min_cell_size,
        max_dp_epsilon=scenario.privacy_budget.per_job_epsilon,
    )


def _not_rows() -> list[Finding]:
    return [
        Finding(
            "row_level",
            "info",
            "a model job releases a model, never rows; the model checks look for stored "
            "training rows (model.stores_training_rows, model.training_row_in_parameters)",
        )
    ]


def _identifiers_in_model() -> list[Finding]:
    return [
        Finding(
            "identifiers",
            "info",
            "the model checks searched the model for the identifying values the job saw "
            "(model.identifier_in_parameters)",
        )
    ]


# --- the privacy charge of a DP model ------------------------------------------------------


@dataclass(frozen=True)
class ModelCharge:
    """What a DP model costs its scenario: pure ε-DP, the ε read from the model itself."""

    scenario_id: str
    job_id: str
    model_sha256: str
    epsilon: float

    def to_card(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario_id,
            "epsilon": self.epsilon,
            "delta": 0.0,
            "rho": self.epsilon * self.epsilon / 2.0,
            "pure": True,
        }


def _refuse_if_spent(domain: Domain, job: Job, scenario: Scenario) -> None:
    """Under a DP scenario, refuse before any key or sandbox when nothing is left to spend."""
    if not scenario.models.dp_training:
        return
    ledger = Ledger(domain.audit, domain.keys)
    status = ledger.status(domain.engine, job.scenario_id, Budget.of(scenario.privacy_budget))
    if status.epsilon_left <= 0:
        exc = BudgetExhausted(
            f"scenario {job.scenario_id!r} has no privacy budget left for a DP model "
            f"(epsilon {status.epsilon_spent:.4g} of {status.epsilon_total:g} spent)",
            hint="ask the authority for a larger budget",
            details={"epsilon_left": 0.0, "epsilon_total": status.epsilon_total},
        )
        ledger.record_denial(
            domain.engine, exc, scenario_id=job.scenario_id, job_id=job.id, actor=job.submitter
        )
        raise exc


# --- the run -----------------------------------------------------------------------------


def run_model_job(
    domain: Domain,
    job: Job,
    scenario: Scenario,
    records: Mapping[str, DatasetRecord],
    sb: Any,
) -> None:
    """Run one authorized, ``running`` Python model job to the gate (see the module doc)."""
    from shuyu.jobs import _release_keys, _spec

    decl = read_declaration(job.code, sorted(records))
    _refuse_if_spent(domain, job, scenario)
    views, columns = _views(domain, job, scenario, records)
    view_columns = [c for c, a in views[decl.table].actions.items() if a != "drop"]
    if decl.target is not None:
        target_sql(decl.target, view_columns)  # a bad target is refused before any key leaves
    rec = records[decl.table]
    unit = rec.meta.privacy_unit
    if unit and unit not in columns[decl.table] and unit in scenario.columns_of(decl.table):
        columns[decl.table] = sorted([*columns[decl.table], unit])  # to hold out by person
    keys = _release_keys(domain, job, columns, records, actor="system")
    pseudonym_key = _pseudonym_key(domain, job, views)
    salt = secrets.token_bytes(16)  # this run's holdout: this worker and its two sandboxes
    split = holdout_split(
        views[decl.table],
        pseudonym_key,
        unit_sql(rec, columns[decl.table]),
        HOLDOUT_FRACTION,
        salt,
    )
    base = _spec(job, job.code, columns, records, keys)
    spec = dataclasses.replace(base, prelude=_prelude(views, pseudonym_key, decl.table, split))
    out = sb.run(spec, warm=False)
    if out.tables or out.metrics or set(out.models) != {decl.name}:
        raise _invalid(
            "the job did not emit exactly the one model it declares",
            hint=f"call shuyu.emit_model({decl.name!r}, model, ...) once and emit nothing else",
        )
    blob = out.models[decl.name]
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, job.id, "computed", actor="system")
    thresholds = _thresholds(domain, scenario, job)
    check = _check_spec(base, split, view_columns, rec, decl, blob, thresholds)
    report = _check(scenario, job, sb, check, blob)
    findings, card, dp_epsilon = egress_findings(report), report.card, report.dp_epsilon
    charge = None
    if scenario.models.dp_training and dp_epsilon is not None:
        charge = ModelCharge(job.scenario_id, job.id, model_sha256(blob), dp_epsilon)
        card = dataclasses.replace(card, dp_charge=charge.to_card())
    output = model_output(decl.name, blob, card, sorted(records))
    with domain.engine.begin() as conn:
        domain.audit.record(
            conn,
            actor="system",
            action="model.checked",
            target=job.id,
            details={
                "where": "check job",
                "image_id": sb.image_id,
                "verdict": report.verdict,
                "blocking": [f.check for f in report.blocking],
                "seconds": round(sum(report.timings_s.values()), 3),
            },
        )
        transition(conn, domain.audit, job.id, "gated", actor="system")
    ledger = Ledger(domain.audit, domain.keys)
    budget = Budget.of(scenario.privacy_budget)

    def pay(conn: Connection) -> None:
        assert charge is not None
        charge_model(
            ledger,
            conn,
            scenario_id=charge.scenario_id,
            job_id=charge.job_id,
            model_sha256=charge.model_sha256,
            epsilon=charge.epsilon,
            budget=budget,
            actor=job.submitter,
        )

    try:
        domain.gate.process(
            job.id,
            [output],
            precomputed={
                decl.name: {
                    "row_level": _not_rows(),
                    "identifiers": _identifiers_in_model(),
                    "model": findings,
                }
            },
            on_hold=pay if charge is not None else None,
        )
    except BudgetExhausted as exc:
        # the gate's transaction rolled back: no report, no held model, no charge
        ledger.record_denial(
            domain.engine, exc, scenario_id=job.scenario_id, job_id=job.id, actor=job.submitter
        )
        raise
