"""The request and response models of the HTTP API, shared with the Python SDK.

Plain pydantic, no FastAPI, so :mod:`shuyu.client` parses what the server sends with the
very models the server's OpenAPI document was generated from. Views of domain objects
allow extra fields (``extra="allow"``): a domain package adding a field to its view does
not break an older client, and the fields listed here are the ones the API promises.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from enclave.tables import JOB_STATES, TERMINAL_JOB_STATES

__all__ = [
    "RELEASED_STATES",
    "SETTLED_STATES",
    "TERMINAL_STATES",
    "ActivateUser",
    "AddUser",
    "ApproveFusion",
    "AuditCheckpoint",
    "AuditEntryView",
    "AuditVerification",
    "BudgetView",
    "CommentBody",
    "CreateDataRequest",
    "CreateToken",
    "DataRequestView",
    "DatasetView",
    "DecideDataRequest",
    "Decision",
    "DisableUser",
    "DisclosureView",
    "DryRunReport",
    "FlagView",
    "Health",
    "ImportDataset",
    "IssuedTokenView",
    "JobEvent",
    "JobState",
    "JobView",
    "Me",
    "OutputPreview",
    "ProductView",
    "QuarterlyView",
    "Reason",
    "ReleaseView",
    "ReviewAnswersBody",
    "ReviewDecision",
    "ReviewDetail",
    "ReviewItem",
    "ReviewRecord",
    "ScenarioView",
    "SendBack",
    "SignedManifest",
    "SubmitJob",
    "SupervisionView",
    "TokenView",
    "UserView",
    "View",
]

JobState = Literal[
    "submitted",
    "authorized",
    "running",
    "computed",
    "gated",
    "pending_review",
    "auto_released",
    "approved",
    "released",
    "refused",
    "failed",
    "rejected",
    "cancelled",
    "expired",
]
assert set(JobState.__args__) == set(JOB_STATES)  # type: ignore[attr-defined]
TERMINAL_STATES: frozenset[str] = TERMINAL_JOB_STATES
# States after which a job changes no more without a person acting: a wait ends there.
SETTLED_STATES: frozenset[str] = TERMINAL_STATES | {"pending_review", "approved"}
# States whose result may be downloaded.
RELEASED_STATES: frozenset[str] = frozenset({"released", "auto_released"})


class View(BaseModel):
    """Base of every view of a domain object: known fields typed, extra fields kept."""

    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    version: str


class Me(View):
    user_id: str
    roles: list[str]
    org: str


# --- users and tokens ----------------------------------------------------------------------
class UserView(View):
    id: str
    display_name: str
    org: str
    roles: list[str]
    status: Literal["active", "disabled"]
    missing_steps: list[str] | None = Field(
        default=None, description="Operators: personnel steps (R4.1) still missing."
    )


class AddUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9._-]{1,63}$", examples=["wang.li"])
    org: str = Field(min_length=1, max_length=128)
    roles: list[Literal["authority", "provider", "operator", "reviewer", "auditor"]] = Field(
        min_length=1
    )
    display_name: str = Field(default="", max_length=200)


class ActivateUser(BaseModel):
    """Personnel steps to record (R4.1); a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    real_name_ref: str | None = Field(default=None, max_length=128)
    real_name_verified_on: date | None = None
    training_ref: str | None = Field(default=None, max_length=128)
    trained_on: date | None = None
    agreement_ref: str | None = Field(default=None, max_length=128)
    agreement_signed_on: date | None = None
    agreement_valid_from: date | None = None
    agreement_valid_until: date | None = Field(
        default=None, description="Last day the confidentiality agreement covers."
    )


class DisableUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class TokenView(View):
    id: str
    user_id: str
    label: str
    created_at: str
    expires_at: str
    revoked_at: str | None = None
    state: Literal["valid", "expired", "revoked"]


class CreateToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, description="Default: yourself.")
    ttl_days: int = Field(default=90, ge=1, le=366)
    label: str = Field(default="", max_length=128)


class IssuedTokenView(BaseModel):
    id: str
    user_id: str
    token: str = Field(description="The secret: shown once, never stored by the domain.")
    expires_at: str


