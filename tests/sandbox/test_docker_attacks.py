"""Attacks on the real sandbox (Docker engine + the built image). Each asserts what happened.

OS-level attacks (network, fork bomb, scratch) run a raw script in a container made by the
production executor with the production hardening function — only the entrypoint is
swapped, and only here, in the tests. Job-level attacks go through the agent as jobs do.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.docker_executor import DockerExecutor
from sandbox.errors import JobFailed, LimitExceeded
from sandbox.executor import run_job
from sandbox.job import JobOutput, JobSpec
from sandbox.limits import SandboxLimits
from tests.sandbox.conftest import DemoData

pytestmark = pytest.mark.docker

# Writes its findings as the agent would (one Arrow table named result), so the
# production output path accepts them.
_REPORT = """
import json, sys
def report(findings):
    import pyarrow as pa
    from agent.protocol import encode_frame
    from agent.api import ipc_bytes
    t = pa.table({"findings": [json.dumps(findings)]})
    out = sys.stdout.buffer
    out.write(encode_frame(b"H", "", b"{}"))
    out.write(encode_frame(b"T", "result", ipc_bytes(t)) + encode_frame(b"Z"))
    out.flush()
"""


class _CreateWithEntrypoint:
    """Test-only: the real client, except that containers get a given entrypoint."""

    def __init__(self, client: Any, entrypoint: list[str]) -> None:
        self._client, self._entrypoint = client, entrypoint

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def containers(self) -> Any:
        outer = self

        class _Containers:
            def __getattr__(self, name: str) -> Any:
                return getattr(outer._client.containers, name)

            def create(self, *args: Any, **kwargs: Any) -> Any:
                return outer._client.containers.create(
                    *args, entrypoint=outer._entrypoint, **kwargs
                )

        return _Containers()


def _raw(client: Any, image: str, limits: SandboxLimits, demo: DemoData, script: str) -> Any:
    wrapped = _CreateWithEntrypoint(client, ["/opt/venv/bin/python", "-c", _REPORT + script])
    ex = DockerExecutor(wrapped, image, limits, demo.store)  # type: ignore[arg-type]
    return run_job(ex, demo.spec("SELECT 1"))


def _findings(out: JobOutput) -> dict[str, Any]:
    return json.loads(out.result.column("findings")[0].as_py())  # type: ignore[no-any-return]


@pytest.fixture
def executor(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData, small_limits: SandboxLimits
) -> DockerExecutor:
    return DockerExecutor(docker_client, sandbox_image_id, small_limits, demo_data.store)


def test_a_sql_job_reads_only_columns_whose_keys_were_released(
    executor: DockerExecutor, demo_data: DemoData
) -> None:
    out = run_job(executor, demo_data.spec("SELECT avg(age) AS a FROM people"))
    ages = demo_data.table.column("age").to_pylist()
    assert out.result.to_pylist() == [{"a": pytest.approx(sum(ages) / len(ages))}]
    no_key = demo_data.spec(
        "SELECT sum(salary) FROM people",
        columns=("salary",),
        key_ids=demo_data.key_ids_for(["age"]),
    )
    with pytest.raises(JobFailed) as err:
        run_job(executor, no_key)
    assert err.value.code == "sandbox.data.key_missing"


def test_no_network_only_lo_and_tcp_udp_dns_fail(
    docker_client: Any, sandbox_image_id: str, small_limits: SandboxLimits, demo_data: DemoData
) -> None:
    script = """
