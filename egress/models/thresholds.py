"""The model checks' limits for a scenario (its model policy and minimum cell size).

The limits themselves, with their defaults and reasons, are
:class:`sandbox.agent.modelcheck.thresholds.ModelThresholds`; the check job receives them as
JSON. Only this side reads the scenario.
"""

from __future__ import annotations

import dataclasses

from policies.scenario import ModelPolicy
from sandbox.agent.modelcheck.thresholds import ModelThresholds

__all__ = ["thresholds_for"]


def thresholds_for(
    policy: ModelPolicy, *, min_cell_size: int, **overrides: object
) -> ModelThresholds:
    """Thresholds for a scenario: its model policy plus its effective minimum cell size."""
    base = ModelThresholds(
        min_cell_size=min_cell_size,
        max_membership_advantage=policy.membership_inference_max_advantage,
        dp_required=policy.dp_training,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