# --- scenarios -----------------------------------------------------------------------------
class ScenarioView(View):
    id: str
    title: str
    operator_org: str
    use_class: str
    state: str
    state_since: str | None = None
    state_reason: str = ""
    valid_from: str
    valid_until: str = Field(description="Last day of the term (inclusive).")
    policy_hash: str
    granted_by: str
    granted_at: str
    fusion_approved: list[str] = []
    spec: dict[str, Any] = Field(description="The scenario file as granted.")


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class ApproveFusion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=5, max_length=2000)


# --- data requests -------------------------------------------------------------------------
class DataRequestView(View):
    id: str
    scenario_id: str
    dataset: str
    provider_org: str
    requested_by: str
    note: str
    state: Literal["pending", "approved", "refused"]
    created_at: str
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None


class CreateDataRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario_id: str = Field(min_length=1, max_length=64)
    dataset: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=2000)


class DecideDataRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000, description="Required when refusing.")


# --- datasets ------------------------------------------------------------------------------
class DatasetView(View):
    """A dataset version in the catalog: metadata and sizes, never a value."""

    id: str
    name: str
    version: int
    status: Literal["active", "deleted"]
    kind: str
    owner_org: str
    grade: str
    num_rows: int
    num_bytes: int
    content_sha256: str
    unit_bound_verified: bool
    created_at: str
    deleted_at: str | None = None
    meta: dict[str, Any] = Field(description="The validated META (catalog fields, data items).")


class ImportDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="Table name used in SQL.")
    source: str = Field(
        min_length=1,
        max_length=512,
        description="File name (CSV, Parquet, Arrow) in $SHUYU_HOME/inbox on the domain host.",
    )
    meta: dict[str, Any] = Field(description="The catalog entry (META.yaml as JSON).")


# --- jobs ----------------------------------------------------------------------------------
class SubmitJob(BaseModel):
    """A job: SQL or Python code run under one authorized scenario."""

    model_config = ConfigDict(extra="forbid")

    scenario_id: str = Field(min_length=1, max_length=64, examples=["S-2026-014"])
    kind: Literal["sql", "python"] = "sql"
    code: str = Field(min_length=1, max_length=1_000_000, description="The SQL or Python.")
    output_mode: Literal["dp_aggregate", "sdc_aggregate", "model"] = "dp_aggregate"
    epsilon: float | None = Field(
        default=None, gt=0, le=100, description="Privacy budget to spend (dp_aggregate)."
    )
    accuracy: float | None = Field(
        default=None,
        gt=0,
        description="Instead of epsilon: the wanted 95% error bound; the gate picks epsilon.",
    )


class JobView(View):
    id: str
    scenario_id: str
    submitter: str
    kind: str
    output_mode: str
    code_sha256: str
    params: dict[str, Any]
    state: JobState
    error_code: str | None = None
    error_message: str | None = None
    created_at: str
    updated_at: str


class JobEvent(BaseModel):
    """One server-sent event of ``/v1/jobs/{job_id}/events``: the job's state changed."""

    job_id: str
    state: JobState
    error_code: str | None = None
    updated_at: str
    terminal: bool
    job: JobView | None = Field(
        default=None, description="The whole job at this event (as GET /v1/jobs/{job_id})."
    )


class DryRunReport(View):
    """What a job would read and cost, and whether it would be allowed; nothing runs."""

    scenario_id: str
    allowed: bool
    decision: dict[str, Any] = Field(description="The access decision with every reason.")
    columns_read: dict[str, list[str]]
    dp: dict[str, Any] | None = Field(
        default=None, description="DP jobs: rewritten SQL, cost, expected error per column."
    )
    budget_left_before: dict[str, Any] | None = None
    budget_left_after: dict[str, Any] | None = None
    repeat: bool | None = Field(
        default=None, description="True when the same query was answered before (free)."
    )


class BudgetView(View):
    """A scenario's privacy budget; spending is approximate zCDP shown as (ε, δ)."""

    scenario_id: str
    title: str = ""
    epsilon_total: float
    delta_total: float
    epsilon_spent: float
    delta_spent: float
    rho_spent: float
    epsilon_left: float
    delta_left: float
    charges: int


