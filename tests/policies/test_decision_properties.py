"""Property: the decision never allows a column, dataset, kind, mode or time outside the
scenario — and, with everything in order, it does allow (it is not vacuously strict)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.decision import Actor, DatasetFacts, JobAccess, ScenarioGrant, decide
from policies.personnel import PersonnelRecord
from policies.scenario import Scenario, parse_scenario

DATASETS = ("d0", "d1", "d2", "d3")
COLUMNS = ("a", "b", "c", "d", "e")
KINDS = ("sql", "python")
MODES = ("dp_aggregate", "sdc_aggregate", "model")
ORG = "ORG-OP"
FACTS = {n: DatasetFacts(n, "public", "ORG-PROV") for n in (*DATASETS, "outside")}
FACTS["derived_elsewhere"] = DatasetFacts(
    "derived_elsewhere", "derived", "ORG-X", scenario_id="S-2000-001"
)
OPEN = PersonnelRecord(
    real_name_verified_at=datetime(2000, 1, 1, tzinfo=UTC),
    trained_at=datetime(2000, 1, 1, tzinfo=UTC),
    agreement_ref="NDA",
    agreement_valid_from=datetime(2000, 1, 1, tzinfo=UTC),
    agreement_valid_until=datetime(2100, 1, 1, tzinfo=UTC),
)
ACTOR = Actor("op", ORG, frozenset({"operator"}), True, OPEN)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    names = draw(st.sets(st.sampled_from(DATASETS), min_size=1))
    datasets = {
        n: {"columns": sorted(draw(st.sets(st.sampled_from(COLUMNS), min_size=1)))}
        for n in sorted(names)
    }
    start = draw(st.dates(date(2020, 1, 1), date(2030, 1, 1)))
    days = draw(st.integers(0, 3 * 365 - 1))
    return parse_scenario(
        {
            "id": "S-2026-001",
            "operator_org": ORG,
            "purpose": "a purpose long enough to pass",
            "use_class": "public_welfare",
            "datasets": datasets,
            "job_kinds": sorted(draw(st.sets(st.sampled_from(KINDS), min_size=1))),
            "output_modes": sorted(draw(st.sets(st.sampled_from(MODES), min_size=1))),
            "privacy_budget": {"epsilon": 1.0, "delta": 0.0, "per_job_epsilon": 1.0},
            "validity": {"start": start, "end": start + timedelta(days=days)},
        }
    )


jobs = st.builds(
    JobAccess,
    columns=st.dictionaries(
        st.sampled_from((*DATASETS, "outside", "derived_elsewhere", "missing")),
        st.sets(st.sampled_from((*COLUMNS, "z")), min_size=1),
        min_size=1,
        max_size=4,
    ),
    kind=st.sampled_from((*KINDS, "r")),
    output_mode=st.sampled_from((*MODES, "rows")),
)
instants = st.datetimes(datetime(2019, 1, 1), datetime(2034, 1, 1), timezones=st.just(UTC))
states = st.sampled_from(("active", "active", "active", "suspended", "revoked", "expired"))


def _within(s: Scenario, job: JobAccess, now: datetime, state: str) -> bool:
    return (
        state == "active"
        and s.validity.starts_at <= now < s.validity.ends_at
        and job.kind in s.job_kinds
        and job.output_mode in s.output_modes
        and all(n in s.datasets and set(c) <= s.columns_of(n) for n, c in job.columns.items())
    )


@settings(max_examples=250, deadline=None)
@given(s=scenarios(), job=jobs, now=instants, state=states, approve_all=st.booleans())
def test_never_allows_anything_outside_the_scenario(
    s: Scenario, job: JobAccess, now: datetime, state: str, approve_all: bool
) -> None:
    approved = set(DATASETS) if approve_all else set()
    d = decide(
        actor=ACTOR,
        scenario_id=s.id,
        grant=ScenarioGrant(s, state, s.policy_hash),  # type: ignore[arg-type]
        job=job,
        datasets=FACTS,
        approved_requests=approved,
        fusion_approvals=set(),
        now=now,
    )
    inside = _within(s, job, now, state)
    if d.allowed:
        assert inside
        for name, cols in job.columns.items():
            assert name in s.datasets
            assert set(cols) <= s.columns_of(name)
            assert d.scope[name] == set(cols)
        assert job.kind in s.job_kinds and job.output_mode in s.output_modes
        assert s.validity.starts_at <= now < s.validity.ends_at
    else:
        assert d.reasons, "a denial always says why"
    if inside and approve_all:
        assert d.allowed, [r.message for r in d.reasons]
    if not approve_all and any(n in DATASETS for n in job.columns):
        assert not d.allowed
