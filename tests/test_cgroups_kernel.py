"""The cgroup managers against the real kernel: limits that the kernel enforces on real
processes (OOM kill, fork bomb, CPU quota, cpuset), stats, freeze, release, and the kernel
seam itself. One module for both versions: v1 runs on the (hybrid) host, v2 in the project's
VM (``.ci/vm-run -- python -m pytest -m vm``). Every test works under a private parent
``pyengine/test-<random>`` of the test process's own cgroup, which a fixture checks is empty
at the end and removes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cgroups_support import BUSYBOX, kill_cgroup, private_parent_name, spawn_in

from conftest import need_root
from pyengine.cgroups import CgroupOptions
from pyengine.cgroups.fs import CgroupBusy, KernelFS, remove_cgroup
from pyengine.drivers import DriverContext
from pyengine.errors import DriverError, DriverNotSupported

VERSIONS = [pytest.param("1", marks=pytest.mark.root, id="v1"),
            pytest.param("2", marks=[pytest.mark.root, pytest.mark.vm], id="v2")]


def manager_class(version: str):  # noqa: ANN201
    if version == "1":
        from pyengine_plugins.cgroupv1.manager import CgroupV1Isolator, probe
        return CgroupV1Isolator, probe
    from pyengine_plugins.cgroupv2.manager import CgroupV2Isolator, probe
    return CgroupV2Isolator, probe


@dataclass
class CgroupRun:
    """One test's manager, and what it started, for cleanup by pid."""

    version: str
    isolator: object
    parent: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    def prepare(self, container_id: str, resources: dict) -> dict:
        self.containers.append(container_id)
        return self.isolator.prepare(container_id, {"linux": {"resources": resources}})

    def spawn(self, container_id: str, argv: list[str], **popen) -> subprocess.Popen:
        process = spawn_in(self.isolator, container_id, argv, **popen)
        self.processes.append(process)
        return process

    def parent_dirs(self) -> list[Path]:
        if self.version == "1":
            return sorted(set(self.isolator.parents.values()))
        return [self.isolator.parent]

    def container_dirs(self, container_id: str) -> list[Path]:
        return [p / container_id for p in self.parent_dirs()]

    def file(self, container_id: str, v1_controller: str, name: str) -> Path:
        if self.version == "1":
            return self.isolator.path(v1_controller, container_id) / name
        return self.isolator.path(container_id) / name


