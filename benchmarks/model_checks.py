"""Benchmark: the full model check set next to the training it checks, in the same run.

Trains a logistic regression and a random forest on demo resident rows
(``shuyu.synthetic``), times training, then times ``check_model`` (safe load, structure,
capacity, DP, identifier and training-row scans, trusted refit, both membership attacks,
card). Goal: checks take no longer than 3x training. Then (unless ``--no-sandbox``) it runs
the same checks the way the platform does, as a check job in a Docker sandbox of its own (on
a spare started ahead, as the platform does; ``--cold``: a container started for the job):
the rows written encrypted, the columns decrypted, the trusted prelude split into the two
sides, the checks, the report read back by the host; and the training as an operator's
job. Writes the ``## model_checks`` section of ``benchmarks/RESULTS.md`` (other sections are
left as they are).

    .venv/bin/python benchmarks/model_checks.py            # 100,000 training rows
    .venv/bin/python benchmarks/model_checks.py --rows 20000 --no-write --no-sandbox
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from egress.models import ModelData, ModelThresholds, check_model, dump_model, read_report
from shuyu.synthetic import DISTRICTS, demo_batches

FEATURES = ["age", "income_10k", "benefit_amount_1k", "visits", "male", "district_code"]
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## model_checks"


def demo_frame(rows: int, seed: int = 11) -> pd.DataFrame:
    frame = pa.Table.from_batches(list(demo_batches(rows, seed=seed))).to_pandas()
    rng = np.random.default_rng(seed)
    frame["male"] = (frame["sex"] == "男").astype(np.int64)
    frame["income_10k"] = frame["income"] / 10_000
    frame["benefit_amount_1k"] = frame["benefit_amount"] / 1_000
    codes = {name: i for i, (_, name) in enumerate(DISTRICTS)}
    frame["district_code"] = frame["district"].map(codes).astype(np.int64)
    score = -frame["income"] / 20_000 + frame["age"] / 40 + rng.normal(0, 1.0, len(frame))
    frame["needs_help"] = (score > np.median(score)).astype(np.int64)
    return frame


# The same models as operator code, for the training job in a sandbox.
LOGREG_SOURCE = """
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0))
"""
DP_LOGREG_SOURCE = """
from diffprivlib.models import LogisticRegression, StandardScaler
from sklearn.pipeline import make_pipeline
bounds = ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [120.0, 100.0, 50.0, 100.0, 1.0, 9.0])
model = make_pipeline(
    StandardScaler(epsilon=1.0, bounds=bounds), LogisticRegression(epsilon=1.0, data_norm=10.0)
)
"""
FOREST_SOURCE = """
from sklearn.ensemble import RandomForestClassifier
model = RandomForestClassifier(
    n_estimators={trees}, min_samples_leaf=10, random_state=0, n_jobs=1
)
"""

#: Bounds of FEATURES for the DP model, chosen from what the columns can hold (never from
#: the data: diffprivlib would otherwise compute them from the rows, which is not DP).
DP_BOUNDS = ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [120.0, 100.0, 50.0, 100.0, 1.0, 9.0])


def dp_logistic_regression() -> Any:
    """diffprivlib's scaler and logistic regression, ε = 1 each (2 in total)."""
    from diffprivlib.models import LogisticRegression as DpLogisticRegression
    from diffprivlib.models import StandardScaler as DpStandardScaler

    return make_pipeline(
        DpStandardScaler(epsilon=1.0, bounds=DP_BOUNDS),
        DpLogisticRegression(epsilon=1.0, data_norm=10.0),
    )