# --- reviews -------------------------------------------------------------------------------
class ReviewItem(View):
    job_id: str
    scenario_id: str
    submitter: str
    output_mode: str
    verdict: Literal["blocked", "needs_review", "clean"] | None = None
    approvals: int
    required: int
    own_job: bool = Field(description="You submitted it, so you may not review it.")
    approved_by_you: bool
    waiting_since: str


class ReviewAnswersBody(BaseModel):
    """The four questions of R1.3; ``true`` means "yes, there is this risk"."""

    model_config = ConfigDict(extra="forbid")

    beyond_scope: bool = Field(description="(a) Beyond the authorized purpose or scope?")
    direct_exposure: bool = Field(description="(b) Direct exposure of raw/sensitive data?")
    model_attack: bool = Field(description="(c) Privacy attacks on models or algorithms?")
    other_risk: bool = Field(description="(d) Any other data-security risk?")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: ReviewAnswersBody
    reason: str = Field(default="", max_length=4000, description="Required to reject.")


class SendBack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=4000)


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000)


class OutputPreview(View):
    name: str
    mode: str
    measures: dict[str, str]
    columns: list[str]
    rows: list[list[Any]] = Field(description="The first rows of the held aggregates.")
    total_rows: int


class ReviewRecord(View):
    reviewer: str
    action: str
    answers: dict[str, bool] | None = None
    text: str
    at: str


class ReviewDetail(View):
    job_id: str
    job: dict[str, Any] = Field(description="The job, with its SQL or code.")
    scenario: dict[str, Any] | None = Field(description="Id, title, purpose, datasets.")
    report: dict[str, Any] | None = Field(description="The egress report (no values).")
    required_reviewers: int
    approvals: list[str]
    reviews: list[ReviewRecord]
    questions: dict[str, str]
    outputs: list[OutputPreview]


class ReviewDecision(View):
    job_id: str
    state: str
    approvals: int
    required: int
    release_id: str | None = None


class ReleaseView(View):
    id: str
    job_id: str
    scenario_id: str
    manifest_sha256: str
    public_key: str
    released_by: str
    auto: bool = Field(description="True when a clean DP output skipped review by policy.")
    created_at: str
    product: dict[str, Any] | None = Field(
        default=None, description="Its product registry entry (R5.5)."
    )


class SignedManifest(BaseModel):
    manifest: dict[str, Any] = Field(description="manifest.json: sources, checks, files.")
    signature: str = Field(description="Ed25519 over manifest.json's exact bytes, hex.")
    public_key: str


class ProductView(View):
    release_id: str
    name: str
    summary: str
    formats: list[str]
    scenario_id: str
    operator_org: str
    sources: list[dict[str, Any]] = Field(description="Datasets, versions, providers, dates.")
    status: Literal["registered", "withdrawn"]
    registered_at: str | None = None
    withdrawn_at: str | None = None


# --- supervision and reports ----------------------------------------------------------------
class FlagView(View):
    kind: str = Field(description="over_scope, over_purpose, unused_dataset, abnormal_rate...")
    subject: str
    message: str


class SupervisionView(View):
    scenario_id: str
    operator_org: str
    state: str
    generated_at: str
    window_days: int
    decisions_allowed: int
    decisions_denied: int
    denied_by_category: dict[str, int]
    flags: list[FlagView]


class QuarterlyView(View):
    scenario_id: str
    quarter: str
    operator_org: str
    use_class: str
    period_start: str
    period_end: str
    jobs_by_state: dict[str, int]
    jobs_submitted: int
    jobs_run: int
    datasets_used: dict[str, int]
    decisions_denied: int
    outputs_released: int
    outputs_rejected: int
    epsilon_spent: float | None = None
    delta_spent: float | None = None
    fee_per_job_cny: str | None = None
    fee_cny: str
    notes: list[str]


class DisclosureView(View):
    scenario_id: str
    title: str
    operator_org: str
    purpose: str
    use_class: str
    datasets: dict[str, list[str]]
    providers: list[str]
    valid_from: str
    valid_until: str
    state: str


# --- audit ---------------------------------------------------------------------------------
class AuditEntryView(BaseModel):
    seq: int
    ts: str
    actor: str
    action: str
    target: str
    result: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None = None
    reason: str = ""


class AuditCheckpoint(BaseModel):
    seq: int
    hash: str
    ts: str
    signature: str
    public_key: str
