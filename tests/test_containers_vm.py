"""Containers in the VM: cgroup v2 limits and the devicemapper driver, end to end.

The host has hybrid cgroups and no device-mapper, so these run under `.ci/vm-run` (pure
cgroup v2, dm-thin). Everything there is emulated and about twenty times slower: the tests
keep to a few CLI calls each and wait on the container, never on wall-clock guesses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar

from conftest import EngineEnv, need_root

pytestmark = pytest.mark.vm


def _cgroup2_host() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/sys/fs/cgroup" and " - cgroup2 " in line for line in f)


def _engine(driver: str, engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    need_root()
    if not _cgroup2_host() or not os.path.exists("/dev/mapper/control"):
        pytest.skip("needs the VM: pure cgroup v2 and device-mapper (.ci/vm-run)")
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = driver
    if driver == "devicemapper":
        # A small development pool on sparse files: the VM's /var/tmp is RAM.
        engine_env.write_config('[storage.devicemapper]\ndata-size = "2G"\nmetadata-size = "64M"\n'
                                'base-size = "256M"\n')
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True, timeout=600)
    return engine_env


def _clean(engine_env: EngineEnv) -> None:
    ids = engine_env.run("ps", "-aq", "--no-trunc", timeout=600).stdout.split()
    if ids:
        engine_env.run("rm", "-f", *ids, timeout=600)


@pytest.fixture(params=["devicemapper", "overlay", "vfs"])
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    """An engine with a busybox image on each storage driver."""
    yield _engine(request.param, engine_env, tmp_path_factory)
    _clean(engine_env)


@pytest.fixture
def limits_engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    """Limits are the isolator's business, not the storage driver's: one driver is enough."""
    yield _engine("overlay", engine_env, tmp_path_factory)
    _clean(engine_env)


def test_vm_run_is_pid1_in_own_namespaces_and_cgroup_v2(engine: EngineEnv) -> None:
    script = ("echo $$; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
              "for ns in pid mnt uts ipc net cgroup; do readlink /proc/self/ns/$ns; done; cat /proc/self/cgroup")
    result = engine.run("run", "--rm", "--hostname", "vmbox", "busybox", "sh", "-c", script, check=True, timeout=600)
    lines = result.stdout.splitlines()
    assert lines[0] == "1" and lines[1] == "vmbox"
    assert lines[2].startswith("sh -c echo $$")
    for line in lines[3:9]:
        kind = line.split(":")[0]
        assert line != os.readlink(f"/proc/self/ns/{kind}"), line
    assert lines[9] == "0::/", "the container does not see its own cgroup as the root"


def test_vm_container_sees_its_own_cgroup2_read_only(limits_engine: EngineEnv) -> None:
    script = ("grep ' /sys/fs/cgroup ' /proc/self/mountinfo; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; "
              "mkdir /sys/fs/cgroup/x 2>&1; true")
    result = limits_engine.run("run", "--rm", "--memory", "32m", "--pids-limit", "30", "busybox", "sh", "-c", script,
                               check=True, timeout=600)
    mount, memory, pids, mkdir = result.stdout.splitlines()
    assert " - cgroup2 " in mount and " ro," in mount, mount
    assert (memory, pids) == ("33554432", "30")
    assert "Read-only file system" in mkdir


def test_vm_memory_limit_oom_kills_on_cgroup_v2(limits_engine: EngineEnv) -> None:
    engine = limits_engine
    result = engine.run("run", "--name", "hog", "--memory", "32m", "busybox", "sh", "-c",
                        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}", timeout=600)
    assert result.returncode == 137, (result.stdout, result.stderr)
    doc = json.loads(engine.run("inspect", "hog", check=True, timeout=600).stdout)[0]
    assert doc["State"]["OOMKilled"] is True


def test_vm_pids_and_cpuset_on_cgroup_v2(limits_engine: EngineEnv) -> None:
    engine = limits_engine
    script = ("sh -c 'i=0; while [ $i -lt 60 ]; do sleep 600 & i=$((i+1)); done' 2>/dev/null; "
              "set -- /proc/[0-9]*; echo procs $#; kill -9 -1; wait; "
              "grep Cpus_allowed_list /proc/self/status")
    result = engine.run("run", "--rm", "--pids-limit", "20", "--cpuset-cpus", "0", "--cpus", "0.5",
                        "busybox", "sh", "-c", script, timeout=900)
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert int(lines["procs"]) <= 20, result.stdout
    assert lines["Cpus_allowed_list:"].strip() == "0"
    left = [p for p in Path("/sys/fs/cgroup").rglob("*") if p.is_dir() and len(p.name) == 64]
    assert not left, f"the container's cgroup was not released: {left}"
