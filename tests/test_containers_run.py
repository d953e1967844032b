"""Containers end to end through the CLI: run, isolation, limits, lifecycle, cleanup.

Every test runs as root against the real kernel: namespaces, mounts and cgroups (v1 on this
host; the VM runs the same module on cgroup v2 with the `vm` marker's parametrisation). The
``overlay-daemon`` runs send every command through ``pyengine daemon`` (tests/daemon_mode.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_mode import local_only, serve

from conftest import EngineEnv, need_root

DRIVERS = ["vfs", "overlay"]
ENGINES = [*DRIVERS, "overlay-daemon"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    """An engine with a busybox image, on each storage driver, daemonless and (overlay) through
    the daemon; stops what tests left running."""
    need_root()
    driver, _, via = request.param.partition("-")
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = driver
    served = serve(engine_env, via or "local")
    try:
        tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
        engine_env.run("import", str(tar), "busybox:latest", check=True)
        yield engine_env
        remove_all_containers(engine_env.run)
    finally:
        if served is not None:
            served.stop()


def _inspect(engine: EngineEnv, ref: str) -> dict:
    result = engine.run("inspect", ref, check=True)
    return json.loads(result.stdout)[0]


def test_run_pid1_hostname_and_own_cmdline(engine: EngineEnv) -> None:
    result = engine.run("run", "--rm", "--hostname", "boxy", "busybox", "sh", "-c",
                        "echo $$; hostname; cat /proc/1/cmdline | tr '\\0' ' '", check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "1"
    assert lines[1] == "boxy"
    assert lines[2].strip() == "sh -c echo $$; hostname; cat /proc/1/cmdline | tr '\\0' ' '"
    assert engine.run("ps", "-aq").stdout.strip() == "", "--rm left the container behind"


def test_run_container_namespaces_differ_from_host(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "busybox", "sleep", "30", check=True).stdout.strip()
    pid = _inspect(engine, cid)["State"]["Pid"]
    assert pid > 0
    for ns in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    engine.run("rm", "-f", cid, check=True)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_run_exit_codes_like_docker(engine: EngineEnv) -> None:
    assert engine.run("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    missing = engine.run("run", "--rm", "busybox", "/no/such/command")
    assert missing.returncode == 127, missing.stderr
    assert "no/such/command" in missing.stderr
    not_exec = engine.run("run", "--rm", "busybox", "/etc/passwd")
    assert not_exec.returncode == 126, not_exec.stderr
    # A signal from outside: PID 1 cannot be killed from inside its own namespace.
    cid = engine.run("run", "-d", "busybox", "sleep", "30", check=True).stdout.strip()
    engine.run("kill", cid, check=True)
    assert engine.run("wait", cid, check=True).stdout.strip() == "137"


def test_run_default_container_cannot_escalate(engine: EngineEnv) -> None:
    script = ("mount -t tmpfs t /mnt && echo MOUNT-OK; unshare -n true && echo UNSHARE-OK; "
              "echo x > /proc/sys/kernel/hostname && echo SYSCTL-OK; "
              "head -c 1 /proc/kcore >/dev/null && echo KCORE-OK; "
              "insmod /bin/busybox && echo INSMOD-OK; echo done")
    result = engine.run("run", "--rm", "busybox", "sh", "-c", script)
    assert result.stdout.strip().splitlines()[-1] == "done", result.stderr
    for marker in ("MOUNT-OK", "UNSHARE-OK", "SYSCTL-OK", "KCORE-OK", "INSMOD-OK"):
        assert marker not in result.stdout, f"{marker}: a default container could do it"
    privileged = engine.run("run", "--rm", "--privileged", "busybox", "sh", "-c",
                            "mount -t tmpfs t /mnt && echo MOUNT-OK")
    assert "MOUNT-OK" in privileged.stdout, privileged.stderr


def test_run_memory_limit_oom_kills_with_137(engine: EngineEnv) -> None:
    result = engine.run("run", "--name", "hog", "--memory", "32m", "busybox", "sh", "-c",
                        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}")
    assert result.returncode == 137, (result.stdout, result.stderr)
    assert "survived" not in result.stdout
    assert _inspect(engine, "hog")["State"]["OOMKilled"] is True


def test_seccomp_profile_follows_cap_add(engine: EngineEnv) -> None:
    # Docker's profile allows unshare only with CAP_SYS_ADMIN; the filter stays on either way.
    script = "unshare -u hostname inner && echo UNSHARE-OK; grep '^Seccomp:' /proc/self/status"
    denied = engine.run("run", "--rm", "busybox", "sh", "-c", script, check=True)
    assert "UNSHARE-OK" not in denied.stdout and "Seccomp:\t2" in denied.stdout
    allowed = engine.run("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c", script, check=True)
    assert "UNSHARE-OK" in allowed.stdout and "Seccomp:\t2" in allowed.stdout


def test_container_sees_its_own_cgroups_read_only(engine: EngineEnv) -> None:
    # This host is cgroup v1 (hybrid): a v1 mount per hierarchy under a tmpfs, as runc does;
    # the VM checks the cgroup2 case (test_containers_vm.py).
    script = ("cat /proc/self/cgroup; echo --; cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
              "/sys/fs/cgroup/pids/pids.max; mkdir /sys/fs/cgroup/memory/x 2>&1; "
              "grep -c ' /sys/fs/cgroup/[a-z,_]* ro,' /proc/self/mountinfo")
    result = engine.run("run", "--rm", "--memory", "32m", "--pids-limit", "30", "busybox", "sh", "-c", script,
                        check=True)
    listed, _, rest = result.stdout.partition("--\n")
    assert all(line.endswith(":/") for line in listed.splitlines()), listed  # its own cgroups are roots
    memory, pids, mkdir, read_only = rest.splitlines()
    assert (memory, pids) == ("33554432", "30")
    assert "Read-only file system" in mkdir
    # one mount per line of /proc/self/cgroup: the v1 hierarchies and the unified one ("0::")
    assert int(read_only) == len(listed.splitlines()), "every hierarchy is mounted, read-only"
    privileged = engine.run("run", "--rm", "--privileged", "busybox", "sh", "-c",
                            "grep ' /sys/fs/cgroup/memory ' /proc/self/mountinfo", check=True)
    assert " rw," in privileged.stdout


def test_run_pids_limit_contains_fork_bomb(engine: EngineEnv) -> None:
    # The bomb runs in a child shell, which dies at its first failed fork; the outer shell then
    # counts with builtins only (no fork needed), kills the rest and reports.
    script = ("sh -c 'i=0; while [ $i -lt 60 ]; do sleep 20 & i=$((i+1)); done' 2>/tmp/err; echo bomb $?; "
              "set -- /proc/[0-9]*; echo procs $#; kill -9 -1; wait; echo failed $(grep -c fork /tmp/err)")
    result = engine.run("run", "--rm", "--pids-limit", "20", "busybox", "sh", "-c", script, timeout=120)
    report = dict(line.split() for line in result.stdout.splitlines())
    assert report["bomb"] != "0", (result.stdout, result.stderr)
    assert int(report["procs"]) <= 20, "more processes than the pids limit"
    assert int(report["failed"]) >= 1, "no fork failed: the limit was not applied"
    assert result.returncode == 0
    host = subprocess.run(["true"])
    assert host.returncode == 0, "the host could not fork"


def test_run_cpus_half_keeps_busy_loop_near_half_core(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "--cpus", "0.5", "busybox", "sh", "-c", "while :; do :; done",
                     check=True).stdout.strip()
    first = json.loads(engine.run("stats", "--no-stream", "--format", "json", cid, check=True).stdout)
    t0 = time.monotonic()
    time.sleep(3)
    second = json.loads(engine.run("stats", "--no-stream", "--format", "json", cid, check=True).stdout)
    elapsed = time.monotonic() - t0
    engine.run("rm", "-f", cid, check=True)
    share = (second["cpu"]["usage_ns"] - first["cpu"]["usage_ns"]) / 1e9 / elapsed
    assert 0.3 < share < 0.7, f"used {share:.2f} of a core under --cpus 0.5"


def test_run_cpuset_pins_to_cpu0(engine: EngineEnv) -> None:
    result = engine.run("run", "--rm", "--cpuset-cpus", "0", "busybox", "sh", "-c",
                        "grep Cpus_allowed_list /proc/self/status", check=True)
    assert result.stdout.split()[-1] == "0"


def test_detached_container_outlives_cli_and_logs_follow(engine: EngineEnv) -> None:
    # sh as PID 1 ignores SIGTERM unless it traps it, as in Docker.
    cid = engine.run("run", "-d", "--name", "ticker", "busybox", "sh", "-c",
                     "trap 'echo bye; exit 0' TERM; "
                     "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done", check=True).stdout.strip()
    time.sleep(0.5)
    assert _inspect(engine, cid)["State"]["Running"] is True
    follower = subprocess.Popen([sys.executable, "-m", "pyengine", "logs", "-f", "ticker"], env=engine.env,
                                stdout=subprocess.PIPE, text=True)
    seen = [follower.stdout.readline() for _ in range(8)]
    assert all(line.startswith("tick") for line in seen), seen
    engine.run("stop", "-t", "5", "ticker", check=True)
    follower.wait(timeout=10)
    state = _inspect(engine, "ticker")["State"]
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0, state  # the trap ran: SIGTERM reached it before the timeout
    assert "bye" in engine.run("logs", "--tail", "1", "ticker", check=True).stdout


def test_stop_escalates_to_sigkill_after_timeout(engine: EngineEnv) -> None:
    engine.run("run", "-d", "--name", "stubborn", "busybox", "sh", "-c",
               "trap '' TERM; while true; do sleep 0.1; done", check=True)
    time.sleep(0.3)
    t0 = time.monotonic()
    engine.run("stop", "-t", "1", "stubborn", check=True)
    assert time.monotonic() - t0 >= 1.0
    assert _inspect(engine, "stubborn")["State"]["ExitCode"] == 137


def test_restart_on_failure_restarts_exactly_three_times(engine: EngineEnv) -> None:
    engine.run("run", "-d", "--name", "flaky", "--restart", "on-failure:3", "busybox", "sh", "-c",
               "echo run; exit 1", check=True)
    assert engine.run("wait", "flaky", check=True, timeout=60).stdout.strip() == "1"
    doc = _inspect(engine, "flaky")
    assert doc["RestartCount"] == 3
    logs = engine.run("logs", "flaky", check=True).stdout
    assert logs.count("run") == 4


@local_only("engine", ENGINES, "a daemonless ps reconciles a container whose monitor died; the daemon's own "
            "reconciling is test_daemon_containers' concern")
def test_killed_monitor_is_reconciled_and_unmounted(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
    monitor = json.loads((engine.data_root / "containers" / cid / "state.json").read_text())["monitor_pid"]
    assert monitor > 0
    os.kill(monitor, signal.SIGKILL)
    time.sleep(0.3)
    ps = engine.run("ps", "-a", "--format", "{{.ID}} {{.State}}", check=True).stdout
    assert f"{cid[:12]} exited" in ps
    with open("/proc/self/mountinfo") as f:
        assert cid not in f.read(), "the container's rootfs stayed mounted"


def test_ulimit_above_hard_limit_is_a_clear_error(engine: EngineEnv) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    result = engine.run("run", "--rm", "--ulimit", f"nofile={hard + 1}:{hard + 1}", "busybox", "true")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "nofile" in result.stderr
    ok = engine.run("run", "--rm", "busybox", "sh", "-c", "ulimit -n", check=True)
    assert int(ok.stdout) <= hard


def test_user_resolved_through_image_passwd(engine: EngineEnv) -> None:
    result = engine.run("run", "--rm", "-u", "app", "busybox", "id", check=True)
    assert "uid=1000(app)" in result.stdout and "gid=1000(app)" in result.stdout
    assert "2000(extra)" in result.stdout


def test_attached_run_passes_stdin(engine: EngineEnv) -> None:
    result = engine.run("run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z", input="hello\n", check=True)
    assert result.stdout == "HELLO\n"


def test_network_none_has_only_loopback_up(engine: EngineEnv) -> None:
    result = engine.run("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                        "ls /sys/class/net; ping -c1 -W1 127.0.0.1 >/dev/null && echo LO-OK", check=True)
    assert result.stdout.split() == ["lo", "LO-OK"]


def test_network_host_sees_the_hosts_interfaces(engine: EngineEnv) -> None:
    result = engine.run("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net", check=True)
    assert sorted(result.stdout.split()) == sorted(os.listdir("/sys/class/net"))


def test_pause_freezes_the_cgroup_top_lists_the_process_and_unpause_thaws(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    pid = _inspect(engine, cid)["State"]["Pid"]
    top = engine.run("top", cid, check=True).stdout
    assert str(pid) in top and "sleep 300" in top
    engine.run("pause", cid, check=True)
    assert _inspect(engine, cid)["State"]["Status"] == "paused"
    again = engine.run("pause", cid)
    assert again.returncode == 1 and "is not running" in again.stderr
    # the kernel's word: v1's freezer.state, or v2's cgroup.freeze
    v1 = Path("/sys/fs/cgroup/freezer").is_dir()
    name, frozen, thawed = ("freezer.state", "FROZEN", "THAWED") if v1 else ("cgroup.freeze", "1", "0")
    freezer = next(Path("/sys/fs/cgroup").rglob(f"{cid}/{name}"), None)
    assert freezer is not None, f"no {name} for the container"
    assert freezer.read_text().strip() == frozen
    engine.run("unpause", cid, check=True)
    assert _inspect(engine, cid)["State"]["Status"] == "running"
    assert freezer.read_text().strip() == thawed
    refused = engine.run("unpause", cid)
    assert refused.returncode == 1 and "is not paused" in refused.stderr