@pytest.fixture(params=VERSIONS)
def cgroup(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    need_root()
    version = request.param
    cls, probe = manager_class(version)
    options = CgroupOptions(version=version, parent=private_parent_name())
    context = DriverContext(name=f"cgroupv{version}", options=options, configured=True,
                            data_root=tmp_path, run_root=tmp_path, state_dir=tmp_path)
    try:
        probe(context)
    except DriverNotSupported as exc:
        pytest.skip(f"cgroup v{version} is not what this host runs: {exc}")
    run = CgroupRun(version, cls(context), options.parent)
    # the shared `pyengine` level: remove it afterwards only if this test made it
    levels = {d.parent for d in run.parent_dirs()}
    made_levels = [d for d in levels if not d.exists()]
    yield run
    for process in run.processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    for container_id in run.containers:
        kill_cgroup(run.isolator, container_id)
        run.isolator.release(container_id)
    leftovers = {str(d): KernelFS().listdir(d) for d in run.parent_dirs() if d.exists()}
    for directory in run.parent_dirs():
        for child in KernelFS().listdir(directory):
            remove_cgroup(KernelFS(), directory / child)
        remove_cgroup(KernelFS(), directory)
    for level in made_levels:
        try:
            os.rmdir(level)
        except OSError:
            pass  # another engine started using it meanwhile
    assert not any(leftovers.values()), f"cgroups left under the parent: {leftovers}"


# -- the seam ------------------------------------------------------------------------------
def test_seam_creates_writes_reads_and_removes_a_real_cgroup(cgroup: CgroupRun) -> None:
    cgroup.prepare("seam", {})
    fs = KernelFS()
    base = cgroup.file("seam", "pids", "cgroup.procs").parent
    child = base / "sub"
    assert fs.mkdir(child) is True
    assert fs.mkdir(child) is False
    assert fs.listdir(base) == ["sub"]
    if cgroup.version == "2":
        fs.write(base / "cgroup.subtree_control", "+pids")
    fs.write(child / "pids.max", "10")
    assert fs.read(child / "pids.max") == "10\n"
    with pytest.raises(DriverError, match=r"cannot write 'ten' to .*pids.max: Invalid argument"):
        fs.write(child / "pids.max", "ten")
    with pytest.raises(DriverError, match=r"cannot read .*no-such-file"):
        fs.read(child / "no-such-file")
    sleeper = subprocess.Popen([BUSYBOX, "sleep", "30"])
    try:
        fs.write(child / "cgroup.procs", str(sleeper.pid))
        assert fs.read(child / "cgroup.procs").split() == [str(sleeper.pid)]
        with pytest.raises(CgroupBusy):
            fs.rmdir(child)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_cgroup(fs, child) is True
    assert fs.rmdir(child) is False
    if cgroup.version == "2":
        fs.write(base / "cgroup.subtree_control", "-pids")


# -- limits the kernel enforces --------------------------------------------------------------
def test_memory_limit_oom_kills_a_process_allocating_past_it(cgroup: CgroupRun) -> None:
    cgroup.prepare("oom", {"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    process = cgroup.spawn("oom", [sys.executable, "-c", "x = b'a' * (100 << 20)"])
    assert process.wait(timeout=120) == -signal.SIGKILL  # a shell reports it as 137
    assert cgroup.isolator.oom_killed("oom")
    stats = cgroup.isolator.stats("oom")
    assert stats["memory"]["oom_kill"] >= 1
    assert stats["memory"]["limit"] == 32 << 20


def test_device_rules_allow_the_minimal_dev_and_refuse_other_devices(cgroup: CgroupRun, tmp_path: Path) -> None:
    """Docker's default rules (v1: devices.allow/deny; v2: an eBPF program on the cgroup):
    /dev/null opens; /dev/kmsg (c 1:11) opens outside the cgroup but not inside; nodes
    may still be made (``m``)."""
    from pyengine.runtime.spec import DEFAULT_DEVICE_RULES

    assert os.path.exists("/dev/kmsg")
    script = ("echo x > /dev/null && echo null=ok; (exec 3</dev/kmsg) 2>/dev/null && echo kmsg=opened; "
              f"{BUSYBOX} mknod {tmp_path}/node c 1 11 && echo mknod=ok; true")
    outside = subprocess.run([BUSYBOX, "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert outside.stdout.split() == ["null=ok", "kmsg=opened", "mknod=ok"], outside.stderr
    os.unlink(tmp_path / "node")
    cgroup.prepare("dev", {"devices": DEFAULT_DEVICE_RULES})
    inside = cgroup.spawn("dev", [BUSYBOX, "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert inside.stdout is not None and inside.stderr is not None
    out, err = inside.stdout.read().decode(), inside.stderr.read().decode()
    assert inside.wait(timeout=60) == 0, err
    assert out.split() == ["null=ok", "mknod=ok"], err


def test_pids_limit_contains_a_fork_bomb(cgroup: CgroupRun) -> None:
    cgroup.prepare("bomb", {"pids": {"limit": 20}})
    # bounded: 60 background sleepers asked for, at most 20 tasks allowed
    bomb = cgroup.spawn("bomb", [BUSYBOX, "sh", "-c",
                                 f"for i in $({BUSYBOX} seq 60); do {BUSYBOX} sleep 60 & done; wait"],
                        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    events = cgroup.file("bomb", "pids", "pids.events")
    while "max 0" in events.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(events.read_text().split()[1]) > 0, "no fork was refused"
    tasks = cgroup.isolator.pids("bomb")
    assert 1 < len(tasks) <= 20
    assert cgroup.isolator.stats("bomb")["pids"]["current"] <= 20
    # the host is unaffected: this process can still start others
    assert subprocess.run([BUSYBOX, "true"]).returncode == 0
    kill_cgroup(cgroup.isolator, "bomb")
    bomb.wait(timeout=30)
    assert cgroup.isolator.pids("bomb") == []


def test_cpu_quota_of_half_a_core_limits_usage_to_about_half(cgroup: CgroupRun) -> None:
    cgroup.prepare("cpu", {"cpu": {"quota": 50000, "period": 100000}})
    # two busy loops: demand of two cores against a quota of half of one
    cgroup.spawn("cpu", [BUSYBOX, "sh", "-c", "while :; do :; done & while :; do :; done"])
    time.sleep(0.3)
    usage_start, wall_start = cgroup.isolator.stats("cpu")["cpu"]["usage_ns"], time.monotonic_ns()
    time.sleep(2)
    usage_end, wall_end = cgroup.isolator.stats("cpu")["cpu"]["usage_ns"], time.monotonic_ns()
    share = (usage_end - usage_start) / (wall_end - wall_start)
    assert 0.3 <= share <= 0.7, f"the cgroup used {share:.2f} of a core"
    assert cgroup.isolator.stats("cpu")["cpu"]["throttled_periods"] > 0


def test_cpuset_pins_the_process_to_cpu_0(cgroup: CgroupRun) -> None:
    cgroup.prepare("pin", {"cpu": {"cpus": "0", "mems": "0"}})
    process = cgroup.spawn("pin", [BUSYBOX, "sleep", "60"])
    time.sleep(0.1)
    status = Path(f"/proc/{process.pid}/status").read_text()
    assert re.search(r"^Cpus_allowed_list:\s+0$", status, re.M), status
    assert cgroup.file("pin", "cpuset", "cpuset.cpus").read_text().strip() == "0"


def test_stats_report_plausible_usage(cgroup: CgroupRun) -> None:
    cgroup.prepare("stats", {"memory": {"limit": 128 << 20}, "pids": {"limit": 50}})
    process = cgroup.spawn("stats", [sys.executable, "-c",
                                     "import sys, time\nx = b'a' * (20 << 20)\nprint('ready', flush=True)\n"
                                     "time.sleep(60)"], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"
    stats = cgroup.isolator.stats("stats")
    memory = stats["memory"]
    assert 20 << 20 <= memory["usage"] <= 128 << 20
    assert memory["limit"] == 128 << 20
    assert memory["max_usage"] is None or memory["max_usage"] >= memory["usage"]
    assert memory["oom_kill"] == 0 and not cgroup.isolator.oom_killed("stats")
    assert stats["cpu"]["usage_ns"] > 1_000_000
    assert stats["pids"] == {"current": 1, "limit": 50}
    assert cgroup.isolator.pids("stats") == [process.pid]


def test_freeze_stops_and_thaw_resumes_cpu_use(cgroup: CgroupRun) -> None:
    cgroup.prepare("pause", {})
    cgroup.spawn("pause", [BUSYBOX, "sh", "-c", "while :; do :; done"])
    time.sleep(0.2)
    cgroup.isolator.freeze("pause")
    frozen_at = cgroup.isolator.stats("pause")["cpu"]["usage_ns"]
    time.sleep(0.5)
    assert cgroup.isolator.stats("pause")["cpu"]["usage_ns"] - frozen_at < 20_000_000
    cgroup.isolator.thaw("pause")
    time.sleep(0.5)
    assert cgroup.isolator.stats("pause")["cpu"]["usage_ns"] - frozen_at > 100_000_000


def test_release_removes_the_container_cgroups_and_is_idempotent(cgroup: CgroupRun) -> None:
    state = cgroup.prepare("gone", {"pids": {"limit": 5}})
    paths = [Path(p) for p in state["paths"].values()]
    assert paths and all(p.is_dir() for p in paths)
    process = cgroup.spawn("gone", [BUSYBOX, "true"])
    assert process.wait(timeout=30) == 0
    cgroup.isolator.release("gone")
    assert not any(p.exists() for p in paths)
    cgroup.isolator.release("gone")


def test_a_later_caller_with_another_parent_finds_the_container(cgroup: CgroupRun, tmp_path: Path) -> None:
    state = cgroup.prepare("later", {"pids": {"limit": 9}})
    cls, _ = manager_class(cgroup.version)
    # as a CLI started from another cgroup would: its own parent differs, the state dir not
    options = CgroupOptions(version=cgroup.version, parent=private_parent_name())
    later = cls(DriverContext(name=f"cgroupv{cgroup.version}", options=options, configured=True,
                              data_root=tmp_path, run_root=tmp_path, state_dir=tmp_path))
    assert later.stats("later")["pids"]["limit"] == 9
    later.release("later")
    assert not any(Path(p).exists() for p in state["paths"].values())


# -- selection through the engine ----------------------------------------------------------
def _isolator_state(output: str, name: str) -> str:
    match = re.search(rf"^isolation\s+{name}\s+\S+\s+(.*)$", output, re.M)
    assert match, output
    return match.group(1).strip()


def test_info_shows_the_host_manager_ok_and_the_other_skipped(cgroup: CgroupRun, engine_env) -> None:  # noqa: ANN001
    other = "2" if cgroup.version == "1" else "1"
    engine_env.write_config(f'[cgroups]\nparent = "{cgroup.parent}"\n')
    output = engine_env.run("info", check=True).stdout
    assert _isolator_state(output, f"cgroupv{cgroup.version}") == "ok"
    assert _isolator_state(output, f"cgroupv{other}").startswith("skip")
    engine_env.write_config(f'[cgroups]\nversion = "{other}"\n')
    output = engine_env.run("info", check=True).stdout
    assert _isolator_state(output, f"cgroupv{cgroup.version}") == \
        f"skip   disabled by [cgroups] version = {other}"


def test_v1_warm_moves_this_process_nowhere(cgroup: CgroupRun) -> None:
    # warm() pays cgroup v1's first-move cost ahead of a launch by moving this process into
    # the cgroup it is already in: afterwards it is where it was, in every hierarchy.
    if cgroup.version != "1":
        assert not hasattr(cgroup.isolator, "warm")
        return
    before = Path("/proc/self/cgroup").read_text()
    thread = cgroup.isolator.warm()
    assert thread is not None
    thread.join(30)
    assert not thread.is_alive()
    assert Path("/proc/self/cgroup").read_text() == before
