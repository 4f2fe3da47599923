"""The composition root: builds each part of the domain from one validated Settings.

Lower layers receive plain values (an engine, a key service, a path), never the settings;
this is the one place that knows which implementation of each boundary is in use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from egress.checks import IdentifierIndex
from egress.gate import Gate
from egress.ledger import Ledger
from enclave.audit import AuditLog
from enclave.db import load_all_tables, make_engine, migrate
from enclave.decisions import AccessService
from enclave.derived import DerivedTables
from enclave.errors import KeyMaterialError
from enclave.identity import IdentityService
from enclave.jobwatch import JobWatch
from enclave.keys import KeyService, Kms, LocalFileKms, create_master_key_file
from enclave.requests import RequestService
from enclave.scenarios import ScenarioService
from enclave.signing import Signer, create_key_file
from enclave.store import DatasetStore
from shuyu.cache import TtlCache
from shuyu.errors import SettingsError

if TYPE_CHECKING:
    from shuyu.sandboxes import Sandboxes
from shuyu.settings import Settings, load_settings

__all__ = ["Domain", "init_domain", "open_domain"]


@dataclass
class Domain:
    """Everything one running shuyu needs, built lazily from its settings."""

    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.resolved_database_url)
            self.job_watch.install(self._engine)
        return self._engine

    @cached_property
    def identifier_indexes(self) -> TtlCache[IdentifierIndex]:
        """Keyed hashes of each dataset version's identifying values (derived data: a
        disclosure-checked job rebuilds them in a cold sandbox when missing)."""
        return TtlCache(max_items=8, ttl_s=600.0)

    @cached_property
    def job_watch(self) -> JobWatch:
        """Wakes this process's waiters (job runner, event streams) when a job changes."""
        return JobWatch()

    @cached_property
    def kms(self) -> Kms:
        if self.settings.kms == "local":
            return LocalFileKms(self.settings.master_key_path)
        raise SettingsError(
            "kms=vault is not available in this build",
            hint="use SHUYU_KMS=local, or install a build with the Vault transit client",
        )

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(self.kms)

    @cached_property
    def signer(self) -> Signer:
        return Signer.from_file(self.settings.signing_key_path)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.signer, self.settings.audit_checkpoint_every)

    @cached_property
    def store(self) -> DatasetStore:
        """Encrypted datasets: import, trusted read, delete (enclave.store)."""
        return DatasetStore(self.engine, self.keys, self.audit, self.settings.store_dir)

    # --- identity and authorization (issue 4): enclave.identity, .scenarios, .requests
    @cached_property
    def identity(self) -> IdentityService:
        """Users, roles, personnel records, tokens; ``authenticate(token) -> User``."""
        return IdentityService(self.engine, self.audit)

    @cached_property
    def scenarios(self) -> ScenarioService:
        """Scenario grants and states; ``.hooks.on_scenario_closed(fn)`` for sandboxes.

        Revocation and expiry also destroy the gate's held, unreleased outputs of the
        scenario's jobs (R6.3): they are sealed under a domain-wide key, so shredding the
        scenario's own keys would not reach them.
        """
        service = ScenarioService(self.engine, self.audit, self.keys, self.identity)
        service.hooks.on_scenario_closed(self._drop_unreleased_outputs)
        return service

    def _drop_unreleased_outputs(self, event: Any) -> None:
        if not event.final:
            return
        from egress.gate_tables import egress_outputs
        from enclave.tables import jobs

        with self.engine.begin() as conn:
            held = [
                r.id
                for r in conn.execute(
                    sa.select(jobs.c.id).where(
                        jobs.c.scenario_id == event.scenario_id,
                        jobs.c.state.not_in(["released", "auto_released"]),
                    )
                )
            ]
            dropped = conn.execute(
                egress_outputs.delete().where(egress_outputs.c.job_id.in_(held))
            ).rowcount
            self.audit.record(
                conn,
                actor="system",
                action="scenario.shred_outputs",
                target=event.scenario_id,
                details={"jobs": len(held), "outputs_destroyed": int(dropped or 0)},
            )

    @cached_property
    def requests(self) -> RequestService:
        return RequestService(self.engine, self.audit, self.identity, self.scenarios)

    @cached_property
    def access(self) -> AccessService:
        """``authorize_job(user, scenario, JobAccess) -> Decision``; audits every decision."""
        return AccessService(self.engine, self.audit, self.identity, self.scenarios)

    @cached_property
    def derived(self) -> DerivedTables:
        """Row-level results kept for a scenario: ``keep(...)`` writes them via the store."""
        return DerivedTables(
            self.audit, self.scenarios, engine=self.engine, keys=self.keys, store=self.store
        )

    @cached_property
    def gate(self) -> Gate:
        """The egress gate: reports, held outputs, reviews, releases (egress.gate)."""
        return Gate(
            self.engine,
            self.keys,
            self.audit,
            self.signer,
            self.settings.releases_dir,
            authorize=self.identity.require,
        )

    @cached_property
    def ledger(self) -> Ledger:
        """The privacy ledger: DP charges and released answers (egress.ledger)."""
        return Ledger(self.audit, self.keys)

    @cached_property
    def sandboxes(self) -> Sandboxes:
        """Docker: the recorded image, limits from settings, the warm pool (shuyu.sandboxes)."""
        from shuyu.sandboxes import Sandboxes

        return Sandboxes(self)

    def close(self) -> None:
        if "sandboxes" in self.__dict__:
            self.sandboxes.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def init_domain(settings: Settings | None = None) -> Domain:
    """Create the home, the master and signing keys (0600, never overwritten), the schema."""
    settings = settings or load_settings()
    home = settings.home
    if settings.master_key_path.exists():
        raise KeyMaterialError(
            f"a domain already exists at {home} (master key {settings.master_key_path})",
            code="enclave.key_exists",
            kind="conflict",
            hint="use it as it is, or set SHUYU_HOME to a new folder to start another domain",
        )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    create_master_key_file(settings.master_key_path)
    create_key_file(settings.signing_key_path)
    settings.store_dir.mkdir(exist_ok=True, mode=0o700)
    domain = Domain(settings)
    migrate(domain.engine)
    load_all_tables()
    with domain.engine.begin() as conn:
        domain.audit.record(
            conn,
            actor="system",
            action="domain.init",
            target=str(home),
            details={"public_key": domain.signer.public_key_hex},
        )
    return domain


def open_domain(settings: Settings | None = None) -> Domain:
    """Open an existing domain; a missing one is a clear error, not an empty database."""
    settings = settings or load_settings()
    if not settings.master_key_path.exists():
        raise KeyMaterialError(
            f"no shuyu domain at {settings.home}",
            code="enclave.no_domain",
            kind="not_found",
            hint="run `shuyu init` first, or set SHUYU_HOME to the domain's folder",
        )
    domain = Domain(settings)
    migrate(domain.engine)
    return domain
