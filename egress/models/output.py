"""A model as a gate output: its skops bytes and its card, held and released as one.

The gate holds every output as a sealed Arrow table (``egress_outputs``), so a model travels
as a one-row table with three columns: the skops file, the card as JSON and the card as
Markdown. The table checks have nothing to count in it (no measures, no cells); the model's
own checks (:func:`egress.models.check_model`) come in as precomputed findings. On release
the row becomes three files (:func:`write_model_files`)::

    data/<name>.skops       the model: load with skops.io.load and its trusted types
    data/<name>.card.json   the model card (egress.models.ModelCard.to_json)
    data/<name>.card.md     the same card for people
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from egress.checks import OutputSpec
from egress.errors import EgressError
from egress.models.safe_format import load_model_safely
from sandbox.agent.modelcheck.card import ModelCard

__all__ = [
    "MODEL_COLUMNS",
    "SavedModel",
    "is_model_table",
    "model_output",
    "model_parts",
    "model_summary_table",
    "save_model_result",
    "write_model_files",
]

MODEL_COLUMNS: tuple[str, ...] = ("model", "card_json", "card_markdown")


def model_output(name: str, blob: bytes, card: ModelCard, datasets: Sequence[str]) -> OutputSpec:
    """The gate output of one model: skops bytes plus its card, mode ``model``."""
    table = pa.table(
        {
            "model": pa.array([blob], pa.binary()),
            "card_json": pa.array([card.to_json()], pa.string()),
            "card_markdown": pa.array([card.to_markdown()], pa.string()),
        }
    )
    return OutputSpec(name=name, table=table, datasets=tuple(datasets), mode="model")


def model_parts(table: pa.Table) -> tuple[bytes, str, str]:
    """(skops bytes, card JSON, card Markdown) of a held model output."""
    if tuple(table.column_names) != MODEL_COLUMNS or table.num_rows != 1:
        raise EgressError(
            "a held model output is not one row of (model, card_json, card_markdown)",
            code="egress.check_input",
            kind="invalid",
            hint="model outputs are made by egress.models.model_output",
        )
    row = table.to_pylist()[0]
    return bytes(row["model"]), str(row["card_json"]), str(row["card_markdown"])


def write_model_files(table: pa.Table, base: Path) -> list[tuple[Path, str]]:
    """Write the model and its card next to ``base``; (path, format) of each file."""
    blob, card_json, card_md = model_parts(table)
    out = [
        (base.with_name(base.name + ".skops"), "skops"),
        (base.with_name(base.name + ".card.json"), "json"),
        (base.with_name(base.name + ".card.md"), "markdown"),
    ]
    out[0][0].write_bytes(blob)
    out[1][0].write_text(card_json + "\n", encoding="utf-8")
    out[2][0].write_text(card_md + "\n", encoding="utf-8")
    return out


def model_summary_table(table: pa.Table) -> pa.Table:
    """What a reviewer reads of a held model, as (item, value) rows: the card's facts and
    metrics, and the file's size and hash, never the skops bytes themselves."""
    blob, card_json, _ = model_parts(table)
    card = json.loads(card_json)
    items: list[tuple[str, str]] = [
        ("class", str(card.get("model_class", ""))),
        ("steps", " -> ".join(card.get("structure", [])[1:])),
        ("learned parameters", str(card.get("parameters", ""))),
        ("training rows", str(card.get("training_rows", ""))),
        ("holdout rows", str(card.get("holdout_rows", ""))),
        ("features", str(card.get("features", ""))),
        *((f"metric {k}", f"{v:.4f}") for k, v in sorted(card.get("metrics", {}).items())),
        ("checks verdict", str(card.get("verdict", ""))),
        ("skops bytes", str(len(blob))),
        ("skops sha256", hashlib.sha256(blob).hexdigest()),
    ]
    return pa.table({"item": [k for k, _ in items], "value": [v for _, v in items]})


def is_model_table(table: pa.Table) -> bool:
    """True for a model job's result: one row of (model, card_json, card_markdown)."""
    return tuple(table.column_names) == MODEL_COLUMNS


@dataclass(frozen=True)
class SavedModel:
    """A released model written to disk, and what to trust when loading it."""

    model_path: Path
    card_json_path: Path
    card_markdown_path: Path
    sha256: str
    size_bytes: int
    #: the file's types beyond skops' defaults, each on the platform's allow-list: exactly
    #: what ``skops.io.load(..., trusted=...)`` needs (never ``trusted=True``)
    trusted_types: tuple[str, ...]

    def load_code(self) -> str:
        """Python that loads the model with skops and this explicit trusted-type list."""
        return (
            "import skops.io as sio\n"
            f"model = sio.load({str(self.model_path)!r}, trusted={list(self.trusted_types)!r})"
        )


def save_model_result(table: pa.Table, model_path: Path) -> SavedModel:
    """Write a released model to ``model_path`` and its card next to it
    (``<stem>.card.json``, ``<stem>.card.md``), after proving that the file loads under the
    platform's type allow-list; returns the paths and the trusted types to load it with."""
    blob, card_json, card_md = model_parts(table)
    load_model_safely(blob)  # refuses a pickle or any type outside EXTRA_TRUSTED_TYPES
    import skops.io as sio

    trusted = tuple(sorted(sio.get_untrusted_types(data=blob)))  # all allow-listed, just checked
    base = model_path.with_suffix("") if model_path.suffix == ".skops" else model_path
    card_json_path = base.with_name(base.name + ".card.json")
    card_md_path = base.with_name(base.name + ".card.md")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(blob)
    card_json_path.write_text(card_json + "\n", encoding="utf-8")
    card_md_path.write_text(card_md + "\n", encoding="utf-8")
    return SavedModel(
        model_path=model_path,
        card_json_path=card_json_path,
        card_markdown_path=card_md_path,
        sha256=hashlib.sha256(blob).hexdigest(),
        size_bytes=len(blob),
        trusted_types=trusted,
    )
