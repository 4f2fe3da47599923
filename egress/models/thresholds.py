"""The limits the model checks apply, with defaults, units in the names and a line of why.

The orchestrator builds them from the scenario (``ModelThresholds.from_policy``); tests and
benchmarks use the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.scenario import ModelPolicy

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

    @classmethod
    def from_policy(
        cls, policy: ModelPolicy, *, min_cell_size: int, **overrides: object
    ) -> ModelThresholds:
        """Thresholds for a scenario: its model policy plus its effective minimum cell size."""
        base = cls(
            min_cell_size=min_cell_size,
            max_membership_advantage=policy.membership_inference_max_advantage,
            dp_required=policy.dp_training,
        )
        return cls(**{**base.__dict__, **overrides})
