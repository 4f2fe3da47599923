"""The routers of ``/v1``, one module per area."""

from __future__ import annotations

from fastapi import APIRouter

from shuyu.api.routers import (
    audit,
    budgets,
    datasets,
    jobs,
    releases,
    reports,
    requests,
    reviews,
    scenarios,
    users,
)

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    users.router,
    datasets.router,
    scenarios.router,
    requests.router,
    jobs.router,
    reviews.router,
    releases.releases_router,
    releases.products_router,
    budgets.router,
    reports.router,
    audit.router,
)
