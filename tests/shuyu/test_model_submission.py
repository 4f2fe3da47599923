"""Submit-time validation of Python model jobs (``check_submission``): a bad declaration is
refused with ``service.model_job_invalid`` and a message naming the problem, before a job is
queued; a good one returns what it declares."""

from __future__ import annotations

from datetime import date

import pytest

from policies.errors import ShuyuError
from policies.scenario import Scenario, parse_scenario
from shuyu.demo import TRAIN_SCRIPT, _scenario_yaml
from shuyu.model_jobs import check_submission


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return parse_scenario(_scenario_yaml(date.today()))


def _refused(code: str, scenario: Scenario) -> ShuyuError:
    with pytest.raises(ShuyuError) as exc:
        check_submission(code, scenario)
    assert exc.value.code == "service.model_job_invalid"
    assert exc.value.hint
    return exc.value


def test_the_demo_training_script_passes_and_its_declaration_is_returned(
    scenario: Scenario,
) -> None:
    decl = check_submission(TRAIN_SCRIPT.read_text(encoding="utf-8"), scenario)
    assert (decl.name, decl.table, decl.target) == ("income_model", "residents", "income >= 30000")


def test_a_dp_job_importing_diffprivlib_passes(scenario: Scenario) -> None:
    code = (
        "from diffprivlib.models import LogisticRegression\n"
        "df = shuyu.table('residents')\n"
        "m = LogisticRegression(epsilon=0.5, data_norm=2.0).fit(df[['visits']], df['income'] > 1)\n"
        "shuyu.emit_model('m', m, target='income > 1')\n"
    )
    assert check_submission(code, scenario).target == "income > 1"


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("shuyu.table('residents')\n", "exactly one model"),
        (
            "m = 1\nshuyu.emit_model('a', m, target='income > 1')\n"
            "shuyu.emit_model('b', m, target='income > 1')\n",
            "exactly one model",
        ),
        (
            "m = 1\nshuyu.emit_metric('auc', 0.7)\nshuyu.emit_model('a', m, target='income > 1')\n",
            "shuyu.emit_metric",
        ),
        ("t = 'income > 1'\nshuyu.emit_model('a', 1, target=t)\n", "target of shuyu.emit_model"),
        ("shuyu.emit_model('a', 1, target='income >', table='residents')\n", "does not parse"),
        ("shuyu.emit_model('a', 1, target='salary > 1')\n", "names a column"),
        ("shuyu.emit_model('a', 1, target='upper(sex) = 1')\n", "not allowed"),
        ("shuyu.emit_model('a', 1, target='income > 1', table='firms')\n", "not a dataset"),
        ("def broken(:\n", "does not parse"),
        ("import os\nshuyu.emit_model('a', 1, target='income > 1')\n", "imports os"),
        (
            "from sklearn.datasets import fetch_openml\n"
            "shuyu.emit_model('a', 1, target='income > 1')\n",
            "sklearn.datasets",
        ),
    ],
)
def test_a_bad_model_job_is_refused_at_submit_with_what_is_wrong(
    code: str, says: str, scenario: Scenario
) -> None:
    assert says in _refused(code, scenario).message
