"""Desensitized sample views (R1.5, 004 §4(3)): sampled, pseudonymized, generalized rows.

Models are trained and validated on a *sample* of *desensitized* data. Given a dataset's
column metadata and a scenario's sample settings, :func:`sample_view` returns the DuckDB SQL
that builds such a view inside the sandbox. What happens to each column follows its grade
and role, as set in ``policies/defaults/desensitize.yaml``.

**Keyed pseudonyms without an HMAC builtin.** DuckDB has ``sha256`` but no HMAC. A plain
``sha256(key || value)`` is a length-extendable construction, so instead the view computes
real HMAC-SHA256 (RFC 2104) in SQL:

    HMAC(K, m) = SHA256((K' xor opad) || SHA256((K' xor ipad) || m))

The two 64-byte pad blocks are derived from the scenario's 256-bit pseudonym key on the
trusted side (:func:`pseudonym_key_variables`) and bound to DuckDB variables through a
prepared parameter, so key material is never part of any SQL text. The result equals
Python's ``hmac.new(key, m, sha256)`` bit for bit (tested), so trusted code outside the
sandbox can compute the same pseudonym (:func:`pseudonym`) when it must, e.g. to check a
released model for memorised identifiers.

**Why the view is materialized and the key reset.** Whoever can evaluate the HMAC can
pseudonymize a *known* identity (an ID number they already hold) and find that person's
rows — a dictionary attack. So operator code must never be able to call it: the trusted
agent runs :meth:`SampleView.statements`: it binds the key, materializes the view into a table
(:meth:`SampleView.materialize_sql`), runs :attr:`SampleView.teardown` (which resets the
variables), and only then hands the connection to operator code, which
reads the materialized table and never the raw relation. A Python UDF holding the key in a
closure would have the same exposure for as long as it is registered, and is much slower.

**Sampling.** A unit (person, enterprise) is in the sample when the first 32 bits of
``HMAC(K, "s|" || unit)`` fall below ``rate * 2**32``: deterministic for a scenario, so the
same unit is in or out of every dataset and every run (joins on the sample stay whole), and
unpredictable without the key, so an operator cannot steer who is sampled. Pseudonyms use
the prefix ``"p|"`` so the two uses of the key never collide. Rows whose unit is NULL are
never sampled.

The per-scenario key is a data key (``KeyService.create(conn, scenario_id, "pseudonym")``)
destroyed when the scenario ends: after that no one can link its pseudonyms again.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from policies.errors import PolicyError
from policies.grades import GradePolicy, load_grades
from policies.scenario import SampleSettings

__all__ = [
    "ACTIONS",
    "COLUMN_ROLES",
    "DEFAULT_DESENSITIZE_PATH",
    "PSEUDONYM_IPAD_VAR",
    "PSEUDONYM_OPAD_VAR",
    "Action",
    "DesensitizeRules",
    "SampleColumn",
    "SampleView",
    "load_desensitize_rules",
    "parse_desensitize_rules",
    "pseudonym",
    "pseudonym_key_variables",
    "quote_ident",
    "sample_view",
    "unit_sampled",
]

DEFAULT_DESENSITIZE_PATH = Path(__file__).parent / "defaults" / "desensitize.yaml"

Action = Literal["keep", "pseudonymize", "generalize", "drop"]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
ColumnRole = Literal["identifier", "quasi_identifier", "sensitive", "attribute"]
COLUMN_ROLES: tuple[str, ...] = ColumnRole.__args__  # type: ignore[attr-defined]

PSEUDONYM_IPAD_VAR = "shuyu_pseudonym_ipad"
PSEUDONYM_OPAD_VAR = "shuyu_pseudonym_opad"
_BLOCK_BYTES = 64  # SHA-256 block size
_SAMPLE_BITS = 32


# --- rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesensitizeRules:
    """Per grade, the action for each column role. A grade not listed drops everything."""

    by_grade: Mapping[str, Mapping[str, Action]]
    source: str = "defaults"

    def action(self, grade: str, role: str) -> Action:
        return self.by_grade.get(grade, {}).get(role, "drop")


def parse_desensitize_rules(
    data: Any, grades: GradePolicy, source: str = "<memory>"
) -> DesensitizeRules:
    """Validate a rules document against the grade policy; every problem named at once."""
    if not isinstance(data, Mapping) or not isinstance(data.get("grades"), Mapping):
        raise _rules_error(source, ["grades: a mapping of grade -> role actions is required"])
    problems: list[str] = []
    out: dict[str, dict[str, Action]] = {}
    for grade, roles in data["grades"].items():
        path = f"grades.{grade}"
        if grade not in grades.levels:
            problems.append(f"{path}: unknown grade; grades are {', '.join(grades.levels)}")
            continue
        if not isinstance(roles, Mapping):
            problems.append(f"{path}: must map each role to an action")
            continue
        for extra in sorted(set(roles) - set(COLUMN_ROLES)):
            problems.append(f"{path}.{extra}: unknown role; roles are {', '.join(COLUMN_ROLES)}")
        actions: dict[str, Action] = {}
        for role in COLUMN_ROLES:
            act = roles.get(role)
            if act is None:
                problems.append(f"{path}.{role}: required")
            elif act not in ACTIONS:
                problems.append(f"{path}.{role}: {act!r} is not one of {', '.join(ACTIONS)}")
            else:
                actions[role] = cast(Action, act)
        if grades.get(grade).sample_desensitization:
            for role in ("identifier", "quasi_identifier"):
                if actions.get(role) == "keep":
                    problems.append(
                        f"{path}.{role}: grade {grade} requires desensitized samples "
                        "(grades.yaml), so it may not keep "
                        f"{role.replace('_', '-')}s; pseudonymize, generalize or drop"
                    )
        out[str(grade)] = actions
    if problems:
        raise _rules_error(source, problems)
    return DesensitizeRules(out, source)


def load_desensitize_rules(
    path: Path | None = None, grades: GradePolicy | None = None
) -> DesensitizeRules:
    """The rules of ``path``, or the shipped defaults, checked against ``grades``."""
    p = path or DEFAULT_DESENSITIZE_PATH
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(
            f"desensitization rules file {p} not found",
            code="policy.desensitize_missing",
            hint="give an existing file, or omit the path to use the defaults",
        ) from exc
    except yaml.YAMLError as exc:
        raise _rules_error(str(p), [f"not valid YAML ({exc})"]) from exc
    return parse_desensitize_rules(
        data, grades or load_grades(), "defaults" if path is None else str(p)
    )


def _rules_error(source: str, problems: list[str]) -> PolicyError:
    return PolicyError(
        f"desensitization rules {source} are invalid: " + "; ".join(problems),
        code="policy.desensitize_invalid",
        hint="fix the named entries; policies/defaults/desensitize.yaml shows every field",
        details={"errors": problems},
    )


# --- keyed pseudonyms and sampling (reference implementations) ---------------------------


def pseudonym_key_variables(key: bytes) -> dict[str, bytes]:
    """The two HMAC pad blocks to bind as DuckDB variables (via a prepared parameter)."""
    if len(key) > _BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    block = key.ljust(_BLOCK_BYTES, b"\0")
    return {
        PSEUDONYM_IPAD_VAR: bytes(b ^ 0x36 for b in block),
        PSEUDONYM_OPAD_VAR: bytes(b ^ 0x5C for b in block),
    }


def pseudonym(key: bytes, value: object) -> str:
    """What the view computes for ``value`` (its text form): HMAC-SHA256 hex of ``p|value``."""
    return hmac.new(key, b"p|" + _text(value).encode(), hashlib.sha256).hexdigest()


def unit_sampled(key: bytes, unit: object, rate: float) -> bool:
    """What the view decides for a unit: first 32 bits of HMAC(``s|unit``) below the rate."""
    digest = hmac.new(key, b"s|" + _text(unit).encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big") < _threshold(rate)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # DuckDB's CAST(BOOLEAN AS VARCHAR)
    return str(value)


def _threshold(rate: float) -> int:
    return int(rate * (1 << _SAMPLE_BITS))


def _hmac_sql(message_sql: str) -> str:
    inner = f"sha256(getvariable('{PSEUDONYM_IPAD_VAR}') || encode({message_sql}))"
    return f"sha256(getvariable('{PSEUDONYM_OPAD_VAR}') || unhex({inner}))"


# --- the view ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleColumn:
    """What the view needs to know of one catalog column."""

    name: str
    type: str  # int | float | string | date | timestamp | bool (the catalog's types)
    role: str  # identifier | quasi_identifier | sensitive | attribute
    grade: str


@dataclass(frozen=True)
class SampleView:
    """The SQL of one sample view, and the statements that must run around it."""

    name: str
    select_sql: str
    actions: Mapping[str, Action]  # column -> what the view does to it (drop included)
    needs_key: bool  # False when no column is pseudonymized and every unit is sampled
    teardown: tuple[str, ...] = field(default=())  # run before operator code gets the session

    def view_sql(self) -> str:
        return f"CREATE OR REPLACE TEMP VIEW {quote_ident(self.name)} AS {self.select_sql}"

    def materialize_sql(self, table: str | None = None) -> str:
        """Copy the view into a table, so the key can be reset before operator code runs."""
        return f"CREATE OR REPLACE TABLE {quote_ident(table or self.name)} AS {self.select_sql}"

    def setup(self, key: bytes) -> list[tuple[str, list[bytes]]]:
        """(statement, parameters) binding the key's pad blocks; [] when no key is needed."""
        if not self.needs_key:
            return []
        pads = pseudonym_key_variables(key)
        return [(f"SET VARIABLE {var} = ?", [value]) for var, value in pads.items()]

    def statements(self, key: bytes, table: str | None = None) -> list[tuple[str, list[bytes]]]:
        """Everything the trusted agent runs, in order: bind key, materialize, reset key."""
        return [
            *self.setup(key),
            (self.materialize_sql(table), []),
            *((sql, []) for sql in self.teardown),
        ]


