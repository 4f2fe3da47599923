"""Differential privacy for SQL: the operator writes an aggregate query, the gate releases
noisy answers with 95% intervals and charges the scenario's privacy budget.

The orchestrator's contract (three calls, in this order)::

    from egress.dp import compile_query, apply_noise
    from egress.ledger import Ledger, Budget

    compiled = compile_query(
        sql,                       # the operator's DuckDB SELECT
        catalog_for,               # name -> DatasetCatalog (DatasetCatalog.from_meta(meta))
        epsilon=1.0,               # or accuracy=10 / accuracy={"n": 10, "avg_age": 0.5}
        delta=1e-7,                # 0 = pure DP (discrete Laplace); > 0 = zCDP (Gaussian)
        seed=job_seed,             # reproducible per-unit reservoir; None = from the SQL
    )                              # -> CompiledQuery; raises QueryRefused (nothing ran)
    compiled.report                # DryRunReport: rewritten SQL, ε/δ/ρ, per-column 95% error
    ledger.check(engine, scenario_id, compiled.cost, budget)   # early refusal, optional

    exact = sandbox.run(compiled.rewritten_sql)                # pa.Table, exact, bounded
    result = apply_noise(compiled, exact)                      # -> NoisyResult
    release = ledger.charge_and_record(                        # one transaction: check,
        engine, scenario_id=..., job_id=..., compiled=compiled,  # charge, store, audit
        result=result, budget=Budget.of(scenario.privacy_budget), actor=user_id,
    )                              # -> Release(.result, .charged, .paid_by, .status);
                                   # raises BudgetExhausted (nothing charged or stored)

``ledger.lookup(engine, scenario_id, compiled.query_key)`` returns an earlier release of the same
query (same normalized SQL, data versions and privacy parameters) before anything runs;
``charge_and_record`` also returns it, uncharged, if two identical jobs race.

The sandbox must expose each dataset as a table named as in the catalog (``residents``)
and return the rewritten query's result as it is; the exact table is never shown.

Modules: :mod:`~egress.dp.analyze` (allowed SQL, flattening), :mod:`~egress.dp.intervals`
(bounds of expressions), :mod:`~egress.dp.rewrite` (bounded SQL and sensitivities),
:mod:`~egress.dp.mechanisms` (OpenDP), :mod:`~egress.dp.accountant` (zCDP ↔ (ε, δ)),
:mod:`~egress.dp.accuracy` (intervals), :mod:`~egress.dp.quantiles`,
:mod:`~egress.dp.compiler` (:func:`compile_query`), :mod:`~egress.dp.release`
(:func:`apply_noise`). The design is written up in ``docs/dp.md``.
"""

from __future__ import annotations

from egress.dp.accountant import Cost, SpentBudget, epsilon_from_rho, rho_from_epsilon
from egress.dp.catalog import ColumnSpec, DatasetCatalog
from egress.dp.compiler import (
    ColumnReport,
    CompiledQuery,
    DryRunReport,
    compile_query,
)
from egress.dp.release import NoisyResult, apply_noise

__all__ = [
    "ColumnReport",
    "ColumnSpec",
    "CompiledQuery",
    "Cost",
    "DatasetCatalog",
    "DryRunReport",
    "NoisyResult",
    "SpentBudget",
    "apply_noise",
    "compile_query",
    "epsilon_from_rho",
    "rho_from_epsilon",
]
