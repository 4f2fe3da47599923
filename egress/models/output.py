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
from pathlib import Path

import pyarrow as pa

from egress.checks import OutputSpec
from egress.errors import EgressError
from egress.models.card import ModelCard

__all__ = [
    "MODEL_COLUMNS",
    "model_output",
    "model_parts",
    "model_summary_table",
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
