"""The safe model format: skops with an allow-list in, pickle and unknown types out."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from egress.errors import ModelFormatError
from egress.models import (
    EXTRA_TRUSTED_TYPES,
    ModelData,
    check_model,
    dump_model,
    is_pickle,
    load_model_safely,
    schema_types,
)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    return x, (x[:, 0] + rng.normal(size=300) > 0).astype(int)


def _lr() -> LogisticRegression:
    return LogisticRegression().fit(*_data())


def double(x: np.ndarray) -> np.ndarray:  # a custom function: code the host must not import
    return x * 2


def test_a_pickle_submitted_as_a_model_is_refused() -> None:
    x, y = _data()
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        blob = pickle.dumps(_lr(), protocol=protocol)
        assert is_pickle(blob)
        with pytest.raises(ModelFormatError) as err:
            load_model_safely(blob)
        assert err.value.code == "egress.model_format"
        assert "pickle" in err.value.message and "skops" in err.value.hint
    with pytest.raises(ModelFormatError, match="pickle"):
        check_model(pickle.dumps(_lr()), ModelData(x, y), ModelData(x, y), {}, None)


def test_joblib_dumps_plain_and_compressed_are_refused_as_pickle() -> None:
    for compress in (0, 3, 9, ("gzip", 3), ("xz", 3), ("lzma", 3)):
        buffer = io.BytesIO()
        joblib.dump(_lr(), buffer, compress=compress)
        with pytest.raises(ModelFormatError) as err:
            load_model_safely(buffer.getvalue())
        assert err.value.details["format"] == "pickle"


def test_other_bytes_and_bare_zips_are_refused() -> None:
    with pytest.raises(ModelFormatError, match="not a skops file"):
        load_model_safely(b"\x00\x01 not a model")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.pkl", pickle.dumps(_lr()))
    with pytest.raises(ModelFormatError, match=r"schema\.json"):
        load_model_safely(buffer.getvalue())


def test_a_skops_file_with_a_custom_function_is_refused_by_name() -> None:
    model = make_pipeline(FunctionTransformer(double), LogisticRegression()).fit(*_data())
    blob = sio.dumps(model)
    with pytest.raises(ModelFormatError) as err:
        load_model_safely(blob)
    assert err.value.details["untrusted_types"] == [f"{__name__}.double"]
    with pytest.raises(ModelFormatError):
        dump_model(model)  # refused before it could leave, too


def test_a_scenario_can_widen_the_allow_list_for_one_load() -> None:
    model = make_pipeline(FunctionTransformer(double), LogisticRegression()).fit(*_data())
    loaded = load_model_safely(sio.dumps(model), extra_trusted=[f"{__name__}.double"])
    assert loaded.steps[0][1].func is double


def test_oversized_files_are_refused_before_loading() -> None:
    with pytest.raises(ModelFormatError) as err:
        load_model_safely(dump_model(_lr()), max_model_bytes=1000)
    assert err.value.kind == "too_large"


def test_a_released_model_loads_with_plain_skops_and_its_trusted_types(tmp_path: Path) -> None:
    x, y = _data()
    for model in (
        _lr(),
        RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
        HistGradientBoostingClassifier(max_iter=3).fit(x, y),
    ):
        path = tmp_path / "model.skops"
        path.write_bytes(dump_model(model))
        untrusted = sio.get_untrusted_types(file=path)
        assert set(untrusted) <= EXTRA_TRUSTED_TYPES
        loaded = sio.load(path, trusted=untrusted)
        assert np.array_equal(loaded.predict(x), model.predict(x))


def test_the_schema_lists_every_type_a_reviewer_loads() -> None:
    x, y = _data()
    types = schema_types(dump_model(RandomForestClassifier(n_estimators=2).fit(x, y)))
    assert "sklearn.ensemble._forest.RandomForestClassifier" in types
    assert "sklearn.tree._tree.Tree" in types
    assert "numpy.ndarray" in types
