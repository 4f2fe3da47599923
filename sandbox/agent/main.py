"""The agent's loop: read a job line, answer with frames, (in loop mode) wait for the next.

    python -m agent [--loop | --preload] [--data /data]

One-shot (the default, a cold sandbox): answer one job and exit — 0 when it succeeded,
2 when it failed with an error code. ``--preload``: the same, but every library a Python or
check job needs is imported before the hello, so a sandbox started ahead of its job (a
spare, ``sandbox.pool``) answers at once. Loop mode (a warm sandbox): answer jobs until
stdin closes; decrypted tables stay in memory between the jobs of the session.

The real stdout is kept only for frames: file descriptors 1 and 2 are pointed at
/dev/null before anything else runs, so nothing a library prints can reach the host or
corrupt the stream; data keys live in this process's memory only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from .errors import AgentError
from .protocol import PROTOCOL_VERSION, encode_frame, hello_payload

__all__ = ["main", "serve"]

EXIT_OK = 0
EXIT_JOB_FAILED = 2


def _protect_stdout() -> BinaryIO:
    """Keep the real stdout for frames only; everything else goes to /dev/null."""
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    sys.stderr = sys.stdout
    return os.fdopen(out_fd, "wb", buffering=0)


class Agent:
    """Holds what a warm session keeps between jobs: one DuckDB, the decrypted columns."""

    def __init__(self, data_root: Path, keep_tables: bool) -> None:
        from .data import TableCache

        self._root = data_root
        self._keep = keep_tables
        self._con: Any = None
        # Cold: one job's Arrow tables. Warm: made with the DuckDB that keeps the columns.
        self._cache: Any = None if keep_tables else TableCache(data_root)

    def _session(self, limits: dict[str, Any], need_sql: bool) -> tuple[Any, Any]:
        """The DuckDB (made by the first job that needs it, with its limits) and the cache."""
        if self._con is None and (need_sql or self._keep):
            from .data import TableCache
            from .sql import connect

            self._con = connect(limits.get("memory_bytes"), limits.get("threads"), held=self._keep)
            if self._keep:
                self._cache = TableCache(self._root, self._con)
        return self._con, self._cache

    def handle(self, line: bytes) -> list[bytes]:
        """The frames answering one job line (ending in Z, or a single E)."""
        try:
            return [*self._run(line), encode_frame(b"Z")]
        except AgentError as exc:
            return [encode_frame(b"E", exc.code)]
        except MemoryError:
            return [encode_frame(b"E", "limit.memory")]
        except Exception:
            return [encode_frame(b"E", "agent.internal")]
        finally:
            if not self._keep:
                self._cache.clear()

    def after_answer(self) -> None:
        """Work a warm session does between jobs, once the answer is on its way."""
        if self._keep and self._cache is not None:
            self._cache.compress()

    def _run(self, line: bytes) -> list[bytes]:
        from .crypto import KeyRing, decode_keys
        from .data import parse_datasets
        from .prelude import parse_prelude, run_prelude

        try:
            job = json.loads(line)
            if not isinstance(job, dict) or job.get("v") != PROTOCOL_VERSION:
                raise ValueError
            kind, code = job["kind"], job["code"]
            if kind not in ("sql", "python", "check") or not isinstance(code, str):
                raise ValueError
            if kind == "check" and code:
                raise ValueError  # a check job runs trusted checks, never code it is sent
            check = _check_request(job) if kind == "check" else None
            ring = KeyRing(decode_keys(job.get("keys") or {}))
            limits = job.get("limits") or {}
            holdout = job.get("holdout") or {}
        except (ValueError, KeyError, TypeError):
            raise AgentError("job.invalid") from None
        prelude = parse_prelude(job.get("prelude"))
        if (prelude is not None and kind == "sql") or (kind == "check" and prelude is None):
            raise AgentError("job.invalid")
        specs = parse_datasets(job.get("datasets") or {})
        con, cache = self._session(limits, need_sql=kind == "sql")
        try:
            if kind == "sql":
                # Warm: views over the held columns; cold: the decrypted Arrow tables.
                views = cache.views(specs, ring) if cache.keeps else cache.load(specs, ring)
            else:
                tables = cache.load(specs, ring)
        finally:
            ring.clear()
            del job
        if kind == "sql":
            return self._sql(con, code, views)
        if prelude is not None:
            # Trusted statements (the R1.5 sample view) in a connection of their own; the
            # job sees only the tables they made, and the key goes with the connection.
            tables = run_prelude(prelude, tables, limits.get("memory_bytes"), limits.get("threads"))
            del prelude
        if check is not None:
            return self._check(check, tables)
        return self._python(code, tables, holdout)

    def _check(self, request: Any, tables: dict[str, Any]) -> list[bytes]:
        from .modelcheck.job import report_bytes, run_check

        if not set(request.tables) <= set(tables):
            raise AgentError("job.invalid")
        report = run_check(request, tables)
        return [encode_frame(b"R", "report", report_bytes(report))]

    def _sql(self, con: Any, sql: str, tables: dict[str, Any]) -> list[bytes]:
        from .api import ipc_bytes
        from .sql import run_sql

        result = run_sql(con, sql, tables)
        return [encode_frame(b"T", "result", ipc_bytes(result))]

    def _python(
        self, source: str, tables: dict[str, Any], holdout_raw: dict[str, Any]
    ) -> list[bytes]:
        from .api import Artifacts, HoldoutSpec, JobApi
        from .restricted import run_python

        try:
            holdout = {
                str(name): HoldoutSpec(float(spec["fraction"]), int(spec["seed"]))
                for name, spec in holdout_raw.items()
            }
        except (KeyError, TypeError, ValueError, AttributeError):
            raise AgentError("job.invalid") from None
        artifacts = Artifacts()
        run_python(source, JobApi(tables, holdout, artifacts))
        return artifacts.frames


def _check_request(job: dict[str, Any]) -> Any:
    from .modelcheck.job import parse_request

    return parse_request(job.get("check"))


def _preload(python_too: bool, checks_too: bool = False) -> None:
    """Import what jobs need before saying hello, so a warm sandbox answers at once."""
    import duckdb  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from . import crypto, data, sql  # noqa: F401

    if python_too:
        import pandas  # noqa: F401
        import sklearn  # noqa: F401

        from . import api, prelude, restricted  # noqa: F401
    if checks_too:
        import skops.io  # noqa: F401

        from .modelcheck import job  # noqa: F401


def serve(
    stdin: BinaryIO, stdout: BinaryIO, data_root: Path, loop: bool, preload: bool = False
) -> int:
    """Answer jobs from ``stdin`` on ``stdout``; returns the process exit code."""
    _preload(python_too=loop or preload, checks_too=preload)
    stdout.write(encode_frame(b"H", "", hello_payload()))
    agent = Agent(data_root, keep_tables=loop)
    status = EXIT_OK
    while True:
        line = stdin.readline()
        if not line.strip():
            return status
        frames = agent.handle(line)
        del line
        stdout.write(b"".join(frames))
        stdout.flush()
        status = EXIT_JOB_FAILED if frames[-1][:1] == b"E" else EXIT_OK
        if not loop:
            return status
        agent.after_answer()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agent", add_help=False)
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--preload", action="store_true")
    parser.add_argument("--data", default="/data")
    args = parser.parse_args(argv)
    out = _protect_stdout()
    warnings.simplefilter("ignore")
    sys.exit(serve(sys.stdin.buffer, out, Path(args.data), args.loop, args.preload))