class CheckSandbox:
    """The check job as the platform runs it: the benchmark's rows, encrypted on disk, and a
    sandbox of the pinned image for each job (``sandbox/agent/modelcheck``)."""

    DATASET = "bench_models"

    def __init__(
        self, train: pd.DataFrame, holdout: pd.DataFrame, store: Path, *, cold: bool
    ) -> None:
        import secrets

        import pyarrow.parquet as pq

        from enclave.parquet_crypto import encryption_properties
        from sandbox.engine import docker_client
        from sandbox.image import build_image

        columns = [*FEATURES, "needs_help", "id_number", "name"]
        both = pd.concat([train[columns], holdout[columns]], ignore_index=True)
        both["side"] = np.r_[np.zeros(len(train), np.int64), np.ones(len(holdout), np.int64)]
        both["row_no"] = np.arange(len(both), dtype=np.int64)
        self.columns = tuple(both.columns)
        self.keys = {f"{self.DATASET}.{g}": secrets.token_bytes(32) for g in ("footer", "all")}
        folder = store / self.DATASET / "v1"
        folder.mkdir(parents=True)
        props = encryption_properties(self.DATASET, self.keys, {"all": list(self.columns)})
        table = pa.Table.from_pandas(both, preserve_index=False)
        pq.write_table(table, folder / "part-00000.parquet", encryption_properties=props)
        self.store = store
        self.client = docker_client()
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shuyu"
        self.image_id = build_image(self.client, "shuyu-sandbox", cache / "image").image_id
        from sandbox.limits import SandboxLimits
        from sandbox.pool import WarmPool

        cpus = float(os.cpu_count() or 1)
        self.limits = SandboxLimits(memory_bytes=8 * 1024**3, cpus=cpus, timeout_s=900.0)
        self.pool: WarmPool | None = None
        if not cold:
            self.pool = WarmPool(
                self.client, self.image_id, self.limits, store, size=1, idle_s=3600, spares=1
            )
            self.pool.start()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def _run(self, spec: Any) -> tuple[float, Any]:
        """Seconds from the job line to the validated output, and the output: on a spare
        that is ready (what the platform does between jobs), or (``--cold``) in a container
        started for the job."""
        from sandbox.docker_executor import DockerExecutor

        if self.pool is not None:
            while self.pool.spare_count < 1:
                time.sleep(0.1)  # measure a job that finds its spare ready
            start = time.perf_counter()
            out = self.pool.run_fresh(spec)
            return time.perf_counter() - start, out
        executor = DockerExecutor(self.client, self.image_id, self.limits, self.store)
        start = time.perf_counter()
        try:
            executor.prepare(spec)
            executor.start(spec.job_id)
            executor.wait(spec.job_id)
            out = executor.collect(spec.job_id)
        finally:
            executor.cleanup(spec.job_id)
        return time.perf_counter() - start, out

    def train(self, source: str) -> float:
        """Seconds of the same training as an operator's Python job in a sandbox of its own."""
        from sandbox.job import JobSpec, TableGrant

        code = (
            f"{source}\n"
            "df = shuyu.table('people')\n"
            "rows = df[df['side'] == 0]\n"
            f"model.fit(rows[{FEATURES!r}], rows['needs_help'])\n"
            "shuyu.emit_model('m', model)\n"
        )
        spec = JobSpec(
            job_id=f"J-bench-{time.monotonic_ns()}",
            kind="python",
            code=code,
            tables={"people": TableGrant(f"{self.DATASET}/v1", self.columns)},
            keys=self.keys,
        )
        seconds, out = self._run(spec)
        assert set(out.models) == {"m"}
        return seconds

    def check(self, blob: bytes, thresholds: ModelThresholds) -> tuple[float, Any]:
        """Seconds from the job line to the host's reading of the report, and the report."""
        from sandbox.agent.modelcheck.job import CheckRequest
        from sandbox.job import JobSpec, Prelude, TableGrant

        feats = ", ".join(FEATURES)
        side = "SELECT {cols} FROM people WHERE side = {s} ORDER BY row_no"
        statements = tuple(
            (sql, ())
            for sql in (
                f"CREATE TABLE tr AS {side.format(cols=feats + ', id_number, name', s=0)}",
                f"CREATE TABLE ho AS {side.format(cols=feats + ', id_number, name', s=1)}",
                f"CREATE TABLE tr__y AS {side.format(cols='needs_help AS y', s=0)}",
                f"CREATE TABLE ho__y AS {side.format(cols='needs_help AS y', s=1)}",
            )
        )
        request = CheckRequest(
            blob, "tr", "ho", ("tr__y", "ho__y"), None, ("id_number", "name"), thresholds
        )
        spec = JobSpec(
            job_id=f"J-bench-{time.monotonic_ns()}",
            kind="check",
            code="",
            tables={"people": TableGrant(f"{self.DATASET}/v1", self.columns)},
            keys=self.keys,
            prelude=Prelude(statements, {t: t for t in request.tables}),
            check=request.to_json(),
        )
        seconds, out = self._run(spec)
        start = time.perf_counter()
        report = read_report(out.reports["report"])
        return seconds + time.perf_counter() - start, report


