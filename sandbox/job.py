"""What the host hands a sandbox (a :class:`JobSpec`) and what it accepts back (a
:class:`JobOutput`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from sandbox.agent.protocol import PROTOCOL_VERSION
from sandbox.limits import SandboxLimits

__all__ = ["JobKind", "JobOutput", "JobSpec", "Prelude", "TableGrant"]

#: ``check`` runs no operator code: the trusted model checks (``agent/modelcheck``) on one
#: emitted model, next to the decrypted sample; only their report comes back.
JobKind = Literal["sql", "python", "check"]


@dataclass(frozen=True)
class TableGrant:
    """One table a job may read: a dataset version's folder under the store, and columns."""

    path: str  # "<dataset id>/v<version>", relative to the store (mounted at /data)
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Prelude:
    """Trusted statements the agent runs before a Python job's code, and the tables they
    make, which replace the job's tables (``sandbox/agent/prelude.py``). The R1.5 sample
    view: bind the pseudonym key, materialize the sample, reset the key. Parameters may be
    key material: never printed."""

    statements: tuple[tuple[str, tuple[bytes, ...]], ...] = field(repr=False)
    tables: Mapping[str, str]  # job table -> table the statements made

    def to_json(self) -> dict[str, object]:
        return {
            "statements": [
                [sql, [base64.b64encode(p).decode() for p in params]]
                for sql, params in self.statements
            ],
            "tables": dict(self.tables),
        }


@dataclass(frozen=True)
class JobSpec:
    """One job for a sandbox. ``keys`` are the released data keys; never printed."""

    job_id: str
    kind: JobKind
    code: str
    tables: Mapping[str, TableGrant]
    keys: Mapping[str, bytes] = field(repr=False)
    operator: str = ""  # warm sessions are per (operator, scenario)
    scenario_id: str = ""
    holdout: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # table -> (frac, seed)
    prelude: Prelude | None = field(default=None, repr=False)  # Python jobs: the sample view
    check: Mapping[str, object] | None = field(default=None, repr=False)  # check jobs' request

    def job_line(self, limits: SandboxLimits) -> bytearray:
        """The JSON line the agent reads on stdin (a bytearray, so the caller can zero it)."""
        body = {
            "v": PROTOCOL_VERSION,
            "job_id": self.job_id,
            "kind": self.kind,
            "code": self.code,
            "datasets": {
                name: {"path": g.path, "columns": list(g.columns)}
                for name, g in self.tables.items()
            },
            "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()},
            "limits": {"memory_bytes": limits.memory_bytes, "threads": limits.threads},
            "holdout": {n: {"fraction": f, "seed": s} for n, (f, s) in self.holdout.items()},
        }
        if self.prelude is not None:
            body["prelude"] = self.prelude.to_json()
        if self.check is not None:
            body["check"] = dict(self.check)
        return bytearray(json.dumps(body).encode() + b"\n")


@dataclass(frozen=True)
class JobOutput:
    """What a sandbox returned, validated: Arrow tables, numbers, skops models."""

    tables: Mapping[str, pa.Table]
    metrics: Mapping[str, float] = field(default_factory=dict)
    models: Mapping[str, bytes] = field(default_factory=dict)
    #: a check job's report (JSON bytes), under the name ``report``
    reports: Mapping[str, bytes] = field(default_factory=dict)
    output_bytes: int = 0

    @property
    def result(self) -> pa.Table:
        """A SQL job's one result table."""
        return self.tables["result"]
