"""The limits the model checks apply, with defaults, units in the names and a line of why.

The host builds them from the scenario (``egress.models.thresholds_for``) and sends them to
the check job as JSON (:meth:`ModelThresholds.from_json` reads them back); tests and
benchmarks use the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelThresholds"]


@dataclass(frozen=True)
class ModelThresholds:
    """Limits for one model check run. Every field has a default that is safe on its own."""

    #: Smallest number of training rows a tree leaf may rest on (the scenario's minimum
    #: cell size): a leaf is a released cell whose value is an aggregate of its rows.
    min_cell_size: int = 10
    #: Learned parameters per training row above this need a second look (capacity to
    #: memorise grows with free parameters per row).
    max_params_per_row: float = 0.1
    #: Largest membership-inference advantage (max TPR - FPR) a released model may show.
    max_membership_advantage: float = 0.1
    #: An advantage at or above this fraction of the limit is "near" it: review.
    membership_review_fraction: float = 0.5
    #: Relative parameter distance to the trusted refit up to which the model is the refit
    #: (solver tolerance, BLAS rounding); above it a reviewer looks.
    refit_review_rtol: float = 1e-3
    #: Relative parameter distance above which the model carries something the declared
    #: training does not produce: block.
    refit_block_rtol: float = 0.05
    #: The scenario demands differentially private training.
    dp_required: bool = False
    #: Largest ε one DP model may spend (None: only the scenario's budget limits it).
    max_dp_epsilon: float | None = None
    #: Rows per side (members, non-members) the membership attacks score; more rows lower
    #: the noise floor, cost grows linearly.
    attack_max_rows: int = 5000
    #: Numeric identifiers smaller than this (or than the training row count) are not
    #: searched in parameters: counts and indices in a model legitimately take such values.
    min_numeric_identifier: float = 1e5
    #: Largest uncompressed skops file accepted (bytes); refuses zip bombs.
    max_model_bytes: int = 2 * 1024**3
    #: Seed for every random choice the checks make (sampling, shadow model, attack model).
    seed: int = 0

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, raw: object) -> ModelThresholds:
        """Thresholds from a check job's request; unknown fields or wrong types refuse."""
        if not isinstance(raw, dict):
            raise ValueError("thresholds must be an object")
        base = cls()
        values: dict[str, object] = {}
        for name, value in raw.items():
            if name not in base.__dict__:
                raise ValueError(f"unknown threshold {name}")
            default = base.__dict__[name]
            if isinstance(default, bool) or isinstance(value, bool):
                ok = isinstance(value, bool) and isinstance(default, bool)
            elif default is None or isinstance(default, float):
                ok = value is None or isinstance(value, int | float)
            else:
                ok = isinstance(value, type(default))
            if not ok:
                raise ValueError(f"threshold {name} has the wrong type")
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]