def bench(
    name: str,
    model: Any,
    train: ModelData,
    holdout: ModelData,
    ids: dict[str, Any],
    thresholds: ModelThresholds | None = None,
    sandbox: CheckSandbox | None = None,
    source: str = "",
) -> dict[str, Any]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy, via diffprivlib's L-BFGS-B
        model.fit(train.features, train.target)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    blob = dump_model(model)
    dump_s = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        report = check_model(blob, train, holdout, ids, thresholds or ModelThresholds())
    check_s = time.perf_counter() - start
    sandbox_s = inside_s = train_job_s = None
    if sandbox is not None:
        train_job_s = sandbox.train(source)
        sandbox_s, sandboxed = sandbox.check(blob, thresholds or ModelThresholds())
        assert sandboxed.verdict == report.verdict, (sandboxed.verdict, report.verdict)
        inside_s = sum(sandboxed.timings_s.values())
    worst = max(report.membership, key=lambda r: r.advantage)
    row = {
        "model": name,
        "train_s": train_s,
        "dump_s": dump_s,
        "check_s": check_s,
        "ratio": check_s / train_s,
        "sandbox_s": sandbox_s,
        "inside_s": inside_s,
        "train_job_s": train_job_s,
        "bytes": len(blob),
        "verdict": report.verdict,
        "blocks": ", ".join(f.check for f in report.blocking) or "-",
        "advantage": worst.advantage,
        "auc": worst.auc,
        "timings": dict(report.timings_s),
    }
    print(
        f"{name}: train {train_s:.2f}s, checks {check_s:.2f}s ({check_s / train_s:.2f}x), "
        f"dump {dump_s:.2f}s, {len(blob)} bytes, verdict {report.verdict} "
        + ("" if sandbox_s is None else f"check job in a sandbox {sandbox_s:.2f}s, ")
        + f"[{row['blocks']}], advantage {worst.advantage:.3f}, per check {row['timings']}"
    )
    return row


