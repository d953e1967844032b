"""``pyengine update``: limits and the restart policy of a running or stopped container, written to
its live cgroup (read back here from the kernel's files) and to its record; daemonless and
through the daemon (POST /containers/{id}/update)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv

CGROUP = Path("/sys/fs/cgroup")


@pytest.fixture(params=["local", "daemon"])
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory, request.param)


def _inspect(engine: EngineEnv, ref: str) -> dict:
    return json.loads(engine.run("inspect", ref, check=True).stdout)[0]


def _cgroup_file(pid: int, controller: str, v1_name: str, v2_name: str) -> str:
    """The content of a limit file of the cgroup ``pid`` is in (v1: the controller's hierarchy;
    pure v2: the unified one)."""
    lines = [line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    if (CGROUP / "cgroup.controllers").exists():
        path = next(p for h, c, p in lines if h == "0")
        return (CGROUP / path.lstrip("/") / v2_name).read_text().strip()
    path = next(p for h, c, p in lines if controller in c.split(","))
    return (CGROUP / controller / path.lstrip("/") / v1_name).read_text().strip()


def test_update_writes_a_running_containers_cgroup_and_record(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "--memory", "32m", "busybox", "sleep", "60", check=True).stdout.strip()
    pid = _inspect(engine, cid)["State"]["Pid"]
    assert _cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max") == str(32 << 20)

    result = engine.run("update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "77",
                        "--cpu-shares", "512", cid, check=True)
    assert result.stdout.strip() == cid

    assert _cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)
    assert _cgroup_file(pid, "pids", "pids.max", "pids.max") == "77"
    host = _inspect(engine, cid)["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"], host["CpuShares"]) == (64 << 20, 128 << 20, 77,
                                                                                           512)
    # The process saw no restart: the same PID 1 runs under the new limits.
    assert _inspect(engine, cid)["State"]["Pid"] == pid


def test_update_of_a_stopped_container_applies_at_its_next_start(engine: EngineEnv) -> None:
    cid = engine.run("create", "busybox", "sleep", "60", check=True).stdout.strip()
    engine.run("update", "--pids-limit", "33", "--restart", "on-failure:4", cid, check=True)
    doc = _inspect(engine, cid)
    assert doc["HostConfig"]["PidsLimit"] == 33
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 4}
    engine.run("start", cid, check=True)
    pid = _inspect(engine, cid)["State"]["Pid"]
    assert _cgroup_file(pid, "pids", "pids.max", "pids.max") == "33"


def test_update_refuses_bad_input_and_leaves_the_record(engine: EngineEnv) -> None:
    cid = engine.run("create", "--name", "keep", "--memory", "32m", "busybox", "true", check=True).stdout.strip()
    before = _inspect(engine, cid)["HostConfig"]
    for args, words in ((["keep"], "one or more flags"),
                        (["--memory", "1m", "keep"], "Minimum memory limit"),
                        (["--restart", "sometimes", "keep"], "invalid restart policy"),
                        (["--memory", "lots", "keep"], "")):
        result = engine.run("update", *args)
        assert result.returncode != 0, args
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
        assert words in result.stderr, result.stderr
    missing = engine.run("update", "--memory", "64m", "nosuch")
    assert missing.returncode == 1 and "nosuch" in missing.stderr.lower(), missing.stderr
    assert _inspect(engine, cid)["HostConfig"] == before
