"""Unit tests of the cgroup managers' logic, without root: host discovery from recorded
/proc texts, runc's conversions, option checks, and both managers driven against an
in-memory seam (FakeFS) — what they write, where, and that they write nothing elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from cgroups_support import V1_FILES, FakeFS

from pyengine.cgroups import CgroupOptions, check_container_id
from pyengine.cgroups.convert import (
    blkio_weight_to_io_weight,
    cpus_to_quota,
    parse_flat_keyed,
    shares_to_weight,
    swap_to_v2,
)
from pyengine.cgroups.host import discover, parse_mountinfo, parse_proc_cgroup
from pyengine.cgroups.record import PathRecords
from pyengine.drivers import DriverContext
from pyengine.errors import DriverError, DriverNotSupported, UsageError
from pyengine_plugins.cgroupv1.manager import CgroupV1Isolator
from pyengine_plugins.cgroupv1.manager import probe as probe_v1
from pyengine_plugins.cgroupv2.manager import CgroupV2Isolator
from pyengine_plugins.cgroupv2.manager import probe as probe_v2

# recorded on the development host: hybrid mode, cpu and cpuacct mounted separately
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/324b
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
# a systemd host in unified mode, and a container whose cgroup mount shows a subtree
V2_MOUNTINFO = """\
25 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
V2_CGROUP = "0::/system.slice/pyengine.service\n"
COMOUNTED_MOUNTINFO = """\
40 31 0:37 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""


def ctx(version: str = "auto", parent: str | None = None) -> DriverContext:
    return DriverContext(name="cgroup", options=CgroupOptions(version, parent), configured=True,
                         data_root=Path("/nonexistent"), run_root=Path("/nonexistent"),
                         state_dir=Path("/nonexistent"))


# -- conversions -----------------------------------------------------------------------------
@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (512, 20), (262144, 10000), (0, 0)])
def test_cpu_shares_convert_to_weight_as_runc(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("blkio, io", [(10, 1), (500, 4950), (1000, 10000), (0, 0)])
def test_blkio_weight_converts_to_io_weight_as_runc(blkio: int, io: int) -> None:
    assert blkio_weight_to_io_weight(blkio) == io


def test_cpus_convert_to_quota_over_default_period() -> None:
    assert cpus_to_quota(0.5) == (50000, 100000)
    assert cpus_to_quota(1.5) == (150000, 100000)
    with pytest.raises(ValueError):
        cpus_to_quota(0)


def test_oci_swap_is_memory_plus_swap_and_v2_wants_swap_alone() -> None:
    assert swap_to_v2(96 << 20, 64 << 20) == 32 << 20
    assert swap_to_v2(64 << 20, 64 << 20) == 0
    assert swap_to_v2(-1, 64 << 20) == -1
    assert swap_to_v2(None, 64 << 20) is None
    with pytest.raises(ValueError, match="at least"):
        swap_to_v2(32 << 20, 64 << 20)


def test_flat_keyed_files_parse_to_ints() -> None:
    assert parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n") == {
        "oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}


# -- options and ids -------------------------------------------------------------------------
def test_options_reject_unknown_version_and_dotdot_parent() -> None:
    with pytest.raises(ValueError, match="version"):
        CgroupOptions(version="3")
    with pytest.raises(ValueError, match=r"\.\."):
        CgroupOptions(parent="pyengine/../../escape")


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", ".hidden", "x" * 200])
def test_container_ids_that_would_leave_the_parent_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        check_container_id(bad)


# -- discovery -------------------------------------------------------------------------------
def test_hybrid_host_has_v1_controllers_and_an_empty_v2_mount() -> None:
    host = discover(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert host.v1["cpu"].mountpoint == Path("/sys/fs/cgroup/cpu")
    assert host.v1["cpuacct"].mountpoint == Path("/sys/fs/cgroup/cpuacct")
    assert host.v2 is not None and host.v2.mountpoint == Path("/sys/fs/cgroup/unified")
    assert not host.unified
    opts = CgroupOptions()
    assert host.parent_dir("memory", opts) == Path("/sys/fs/cgroup/memory/process_api/324b/pyengine")
    assert host.parent_dir("pids", opts) == Path("/sys/fs/cgroup/pids/pyengine")
    assert host.parent_dir("pids", CgroupOptions(parent="/ci/pe")) == Path("/sys/fs/cgroup/pids/ci/pe")
    assert host.parent_dir("pids", CgroupOptions(parent="a/b")) == Path("/sys/fs/cgroup/pids/a/b")


def test_mount_showing_a_subtree_maps_own_path_inside_it() -> None:
    v1, v2 = parse_mountinfo(COMOUNTED_MOUNTINFO)
    assert v1["cpu"] is v1["cpuacct"]
    assert v2 is None
    assert v1["memory"].dir_for("/docker/abc/x") == Path("/sys/fs/cgroup/memory/x")


def test_proc_cgroup_lists_each_controller_and_the_unified_path() -> None:
    own = parse_proc_cgroup("5:cpu,cpuacct:/a\n1:name=systemd:/s\n0::/u\n")
    assert own == {"cpu": "/a", "cpuacct": "/a", "": "/u"}


def test_unified_host_default_parent_is_under_own_cgroup() -> None:
    host = discover(V2_MOUNTINFO, V2_CGROUP)
    assert host.unified
    assert host.parent_dir("", CgroupOptions()) == Path("/sys/fs/cgroup/system.slice/pyengine.service/pyengine")


# -- probes ----------------------------------------------------------------------------------
def test_v2_probe_skips_on_hybrid_host_with_the_reason() -> None:
    host = discover(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    fs = FakeFS({})
    fs.add_dir(Path("/sys/fs/cgroup/unified"), **{"cgroup.controllers": ""})
    with pytest.raises(DriverNotSupported, match="v2 hierarchy at /sys/fs/cgroup/unified has no controllers"):
        probe_v2(ctx(), host, fs)


def test_v1_probe_skips_on_unified_host() -> None:
    with pytest.raises(DriverNotSupported, match="uses cgroup v2"):
        probe_v1(ctx(), discover(V2_MOUNTINFO, V2_CGROUP))


@pytest.mark.parametrize("forced, probe_other, host_texts", [
    ("2", probe_v1, (HYBRID_MOUNTINFO, HYBRID_CGROUP)),
    ("1", probe_v2, (V2_MOUNTINFO, V2_CGROUP)),
])
def test_forced_version_disables_the_other_manager(forced, probe_other, host_texts) -> None:  # noqa: ANN001
    with pytest.raises(DriverNotSupported, match=f"disabled by \\[cgroups\\] version = {forced}"):
        probe_other(ctx(version=forced), discover(*host_texts))


# -- the v1 manager on the seam double -------------------------------------------------------
def v1_manager(parent: str | None = None) -> tuple[CgroupV1Isolator, FakeFS]:
    host = discover(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    templates = {host.v1[c].mountpoint: files for c, files in V1_FILES.items()}
    fs = FakeFS(templates)
    for controller in host.v1:
        fs.add_dir(host.own_dir(controller), **({"cpuset.cpus": "0-1", "cpuset.mems": "0"}
                                                 if controller == "cpuset" else {}))
    fs.writes.clear()
    return CgroupV1Isolator(options=CgroupOptions(parent=parent), host=host, fs=fs), fs


SPEC = {"linux": {"resources": {
    "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20, "disableOOMKiller": True},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 20},
    "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
}}}


def test_v1_prepare_writes_each_limit_to_its_controller_file() -> None:
    manager, fs = v1_manager()
    state = manager.prepare("c1", SPEC)
    memory = Path("/sys/fs/cgroup/memory/process_api/324b/pyengine/c1")
    assert state["paths"]["memory"] == str(memory)
    assert fs.files[memory / "memory.limit_in_bytes"] == str(64 << 20)
    assert fs.files[memory / "memory.memsw.limit_in_bytes"] == str(96 << 20)
    assert fs.files[memory / "memory.soft_limit_in_bytes"] == str(32 << 20)
    assert fs.files[memory / "memory.oom_control"] == "1"
    cpu = Path("/sys/fs/cgroup/cpu/pyengine/c1")
    assert (fs.files[cpu / "cpu.shares"], fs.files[cpu / "cpu.cfs_quota_us"],
            fs.files[cpu / "cpu.cfs_period_us"]) == ("512", "50000", "100000")
    assert fs.files[Path("/sys/fs/cgroup/cpuset/pyengine/c1/cpuset.cpus")] == "0"
    assert fs.files[Path("/sys/fs/cgroup/pids/pyengine/c1/pids.max")] == "20"
    blkio = Path("/sys/fs/cgroup/blkio/pyengine/c1")
    assert fs.files[blkio / "blkio.bfq.weight"] == "500"
    assert fs.files[blkio / "blkio.throttle.read_bps_device"] == "8:0 1048576"


def test_v1_new_cpusets_inherit_cpus_and_mems_before_tasks_join() -> None:
    manager, fs = v1_manager()
    manager.prepare("c1", {})
    for directory in ("/sys/fs/cgroup/cpuset/pyengine", "/sys/fs/cgroup/cpuset/pyengine/c1"):
        assert fs.files[Path(directory) / "cpuset.cpus"] == "0-1"
        assert fs.files[Path(directory) / "cpuset.mems"] == "0"


def test_v1_writes_nothing_outside_the_parent() -> None:
    manager, fs = v1_manager(parent="pyengine/ci")
    manager.prepare("c1", SPEC)
    manager.enter("c1", SPEC, 4242)
    manager.freeze("c1")
    manager.thaw("c1")
    parents = list(manager.parents.values())
    # the one write above the parent: the cpuset of the `pyengine` level prepare created
    between = {Path("/sys/fs/cgroup/cpuset/pyengine") / n for n in ("cpuset.cpus", "cpuset.mems")}
    assert fs.writes
    for path, _ in fs.writes:
        assert any(p in path.parents for p in parents) or path in between, f"wrote outside: {path}"


def test_v1_enter_joins_every_hierarchy_and_release_is_idempotent() -> None:
    manager, fs = v1_manager()
    manager.prepare("c1", {})
    manager.enter("c1", {}, 4242)
    joined = [p for p, v in fs.writes if p.name == "cgroup.procs"]
    # memory, cpu, pids, cpuset, cpuacct, blkio, freezer, devices
    assert len(joined) == 8 and all(v == "4242" for p, v in fs.writes if p.name == "cgroup.procs")
    with pytest.raises(DriverError, match="still has processes"):
        fs.rmdir(Path("/sys/fs/cgroup/pids/pyengine/c1"))
    for path in joined:
        fs.files[path] = ""
    manager.release("c1")
    manager.release("c1")
    assert all(fs.listdir(p) == [] for p in manager.parents.values())


def test_v1_failed_limit_removes_what_prepare_created() -> None:
    manager, fs = v1_manager()
    del fs.templates[Path("/sys/fs/cgroup/pids")]["pids.max"]
    try:
        with pytest.raises(DriverError, match="pids.max"):
            manager.prepare("c1", SPEC)
    finally:
        fs.templates[Path("/sys/fs/cgroup/pids")]["pids.max"] = "max"
    assert all(not fs.exists(p / "c1") for p in manager.parents.values())


def test_v1_oom_killed_and_stats_read_the_kernel_counters() -> None:
    manager, fs = v1_manager()
    manager.prepare("c1", {})
    memory = Path("/sys/fs/cgroup/memory/process_api/324b/pyengine/c1")
    assert not manager.oom_killed("c1")
    fs.files[memory / "memory.oom_control"] = "oom_kill_disable 0\nunder_oom 0\noom_kill 1"
    fs.files[memory / "memory.usage_in_bytes"] = "1234"
    fs.files[Path("/sys/fs/cgroup/cpuacct/pyengine/c1/cpuacct.usage")] = "555"
    assert manager.oom_killed("c1")
    stats = manager.stats("c1")
    assert stats["memory"]["usage"] == 1234 and stats["memory"]["oom_kill"] == 1
    assert stats["cpu"]["usage_ns"] == 555 and stats["pids"]["limit"] is None


# -- the v2 manager on the seam double -------------------------------------------------------
def v2_manager(parent: str | None = None) -> tuple[CgroupV2Isolator, FakeFS]:
    host = discover(V2_MOUNTINFO, "0::/\n")
    fs = FakeFS({})
    fs.add_dir(Path("/sys/fs/cgroup"), **{"cgroup.controllers": "cpuset cpu io memory hugetlb pids",
                                         "cgroup.subtree_control": ""})
    return CgroupV2Isolator(options=CgroupOptions(parent=parent), host=host, fs=fs), fs


def test_v2_prepare_delegates_controllers_and_converts_values() -> None:
    manager, fs = v2_manager()
    manager.prepare("c1", SPEC)
    assert fs.files[Path("/sys/fs/cgroup/cgroup.subtree_control")] == "cpu cpuset io memory pids"
    assert fs.files[Path("/sys/fs/cgroup/pyengine/cgroup.subtree_control")] == "cpu cpuset io memory pids"
    c1 = Path("/sys/fs/cgroup/pyengine/c1")
    assert fs.files[c1 / "memory.max"] == str(64 << 20)
    assert fs.files[c1 / "memory.swap.max"] == str(32 << 20)
    assert fs.files[c1 / "memory.low"] == str(32 << 20)
    assert fs.files[c1 / "cpu.weight"] == "20"
    assert fs.files[c1 / "cpu.max"] == "50000 100000"
    assert fs.files[c1 / "cpuset.cpus"] == "0"
    assert fs.files[c1 / "pids.max"] == "20"
    assert fs.files[c1 / "io.weight"] == "4950"
    assert fs.files[c1 / "io.max"] == "8:0 rbps=1048576"


def test_v2_unlimited_values_are_spelled_max() -> None:
    manager, fs = v2_manager()
    manager.prepare("c1", {"linux": {"resources": {"memory": {"limit": -1, "swap": -1},
                                                   "cpu": {"quota": -1, "period": 50000},
                                                   "pids": {"limit": -1}}}})
    c1 = Path("/sys/fs/cgroup/pyengine/c1")
    assert (fs.files[c1 / "memory.max"], fs.files[c1 / "memory.swap.max"]) == ("max", "max")
    assert fs.files[c1 / "cpu.max"] == "max 50000"
    assert fs.files[c1 / "pids.max"] == "max"


def test_v2_writes_only_inside_parent_and_to_own_subtree_control() -> None:
    manager, fs = v2_manager(parent="pyengine/ci")
    manager.prepare("c1", SPEC)
    manager.enter("c1", SPEC, 4242)
    # above the parent, only the delegation from the own cgroup down to it
    allowed_outside = {Path("/sys/fs/cgroup/cgroup.subtree_control"),
                       Path("/sys/fs/cgroup/pyengine/cgroup.subtree_control")}
    for path, _ in fs.writes:
        assert manager.parent in path.parents or path in allowed_outside, f"wrote outside: {path}"


def test_v2_freeze_waits_for_the_kernel_to_report_frozen() -> None:
    manager, fs = v2_manager()
    manager.prepare("c1", {})
    c1 = Path("/sys/fs/cgroup/pyengine/c1")
    fs.files[c1 / "cgroup.events"] = "populated 1\nfrozen 1"
    manager.freeze("c1")
    assert fs.files[c1 / "cgroup.freeze"] == "1"
    fs.files[c1 / "cgroup.events"] = "populated 1\nfrozen 1"
    with pytest.raises(DriverError, match="not thawed"):
        manager._set_frozen("c1", False, timeout=0.05)


def test_v2_oom_killed_reads_memory_events() -> None:
    manager, fs = v2_manager()
    manager.prepare("c1", {})
    assert not manager.oom_killed("c1")
    fs.files[Path("/sys/fs/cgroup/pyengine/c1/memory.events")] = "max 3\noom 1\noom_kill 1"
    assert manager.oom_killed("c1")
    assert manager.stats("c1")["memory"]["failcnt"] == 3


def test_v2_swap_below_limit_is_a_clear_error() -> None:
    manager, fs = v2_manager()
    with pytest.raises(DriverError, match="at least"):
        manager.prepare("c1", {"linux": {"resources": {"memory": {"limit": 64 << 20, "swap": 32 << 20}}}})
    assert not fs.exists(Path("/sys/fs/cgroup/pyengine/c1"))


# -- paths recorded at prepare ---------------------------------------------------------------
def test_later_callers_in_another_cgroup_find_the_container_by_its_record(tmp_path: Path) -> None:
    starter, fs = v1_manager()
    starter.records = PathRecords(tmp_path)
    starter.prepare("c1", {"linux": {"resources": {"pids": {"limit": 7}}}})
    # a CLI started later from another cgroup computes another parent; the record wins
    later = CgroupV1Isolator(options=CgroupOptions(parent="elsewhere"), host=starter.host, fs=fs)
    later.records = PathRecords(tmp_path)
    assert later.stats("c1")["pids"]["limit"] == 7
    later.release("c1")
    assert not fs.exists(Path("/sys/fs/cgroup/pids/pyengine/c1"))
    assert not (tmp_path / "c1.json").exists()


def test_a_record_pointing_outside_the_hierarchy_is_ignored(tmp_path: Path) -> None:
    manager, fs = v1_manager()
    PathRecords(tmp_path).save("c1", {"pids": "/etc/c1", "memory": "/sys/fs/cgroup/memory/x/other"})
    manager.records = PathRecords(tmp_path)
    assert manager.path("pids", "c1") == Path("/sys/fs/cgroup/pids/pyengine/c1")
    assert manager.path("memory", "c1") == Path("/sys/fs/cgroup/memory/process_api/324b/pyengine/c1")