def quote_ident(name: str) -> str:
    """A DuckDB identifier, quoted so no column name can end the identifier early."""
    return '"' + name.replace('"', '""') + '"'


def _generalize(col: SampleColumn, q: str, s: SampleSettings) -> str | None:
    if col.type in ("int", "float"):
        w = s.age_band_years
        lo = f"CAST(floor({q} / {w}) * {w} AS BIGINT)"
        hi_offset = w - 1 if col.type == "int" else w
        return f"CAST({lo} AS VARCHAR) || '-' || CAST({lo} + {hi_offset} AS VARCHAR)"
    if col.type == "string":
        n = s.region_prefix_length
        return f"left(CAST({q} AS VARCHAR), {n})" if n > 0 else None
    if col.type in ("date", "timestamp"):
        return f"CAST(date_trunc('{s.date_precision}', {q}) AS DATE)"
    if col.type == "bool":
        return q
    return None  # a type we do not know how to coarsen is dropped, not kept


def sample_view(
    *,
    source: str,
    columns: Sequence[SampleColumn],
    scope: Collection[str],
    settings: SampleSettings,
    rules: DesensitizeRules,
    unit_column: str | None = None,
    name: str | None = None,
) -> SampleView:
    """The desensitized, sampled view of relation ``source`` for one scenario.

    Only columns in ``scope`` (the scenario's columns for the dataset) can appear. The unit
    to sample by is ``unit_column`` (the catalog's privacy unit), else the first identifier,
    else the whole row.
    """
    exprs: list[str] = []
    actions: dict[str, Action] = {}
    keyed = False
    for col in columns:
        q = quote_ident(col.name)
        act: Action = rules.action(col.grade, col.role) if col.name in scope else "drop"
        expr: str | None
        if act == "keep":
            expr = q
        elif act == "pseudonymize":
            expr = _hmac_sql("'p|' || CAST(" + q + " AS VARCHAR)")
            keyed = True
        elif act == "generalize":
            expr = _generalize(col, q, settings)
            if expr is None:
                act = "drop"
        else:
            expr = None
        actions[col.name] = act
        if expr is not None:
            exprs.append(f"{expr} AS {q}")
    if not exprs:
        raise PolicyError(
            f"the sample view of {source} would have no columns",
            code="policy.sample_empty",
            hint="the scenario's columns for this dataset are all dropped by the "
            "desensitization rules of their grades",
        )
    where = ""
    if settings.rate < 1:
        names = {c.name for c in columns}
        unit = unit_column if unit_column in names else None
        if unit is None:
            unit = next((c.name for c in columns if c.role == "identifier"), None)
        if unit is not None:
            unit_sql = f"CAST({quote_ident(unit)} AS VARCHAR)"
        else:
            unit_sql = (
                "concat_ws('|', "
                + ", ".join(f"CAST({quote_ident(c.name)} AS VARCHAR)" for c in columns)
                + ")"
            )
        digest = _hmac_sql("'s|' || " + unit_sql)
        bits = f"CAST('0x' || substr({digest}, 1, 8) AS UBIGINT)"
        where = f" WHERE {bits} < {_threshold(settings.rate)}"
        keyed = True
    # Every identifier is quoted by quote_ident and every literal is ours (numbers, fixed
    # function names); no value from a user or from the data is spliced in.
    select = f"SELECT {', '.join(exprs)} FROM {quote_ident(source)}{where}"  # noqa: S608
    teardown: tuple[str, ...] = ()
    view_name = name or f"{source}_sample"
    if keyed:
        teardown = (
            f"RESET VARIABLE {PSEUDONYM_IPAD_VAR}",
            f"RESET VARIABLE {PSEUDONYM_OPAD_VAR}",
        )
    return SampleView(view_name, select, actions, keyed, teardown)