def render(
    rows: list[dict[str, Any]],
    n_train: int,
    n_holdout: int,
    command: str,
    load: float,
    cold: bool = False,
) -> str:
    lines = [
        SECTION,
        "",
        f"`{command}` — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores (shared; load average {load:.1f} at the start: training "
        f"and checks ran under the same load), Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}. Demo resident rows (`shuyu.synthetic`): "
        f"{n_train:,} training, {n_holdout:,} holdout, {len(FEATURES)} features. "
        "Check time = `check_model` (safe load, structure, capacity, DP (with the bounds "
        "check, for the DP model), identifier and "
        "training-row scans, trusted refit, loss-threshold and shadow-model attacks on "
        "5,000 + 5,000 rows, card). Goal: checks ≤ 3× training. *Check job* = the same checks "
        "as the platform runs them: a check job in a sandbox of its own of the pinned image "
        + (
            "(a container started for the job: `--cold`)"
            if cold
            else "(on a spare started ahead with its libraries imported, as the platform does "
            "when one is ready)"
        )
        + ", decrypting the rows, the trusted prelude making both sides, the checks, the "
        "report read back; its wall time from the job line to the host's reading of the "
        "report, with the machine's cores. *Of it, checks* = the checks' own time inside the "
        "sandbox (the rest is the sandbox: start, imports, decryption, prelude). *Training "
        "job* = the same training as an operator's Python job in the same kind of sandbox "
        "(decryption, RestrictedPython, fit, skops): what the check job sits next to in the "
        "product.",
        "",
        "| model | train s | checks s | checks / train | training job s | check job s "
        "| of it, checks s | check job / training job "
        "| skops dump s | model bytes | verdict | blocking findings "
        "| best attack advantage (AUC) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        job = (
            "— | — | — | —"
            if r["sandbox_s"] is None
            else f"{r['train_job_s']:.2f} | {r['sandbox_s']:.2f} | {r['inside_s']:.2f} "
            f"| {r['sandbox_s'] / r['train_job_s']:.2f}×"
        )
        lines.append(
            f"| {r['model']} | {r['train_s']:.2f} | {r['check_s']:.2f} | {r['ratio']:.2f}× "
            f"| {job} "
            f"| {r['dump_s']:.2f} | {r['bytes']:,} | {r['verdict']} | {r['blocks']} "
            f"| {r['advantage']:.3f} ({r['auc']:.3f}) |"
        )
    lines += ["", "Seconds per check:", ""]
    for r in rows:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["timings"].items())
        lines.append(f"- {r['model']}: {parts}")
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace (or append) only the ``## model_checks`` section of RESULTS.md."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    new = pattern.sub(text + "\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    RESULTS.write_text(new.rstrip() + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="training rows")
    parser.add_argument("--trees", type=int, default=100, help="random forest trees")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--no-sandbox", action="store_true", help="skip the check jobs in Docker sandboxes"
    )
    parser.add_argument(
        "--cold", action="store_true", help="start each sandbox for its job (no ready spare)"
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    n_holdout = args.rows // 4
    frame = demo_frame(args.rows + n_holdout)
    train_frame, holdout_frame = frame.iloc[: args.rows], frame.iloc[args.rows :]
    train = ModelData.from_table(train_frame, target="needs_help", features=FEATURES)
    holdout = ModelData.from_table(holdout_frame, target="needs_help", features=FEATURES)
    ids = {"id_number": train_frame["id_number"].tolist(), "name": train_frame["name"].tolist()}
    sandbox = None
    if not args.no_sandbox:
        import tempfile

        store = Path(tempfile.mkdtemp(prefix="shuyu-bench-models-"))
        sandbox = CheckSandbox(train_frame, holdout_frame, store, cold=args.cold)
    rows = [
        bench(
            "logistic regression (scaler + lbfgs)",
            make_pipeline(StandardScaler(), LogisticRegression(C=1.0)),
            train,
            holdout,
            ids,
            sandbox=sandbox,
            source=LOGREG_SOURCE,
        ),
        bench(
            "DP logistic regression (diffprivlib scaler + LR, ε = 2)",
            dp_logistic_regression(),
            train,
            holdout,
            ids,
            ModelThresholds(dp_required=True, max_dp_epsilon=2.0),
            sandbox=sandbox,
            source=DP_LOGREG_SOURCE,
        ),
        bench(
            f"random forest ({args.trees} trees, min_samples_leaf=10)",
            RandomForestClassifier(
                n_estimators=args.trees, min_samples_leaf=10, random_state=0, n_jobs=1
            ),
            train,
            holdout,
            ids,
            sandbox=sandbox,
            source=FOREST_SOURCE.format(trees=args.trees),
        ),
    ]
    command = (
        "python benchmarks/model_checks.py"
        + (f" --rows {args.rows}" if args.rows != 100_000 else "")
        + (f" --trees {args.trees}" if args.trees != 100 else "")
        + (" --no-sandbox" if args.no_sandbox else "")
        + (" --cold" if args.cold else "")
    )
    if sandbox is not None:
        sandbox.close()
    text = render(rows, len(train), len(holdout), command, load, cold=args.cold)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