import os, socket
found = {"interfaces": sorted(os.listdir("/sys/class/net"))}
# Only try to send anything when there is no interface but lo: a broken sandbox must not
# put a packet on any network. 192.0.2.1 is TEST-NET-1, routed nowhere.
if found["interfaces"] == ["lo"]:
    for name, attempt in [
        ("tcp", lambda: socket.create_connection(("192.0.2.1", 80), timeout=2)),
        ("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b"x", ("192.0.2.1", 53))),
        ("dns", lambda: socket.getaddrinfo("example.com", 80)),
    ]:
        try:
            attempt()
            found[name] = "connected"
        except OSError as exc:
            found[name] = type(exc).__name__ + ":" + str(exc.errno)
report(found)
"""
    f = _findings(_raw(docker_client, sandbox_image_id, small_limits, demo_data, script))
    assert f["interfaces"] == ["lo"]
    assert f["tcp"] == "OSError:101"  # ENETUNREACH
    assert f["udp"] == "OSError:101"
    assert f["dns"].startswith("gaierror:")  # no resolver reachable


def test_a_fork_bomb_stops_at_the_pids_limit_and_is_killed(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData
) -> None:
    limits = SandboxLimits(memory_bytes=256 * 1024**2, pids_limit=32, timeout_s=6)
    script = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    t0 = time.monotonic()
    with pytest.raises(LimitExceeded) as err:
        _raw(docker_client, sandbox_image_id, limits, demo_data, script)
    assert err.value.details["limit"] == "pids"
    assert time.monotonic() - t0 < 20
    assert os.fork  # the host still forks:
    assert os.system("true") == 0


def test_filling_scratch_stops_at_the_tmpfs_cap(
    docker_client: Any, sandbox_image_id: str, small_limits: SandboxLimits, demo_data: DemoData
) -> None:
    script = """
import errno
written, err = 0, None
try:
    with open("/tmp/fill", "wb") as f:
        chunk = b"x" * (1 << 20)
        while written < 10 * 1024**3:  # 10 GB
            f.write(chunk); f.flush(); written += len(chunk)
except OSError as exc:
    err = exc.errno
ro = None
try:
    open("/opt/evil", "w")
except OSError as exc:
    ro = exc.errno
report({"written": written, "errno": err, "root_write_errno": ro})
"""
    f = _findings(_raw(docker_client, sandbox_image_id, small_limits, demo_data, script))
    assert f["errno"] == 28  # ENOSPC
    assert f["written"] <= small_limits.tmpfs_bytes
    assert f["root_write_errno"] == 30  # EROFS: the root file system is read-only


def test_a_memory_bomb_is_killed_at_the_memory_limit(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData
) -> None:
    limits = SandboxLimits(memory_bytes=256 * 1024**2, timeout_s=30)
    ex = DockerExecutor(docker_client, sandbox_image_id, limits, demo_data.store)
    with pytest.raises(LimitExceeded) as err:
        run_job(ex, demo_data.spec("import numpy\nx = numpy.ones(10**9)", kind="python"))
    assert err.value.details["limit"] == "memory"


@pytest.mark.parametrize("code", ["x = 0\nwhile True:\n    x = x + 1", "while True:\n    pass"])
def test_cpu_spin_and_infinite_loops_are_killed_at_the_wall_clock(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData, code: str
) -> None:
    limits = SandboxLimits(timeout_s=3, cpus=0.5)
    ex = DockerExecutor(docker_client, sandbox_image_id, limits, demo_data.store)
    spec = demo_data.spec(code, kind="python")
    t0 = time.monotonic()
    with pytest.raises(LimitExceeded) as err:
        run_job(ex, spec)
    assert err.value.details["limit"] == "time"
    assert 3 <= time.monotonic() - t0 < 10
    assert not docker_client.containers.list(all=True, filters={"name": spec.job_id})


def test_output_over_the_limit_is_killed_and_nothing_is_accepted(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData
) -> None:
    limits = SandboxLimits(max_output_bytes=8 * 1024, timeout_s=30)
    ex = DockerExecutor(docker_client, sandbox_image_id, limits, demo_data.store)
    with pytest.raises(LimitExceeded) as err:
        run_job(ex, demo_data.spec("SELECT * FROM people, range(100)"))
    assert err.value.details["limit"] == "output"


def test_the_hardening_is_applied_and_keys_appear_nowhere_outside_stdin(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData, tmp_path: Path
) -> None:
    limits = SandboxLimits(
        memory_bytes=300 * 1024**2, pids_limit=40, cpus=0.5, tmpfs_bytes=8 * 1024**2, timeout_s=20
    )
    ex = DockerExecutor(docker_client, sandbox_image_id, limits, demo_data.store)
    spec: JobSpec = demo_data.spec("x = 0\nwhile True:\n    x = x + 1", kind="python")
    secrets = [s for k in spec.keys.values() for s in (base64.b64encode(k).decode(), k.hex())]
    try:
        ex.prepare(spec)
        ex.start(spec.job_id)
        container = docker_client.containers.get(f"shuyu-job-{spec.job_id}")
        time.sleep(1.0)  # the agent has read its job line and holds the keys in memory
        container.reload()
        attrs = container.attrs
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]  # default seccomp not disabled
        assert host["Memory"] == host["MemorySwap"] == limits.memory_bytes
        assert host["PidsLimit"] == 40
        assert host["NanoCpus"] == 500_000_000
        assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=8388608"}
        assert host["Binds"] == [f"{demo_data.store}:/data:ro"]
        assert host["LogConfig"]["Type"] == "none"
        assert host["Privileged"] is False and not host["Devices"]
        assert attrs["Config"]["User"] == "10001:10001"
        assert attrs["Image"] == ex.image_id  # the image ID, never a tag
        assert "docker.sock" not in json.dumps(attrs)
        # keys: not in inspect, not in any container process's environ or cmdline
        blobs = [json.dumps(attrs)]
        for row in container.top()["Processes"]:
            pid = row[1]
            for part in ("environ", "cmdline"):
                blobs.append(Path(f"/proc/{pid}/{part}").read_bytes().decode(errors="replace"))
        image = docker_client.images.get(sandbox_image_id)
        blobs.append(json.dumps(image.attrs))
        blobs.append(json.dumps(image.history()))
        with pytest.raises(Exception, match=r"(?i)logging driver|configured logging"):
            container.logs()
        for blob in blobs:
            for s in secrets:
                assert s not in blob
    finally:
        ex.cleanup(spec.job_id)
    assert not docker_client.containers.list(all=True, filters={"name": spec.job_id})


def test_a_tag_is_refused_as_an_image(docker_client: Any, demo_data: DemoData) -> None:
    from sandbox.errors import ImageError

    ex = DockerExecutor(docker_client, "shuyu-sandbox:latest", SandboxLimits(), demo_data.store)
    with pytest.raises(ImageError) as err:
        run_job(ex, demo_data.spec("SELECT 1"))
    assert err.value.code == "sandbox.image_not_pinned"


def test_runsc_is_a_setting_away_and_refused_clearly_when_absent(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData
) -> None:
    from sandbox.engine import has_runtime
    from sandbox.errors import EngineUnavailable

    limits = SandboxLimits(runtime="runsc", timeout_s=30)
    ex = DockerExecutor(docker_client, sandbox_image_id, limits, demo_data.store)
    if has_runtime(docker_client, "runsc"):
        out = run_job(ex, demo_data.spec("SELECT count(*) AS n FROM people"))
        assert out.result.to_pylist() == [{"n": 1000}]
    else:
        with pytest.raises(EngineUnavailable) as err:
            run_job(ex, demo_data.spec("SELECT 1"))
        assert err.value.code == "sandbox.runtime_missing"
        pytest.skip("gVisor (runsc) is not installed: refusal checked, run not tested")
