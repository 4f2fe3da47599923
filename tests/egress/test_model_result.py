"""Saving a released model (``shuyu job result`` / ``Client.save_model``): the .skops file and
its card on disk, and the explicit trusted types that load it; a pickle is never written."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from egress.errors import ModelFormatError
from egress.models import EXTRA_TRUSTED_TYPES, ModelCard, dump_model
from egress.models.output import is_model_table, model_output, save_model_result
from shuyu.client import Client


def _card() -> ModelCard:
    return ModelCard(
        model_class="x",
        structure=[],
        hyperparameters={},
        parameters=3,
        training_rows=80,
        holdout_rows=20,
        features=2,
        metrics={},
        checks=[],
        verdict="review",
        dp_epsilon=None,
        dp_classes=[],
    )


def _released(blob: bytes) -> pa.Table:
    return model_output("m", blob, _card(), ["residents"]).table


def _dp_model_blob() -> bytes:
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.models import LogisticRegression as DpLogisticRegression

    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(size=(200, 2)), -2, 2)
    model = DpLogisticRegression(epsilon=1.0, data_norm=3.0, accountant=BudgetAccountant())
    return dump_model(model.fit(x, x[:, 0] > 0))


def test_a_released_dp_model_is_written_with_its_card_and_loads_with_the_listed_types(
    tmp_path: Path,
) -> None:
    blob = _dp_model_blob()
    saved = save_model_result(_released(blob), tmp_path / "out" / "J-1.skops")
    assert saved.model_path.read_bytes() == blob
    assert saved.card_json_path == tmp_path / "out" / "J-1.card.json"
    assert saved.card_markdown_path.read_text(encoding="utf-8").startswith("# Model card")
    assert "diffprivlib.models.logistic_regression.LogisticRegression" in saved.trusted_types
    assert set(saved.trusted_types) <= EXTRA_TRUSTED_TYPES
    model = sio.load(saved.model_path, trusted=list(saved.trusted_types))
    assert model.epsilon == 1.0
    code = saved.load_code()
    assert "trusted=True" not in code and repr(list(saved.trusted_types)) in code
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # the printed instructions work as printed
    assert type(namespace["model"]).__name__ == "LogisticRegression"


def test_a_pickle_in_a_model_row_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2))
    blob = pickle.dumps(LogisticRegression().fit(x, x[:, 0] > 0))
    with pytest.raises(ModelFormatError):
        save_model_result(_released(blob), tmp_path / "m.skops")
    assert list(tmp_path.iterdir()) == []


def test_only_a_model_row_is_a_model_table() -> None:
    assert is_model_table(_released(_dp_model_blob()))
    assert not is_model_table(pa.table({"district": ["a"], "n": [12]}))


def test_the_sdk_saves_a_model_to_a_file_named_after_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _released(_dp_model_blob())
    client = Client.__new__(Client)
    monkeypatch.setattr(client, "result", lambda job: table, raising=False)
    monkeypatch.chdir(tmp_path)
    saved = client.save_model("J-7")
    assert saved.model_path == Path("J-7.skops") and (tmp_path / "J-7.card.json").exists()
