"""Disclosure and reversibility checks on table outputs: pure functions, findings out.

=================  ==========================================================  ========
check              finds                                                       severity
=================  ==========================================================  ========
``row_level``      output rows that single out source records                  block
``identifiers``    identifier / privacy-unit values or names, plain or encoded  block
``canary``         planted canary values                                       block
``small_cells``    cells on fewer than ``min_cell_units`` units (+ secondary)  block
``dominance``      (n, k) and p% rules on sums and means                       review
``rounding``       counts off the scenario's rounding base                     block
``differencing``   cells within ``min_cell_units`` units of an earlier cell     block
=================  ==========================================================  ========

:func:`run_checks` runs all of them on one output. The two that need the raw data
(``row_level``, and building the ``identifiers`` index) take their data through narrow
interfaces (:class:`SourceRows`, :class:`IdentifierIndex`), so the orchestrator can run
them inside the sandbox as trusted code and pass their results in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from egress.checks.differencing import DifferencingIndex, EarlierOutput, check_differencing
from egress.checks.dominance import check_dominance
from egress.checks.findings import (
    SEVERITIES,
    CheckOutcome,
    Finding,
    Fix,
    Severity,
)
from egress.checks.identifiers import IdentifierIndex, check_identifiers
from egress.checks.inputs import (
    CellStats,
    ColumnInfo,
    Contributions,
    DatasetInfo,
    MeasureKind,
    OutputMode,
    OutputSpec,
    OutputStats,
    Thresholds,
)
from egress.checks.rounding import check_rounding, round_counts
from egress.checks.rowlevel import DuckDBSource, SourceRows, check_row_level
from egress.checks.small_cells import check_small_cells, secondary_suppression

__all__ = [
    "CHECKS",
    "SEVERITIES",
    "CellStats",
    "CheckOutcome",
    "ColumnInfo",
    "Contributions",
    "DatasetInfo",
    "DifferencingIndex",
    "DuckDBSource",
    "EarlierOutput",
    "Finding",
    "Fix",
    "IdentifierIndex",
    "MeasureKind",
    "OutputMode",
    "OutputSpec",
    "OutputStats",
    "Severity",
    "SourceRows",
    "Thresholds",
    "check_differencing",
    "check_dominance",
    "check_identifiers",
    "check_rounding",
    "check_row_level",
    "check_small_cells",
    "round_counts",
    "run_checks",
    "secondary_suppression",
]

CHECKS: tuple[str, ...] = (
    "row_level",
    "identifiers",
    "small_cells",
    "dominance",
    "rounding",
    "differencing",
)


def run_checks(
    output: OutputSpec,
    thresholds: Thresholds,
    *,
    identifiers: IdentifierIndex | None = None,
    history: DifferencingIndex | None = None,
    sources: Mapping[str, SourceRows] | None = None,
    precomputed: Mapping[str, Sequence[Finding]] | None = None,
) -> list[CheckOutcome]:
    """Every check on one output, in a fixed order.

    ``precomputed`` maps a check name to findings computed elsewhere (the sandbox runs
    ``row_level`` next to the data); such a check counts as run. A check that cannot run
    (no source rows, no identifier index) is reported as skipped, and the report turns
    that into a review finding: nothing is waved through because a check was missing.
    """
    pre = precomputed or {}
    out: list[CheckOutcome] = []

    if "row_level" in pre:
        out.append(CheckOutcome("row_level", True, tuple(pre["row_level"]), "ran in the sandbox"))
    elif sources is not None:
        out.append(
            CheckOutcome("row_level", True, tuple(check_row_level(output, sources, thresholds)))
        )
    else:
        out.append(CheckOutcome("row_level", False, note="no access to the source rows"))

    if "identifiers" in pre:
        out.append(CheckOutcome("identifiers", True, tuple(pre["identifiers"])))
    elif identifiers is not None:
        out.append(CheckOutcome("identifiers", True, tuple(check_identifiers(output, identifiers))))
    else:
        out.append(CheckOutcome("identifiers", False, note="no identifier index"))

    exempt = "DP output: noise covers it" if output.is_dp else ""
    out.append(
        CheckOutcome("small_cells", True, tuple(check_small_cells(output, thresholds)), exempt)
    )
    out.append(CheckOutcome("dominance", True, tuple(check_dominance(output, thresholds)), exempt))
    out.append(CheckOutcome("rounding", True, tuple(check_rounding(output, thresholds))))
    note = exempt or ("" if history is not None else "no earlier releases to compare with")
    out.append(
        CheckOutcome(
            "differencing", True, tuple(check_differencing(output, history, thresholds)), note
        )
    )
    # Checks that only trusted code next to the data can run (a model's checks) come in
    # whole; their findings count like any other's.
    for name, found in pre.items():
        if name not in CHECKS:
            out.append(CheckOutcome(name, True, tuple(found), "ran next to the data"))
    return out
