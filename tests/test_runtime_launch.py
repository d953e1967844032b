"""The launcher against the real kernel: a busybox rootfs run in fresh namespaces, with
Docker's confinement (capabilities, masks, seccomp, rlimits) checked from inside and outside."""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import _mounts_under, need_root

BUSYBOX = "/usr/bin/busybox"
DOCKER_DEFAULT_CAPEFF = "00000000a80425fb"

pytestmark = pytest.mark.root


def make_rootfs(path: Path) -> Path:
    """A busybox userland: the static binary plus one link per applet."""
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (path / "bin" / applet).symlink_to("busybox")
    for name in ("proc", "sys", "dev", "etc", "tmp", "mnt"):
        (path / name).mkdir()
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\nwheel:x:10:user\nuser:x:1000:\n")
    return path


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    need_root()
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs busybox-static (apt-get install busybox-static)")
    yield make_rootfs(tmp_path / "rootfs")
    assert not _mounts_under(str(tmp_path)), "the container's mounts leaked to the host"


def spec_for(rootfs: Path, *args: str, **options):
    from pyengine.runtime.spec import default_spec

    return default_spec(list(args), str(rootfs), hostname=options.pop("hostname", "box"), **options)


def run(spec, stdin: bytes | None = None, timeout: float = 20) -> tuple[int, str, str]:
    """Launch, collect stdout/stderr, reap; (exit code, stdout, stderr)."""
    from pyengine.runtime.launch import launch

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r = in_w = None
    if stdin is not None:
        in_r, in_w = os.pipe()
    try:
        process = launch("test", spec, [], stdin=in_r, stdout=out_w, stderr=err_w)
    except BaseException:
        for fd in (out_r, err_r, in_w):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        for fd in (out_w, err_w, in_r):
            if fd is not None:
                os.close(fd)
    if in_w is not None:
        os.write(in_w, stdin)
        os.close(in_w)
    chunks = {out_r: [], err_r: []}
    deadline = time.monotonic() + timeout
    open_fds = [out_r, err_r]
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(open_fds, [], [], 0.5)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
                os.close(fd)
    for fd in open_fds:
        os.close(fd)
    if open_fds:
        process.kill()
    code = process.wait()
    return code, b"".join(chunks[out_r]).decode(), b"".join(chunks[err_r]).decode()


def sh(rootfs: Path, script: str, **options) -> tuple[int, str, str]:
    return run(spec_for(rootfs, "sh", "-c", script, **options))


def test_command_is_pid_1_with_its_hostname_and_cmdline(rootfs: Path) -> None:
    code, out, err = sh(rootfs, 'echo $$; hostname; tr "\\0" " " < /proc/1/cmdline; true', hostname="ctr-one")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "1"
    assert lines[1] == "ctr-one"
    assert lines[2].startswith("sh -c echo $$")


def test_namespaces_differ_from_the_host(rootfs: Path) -> None:
    from pyengine.runtime.launch import launch

    in_r, in_w = os.pipe()
    process = launch("test", spec_for(rootfs, "sh", "-c", "read line"), [], stdin=in_r)
    os.close(in_r)
    try:
        for name in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
            ours = os.readlink(f"/proc/self/ns/{name}")
            theirs = os.readlink(f"/proc/{process.pid}/ns/{name}")
            assert ours != theirs, name
        # No user namespace: the container's root is the host's root, confined by caps.
        assert os.readlink(f"/proc/{process.pid}/ns/user") == os.readlink("/proc/self/ns/user")
        # The host's pid namespace is unchanged for this process's next children.
        child = subprocess.run(["readlink", "/proc/self/ns/pid"], capture_output=True, text=True)
        assert child.stdout.strip() == os.readlink("/proc/self/ns/pid")
        # The container's mounts live in its own mount namespace, invisible here.
        assert not _mounts_under(str(rootfs))
    finally:
        os.write(in_w, b"\n")
        os.close(in_w)
        assert process.wait() == 0


def test_default_container_cannot_mount_unshare_or_write_proc_sys(rootfs: Path) -> None:
    code, out, err = sh(rootfs, "mount -t tmpfs x /mnt; echo mount=$?; unshare -n true; echo unshare=$?;"
                                "echo evil > /proc/sys/kernel/hostname; echo sysctl=$?; hostname")
    assert code == 0, err
    assert "mount=1" in out and "unshare=1" in out and "sysctl=1" in out
    assert "Read-only file system" in err
    assert out.splitlines()[-1] == "box"
    assert open("/proc/sys/kernel/hostname").read().strip() != "evil"


def test_default_container_cannot_read_kcore_or_masked_proc_files(rootfs: Path) -> None:
    code, out, err = sh(rootfs, "cat /proc/kcore > /dev/null; echo kcore=$?; wc -c < /proc/timer_list;"
                                "ls /sys/firmware | wc -l")
    assert code == 0, err
    lines = out.split()
    assert lines[0] == "kcore=1"
    # The host's timer_list and /sys/firmware are not empty; the masked ones are.
    assert len(open("/proc/timer_list").read()) > 0 and os.listdir("/sys/firmware")
    assert lines[1:] == ["0", "0"]


def test_default_container_cannot_load_a_module(rootfs: Path) -> None:
    code, out, err = sh(rootfs, "echo junk > /tmp/m.ko; insmod /tmp/m.ko; echo insmod=$?")
    assert "insmod=1" in out
    assert "Operation not permitted" in err


def test_default_capabilities_and_seccomp(rootfs: Path) -> None:
    code, out, err = sh(rootfs, "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status")
    status = dict(line.split(":\t") for line in out.splitlines())
    assert status["CapEff"] == DOCKER_DEFAULT_CAPEFF
    assert status["CapBnd"] == DOCKER_DEFAULT_CAPEFF
    assert status["Seccomp"] == "2"
    assert status["NoNewPrivs"] == "0"


def test_privileged_allows_mount_and_has_every_capability(rootfs: Path) -> None:
    code, out, err = sh(rootfs, "mount -t tmpfs x /mnt && echo hi > /mnt/f && cat /mnt/f;"
                                "grep -E '^(CapEff|Seccomp):' /proc/self/status; wc -c < /proc/timer_list",
                        privileged=True)
    assert code == 0, err
    assert out.splitlines()[0] == "hi"
    host_eff = [line for line in open("/proc/self/status") if line.startswith("CapBnd")][0].split()[1]
    assert f"CapEff:\t{host_eff}" in out
    assert "Seccomp:\t0" in out
    assert int(out.split()[-1]) > 0  # nothing masked


def test_no_new_privileges_is_applied(rootfs: Path) -> None:
    spec = spec_for(rootfs, "grep", "NoNewPrivs", "/proc/self/status")
    spec["process"]["noNewPrivileges"] = True
    code, out, _ = run(spec)
    assert out.split() == ["NoNewPrivs:", "1"]


def test_command_not_found_is_127_and_not_executable_is_126(rootfs: Path) -> None:
    from pyengine.runtime.launch import ContainerStartError

    with pytest.raises(ContainerStartError) as missing:
        run(spec_for(rootfs, "no-such-command"))
    assert missing.value.exit_code == 127
    assert "no-such-command" in str(missing.value) and "\n" not in str(missing.value)
    (rootfs / "bin" / "plain").write_text("#!/bin/sh\necho no\n")
    (rootfs / "bin" / "plain").chmod(0o644)
    with pytest.raises(ContainerStartError) as denied:
        run(spec_for(rootfs, "/bin/plain"))
    assert denied.value.exit_code == 126
    assert "permission denied" in str(denied.value)


def test_exit_status_is_passed_through_and_no_fd_leaks(rootfs: Path) -> None:
    from pyengine.runtime.launch import ContainerStartError, launch

    assert sh(rootfs, "exit 3")[0] == 3
    before = sorted(os.listdir("/proc/self/fd"))
    assert sh(rootfs, "exit 0")[0] == 0
    with pytest.raises(ContainerStartError):
        run(spec_for(rootfs, "no-such-command"))
    process = launch("test", spec_for(rootfs, "true", terminal=True), [])
    assert process.wait() == 0
    os.close(process.tty_master)  # the caller owns the pty master
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_signal_death_is_128_plus_n(rootfs: Path) -> None:
    from pyengine.runtime.launch import launch

    process = launch("test", spec_for(rootfs, "sleep", "30"), [])
    process.kill(signal.SIGKILL)
    assert process.wait() == 128 + signal.SIGKILL
    # With an init as PID 1 the command is an ordinary process that can die of SIGTERM.
    spec = spec_for(rootfs, "sh", "-c", "kill -TERM $$")
    spec["annotations"] = {"pyengine.init": "true"}
    assert run(spec)[0] == 128 + signal.SIGTERM


def test_init_is_the_static_shim_confined_like_the_command(rootfs: Path) -> None:
    # Docker's tini is a separate, confined binary; ours is pyengine-shim --init, exec'd by
    # descriptor into a root without the host's libc (this rootfs is busybox alone).
    spec = spec_for(rootfs, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; "
                                      "grep -E '^(CapEff|Seccomp):' /proc/1/status")
    spec["annotations"] = {"pyengine.init": "true"}
    code, out, err = run(spec)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["pyengine-init", "--init"], out
    status = dict(line.split(":\t") for line in lines[1:])
    assert status == {"CapEff": DOCKER_DEFAULT_CAPEFF, "Seccomp": "2"}


def test_init_reaps_zombies(rootfs: Path) -> None:
    spec = spec_for(rootfs, "sh", "-c", "sleep 0.1 & exec sleep 0.5")
    spec["annotations"] = {"pyengine.init": "true"}
    code, out, err = run(spec)
    assert code == 0, err


def test_default_rlimits_are_grantable_and_hard_limits_cannot_be_raised(rootfs: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code, out, err = sh(rootfs, f"ulimit -Hn; ulimit -Hn {hard + 1}; echo raise=$?")
    lines = out.split()
    assert int(lines[0]) <= hard
    assert "raise=1" in out


def test_ulimit_above_the_hard_limit_is_a_clear_error(rootfs: Path) -> None:
    from pyengine.errors import PyEngineError

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spec = spec_for(rootfs, "true")
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard + 10, "hard": hard + 10}]
    with pytest.raises(PyEngineError) as error:
        run(spec)
    assert "nofile" in str(error.value) and "CAP_SYS_RESOURCE" in str(error.value)
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
    spec["process"]["args"] = ["sh", "-c", "ulimit -n; ulimit -Hn"]
    assert run(spec)[1].split() == ["100", "200"]


def test_user_and_groups_are_applied(rootfs: Path) -> None:
    code, out, err = sh(rootfs, "id -u; id -g; id -G; grep CapEff /proc/self/status",
                        uid=1000, gid=1000, additional_gids=[10])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["1000", "1000"]
    assert set(lines[2].split()) == {"1000", "10"}
    assert lines[3].split()[1] == "0" * 16  # a non-root user keeps no effective capabilities


def test_minimal_dev_and_read_only_sys(rootfs: Path) -> None:
    code, out, err = sh(rootfs, "ls /dev | sort | tr '\\n' ' '; echo; echo x > /dev/null && echo null-ok;"
                                "head -c 4 /dev/urandom | wc -c; touch /sys/x; echo sys=$?; grep -c . /proc/mounts")
    assert code == 0, err
    names = out.splitlines()[0].split()
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd"} <= set(names)
    assert "sda" not in names and "console" not in names
    assert "null-ok" in out and "sys=1" in out
    assert out.splitlines()[2] == "4"


def test_read_only_root_and_bind_mounts(rootfs: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from host\n")
    spec = spec_for(rootfs, "sh", "-c", "cat /data/hello; touch /data/x; echo data=$?; touch /y; echo root=$?")
    spec["root"]["readonly"] = True
    spec["mounts"].append({"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]})
    code, out, err = run(spec)
    assert out.split() == ["from", "host", "data=1", "root=1"]
    assert not (rootfs / "y").exists() and not (shared / "x").exists()


def test_symlinked_mount_destination_stays_inside_the_rootfs(rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "escape").symlink_to(str(outside))
    spec = spec_for(rootfs, "sh", "-c", "ls /escape/t")
    spec["mounts"].append({"destination": "/escape/t", "type": "tmpfs", "source": "tmpfs", "options": []})
    code, _, err = run(spec)
    assert code == 0, err
    assert not (outside / "t").exists()
    assert (rootfs / str(outside).lstrip("/") / "t").is_dir()


def test_setup_failure_is_one_line_with_status_125(rootfs: Path) -> None:
    from pyengine.runtime.launch import ContainerStartError

    spec = spec_for(rootfs, "true")
    spec["mounts"].append({"destination": "/data", "type": "bind", "source": "/no/such/dir", "options": ["rbind"]})
    with pytest.raises(ContainerStartError) as error:
        run(spec)
    assert error.value.exit_code == 125
    assert str(error.value) == "cannot mount /no/such/dir on /data: No such file or directory"


def test_terminal_gets_a_pty_with_its_window_size(rootfs: Path) -> None:
    from pyengine.runtime.launch import launch

    spec = spec_for(rootfs, "sh", "-c", "tty; stty size; read x; stty size", terminal=True)
    spec["process"]["consoleSize"] = {"height": 30, "width": 100}
    process = launch("test", spec, [])
    output = b""

    def read_until(marker: bytes) -> None:
        nonlocal output
        deadline = time.monotonic() + 10
        while marker not in output and time.monotonic() < deadline:
            if select.select([process.tty_master], [], [], 0.5)[0]:
                try:
                    output += os.read(process.tty_master, 4096)
                except OSError:
                    break

    read_until(b"30 100")
    process.resize(40, 120)
    os.write(process.tty_master, b"\n")
    read_until(b"40 120")
    assert process.wait() == 0
    os.close(process.tty_master)
    text = output.decode()
    assert "/dev/pts/0" in text and "30 100" in text and "40 120" in text


def test_exec_in_joins_the_running_container(rootfs: Path) -> None:
    from pyengine.runtime.launch import exec_in, launch

    in_r, in_w = os.pipe()
    container = launch("test", spec_for(rootfs, "sh", "-c", "echo inside > /tmp/marker; read line"), [], stdin=in_r)
    os.close(in_r)
    try:
        for _ in range(100):
            if (rootfs / "tmp" / "marker").exists():
                break
            time.sleep(0.02)
        out_r, out_w = os.pipe()
        process = exec_in(container.pid, spec_for(rootfs, "sh", "-c", "cat /tmp/marker; hostname; echo $$;"
                                                  "ls -l /proc/self/ns | grep -c ."),
                          stdout=out_w)
        os.close(out_w)
        names = {}
        for name in ("pid", "mnt", "net", "uts", "ipc", "cgroup"):
            try:
                names[name] = os.readlink(f"/proc/{process.pid}/ns/{name}")
            except FileNotFoundError:  # it already exited
                break
        assert process.wait() == 0
        out = os.read(out_r, 65536).decode().split()
        os.close(out_r)
        assert out[0] == "inside" and out[1] == "box"
        assert int(out[2]) > 1  # a pid in the container's namespace, not the host's
        for name, link in names.items():
            assert link == os.readlink(f"/proc/{container.pid}/ns/{name}"), name
    finally:
        os.write(in_w, b"\n")
        os.close(in_w)
        assert container.wait() == 0


def test_nothing_is_left_running(rootfs: Path) -> None:
    from pyengine.runtime.launch import launch

    in_r, in_w = os.pipe()
    process = launch("test", spec_for(rootfs, "sh", "-c", "sleep 60 & sleep 60 & read line"), [], stdin=in_r)
    os.close(in_r)
    pid_ns = os.readlink(f"/proc/{process.pid}/ns/pid")
    os.write(in_w, b"\n")
    os.close(in_w)
    assert process.wait() == 0
    # PID 1's exit killed the rest of its pid namespace: no sleep 60 survives it.
    time.sleep(0.1)
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == pid_ns:
                    left.append(entry)
            except OSError:
                pass
    assert left == []


class RecordingIsolator:
    """An isolator that checks the launcher's contract: enter() sees the child before exec."""

    name = "recording"

    def __init__(self, fail_enter: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail_enter = fail_enter

    def prepare(self, container_id, spec):  # noqa: ANN001, ANN201
        self.calls.append(("prepare", container_id))
        return {"prepared": True}

    def enter(self, container_id, spec, pid):  # noqa: ANN001, ANN201
        exe = os.readlink(f"/proc/{pid}/exe")
        self.calls.append(("enter", exe))
        if self.fail_enter:
            raise RuntimeError("enter failed on purpose")

    def stats(self, container_id):  # noqa: ANN001, ANN201
        return {}

    def release(self, container_id):  # noqa: ANN001, ANN201
        self.calls.append(("release", container_id))

    def status(self):  # noqa: ANN201
        return []


def test_isolators_prepare_then_enter_before_exec(rootfs: Path) -> None:
    from pyengine.runtime.launch import launch

    isolator = RecordingIsolator()
    process = launch("c1", spec_for(rootfs, "true"), [isolator])
    assert process.wait() == 0
    assert isolator.calls[0] == ("prepare", "c1")
    kind, exe = isolator.calls[1]
    assert kind == "enter" and "busybox" not in exe  # still the forked Python, not the command
    assert process.isolator_state == {"recording": {"prepared": True}}


def test_failing_enter_kills_the_child_and_raises(rootfs: Path) -> None:
    from pyengine.runtime.launch import launch

    before = set(os.listdir("/proc"))
    with pytest.raises(RuntimeError, match="on purpose"):
        launch("c1", spec_for(rootfs, "sleep", "30"), [RecordingIsolator(fail_enter=True)])
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    assert not [p for p in set(os.listdir("/proc")) - before
                if p.isdigit() and "sleep" in open(f"/proc/{p}/cmdline").read()]


def _own_cgroup_v1(controller: str) -> Path | None:
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.rstrip("\n").split(":", 2)
        if controller in controllers.split(","):
            base = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            return base if base.is_dir() else None
    return None


def test_cgroup_namespace_is_rooted_at_the_cgroup_enter_chose(rootfs: Path) -> None:
    import uuid

    from pyengine.runtime.launch import launch

    parent = _own_cgroup_v1("pids")
    if parent is None:
        pytest.skip("no cgroup v1 pids controller on this host")
    created_parent = not (parent / "pyengine").exists()
    group = parent / "pyengine" / f"test-{uuid.uuid4().hex[:8]}"
    group.mkdir(parents=True)

    class PidsCgroup(RecordingIsolator):
        def enter(self, container_id, spec, pid):  # noqa: ANN001, ANN201
            (group / "cgroup.procs").write_text(str(pid))

    try:
        out_r, out_w = os.pipe()
        process = launch("c1", spec_for(rootfs, "grep", "pids", "/proc/self/cgroup"), [PidsCgroup()], stdout=out_w)
        os.close(out_w)
        assert process.wait() == 0
        line = os.read(out_r, 4096).decode().strip()
        os.close(out_r)
        # Inside the cgroup namespace the container's own cgroup is the root.
        assert line.endswith(":pids:/")
    finally:
        group.rmdir()
        if created_parent:
            group.parent.rmdir()


def test_network_namespace_is_joined_by_path(rootfs: Path, tmp_path: Path) -> None:
    netns = tmp_path / "netns"
    netns.touch()
    subprocess.run(["unshare", f"--net={netns}", "true"], check=True)
    try:
        spec = spec_for(rootfs, "readlink", "/proc/self/ns/net")
        for entry in spec["linux"]["namespaces"]:
            if entry["type"] == "network":
                entry["path"] = str(netns)
        code, out, err = run(spec)
        assert code == 0, err
        assert out.strip() == f"net:[{os.stat(netns).st_ino}]"
    finally:
        subprocess.run(["umount", str(netns)], check=True)


def test_exec_in_reports_127_and_gets_the_container_confinement(rootfs: Path) -> None:
    from pyengine.runtime.launch import ContainerStartError, exec_in, launch

    in_r, in_w = os.pipe()
    container = launch("test", spec_for(rootfs, "sh", "-c", "read line"), [], stdin=in_r)
    os.close(in_r)
    try:
        with pytest.raises(ContainerStartError) as missing:
            exec_in(container.pid, spec_for(rootfs, "no-such-tool"))
        assert missing.value.exit_code == 127
        out_r, out_w = os.pipe()
        process = exec_in(container.pid, spec_for(rootfs, "sh", "-c", "grep -E '^(CapEff|Seccomp):' "
                                                  "/proc/self/status; mount -t tmpfs x /mnt; echo mount=$?"),
                          stdout=out_w, stderr=out_w)
        os.close(out_w)
        assert process.wait() == 0
        out = os.read(out_r, 65536).decode()
        os.close(out_r)
        assert f"CapEff:\t{DOCKER_DEFAULT_CAPEFF}" in out and "Seccomp:\t2" in out and "mount=1" in out
    finally:
        os.write(in_w, b"\n")
        os.close(in_w)
        assert container.wait() == 0


def test_sysctl_and_oom_score_adj_apply_to_the_container_only(rootfs: Path) -> None:
    spec = spec_for(rootfs, "sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/self/oom_score_adj")
    spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    spec["process"]["oomScoreAdj"] = 500
    host_forward = open("/proc/sys/net/ipv4/ip_forward").read()
    code, out, err = run(spec)
    assert code == 0, err
    assert out.split() == ["1", "500"]
    assert open("/proc/sys/net/ipv4/ip_forward").read() == host_forward


def test_the_command_starts_with_default_signal_handling(rootfs: Path) -> None:
    # Python ignores SIGPIPE; the container's command must not inherit that.
    old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        code, out, err = run(spec_for(rootfs, "grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"))
    finally:
        signal.signal(signal.SIGUSR1, old)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])
    assert code == 0, err
    assert out.split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]


def test_host_mounts_are_invisible_and_do_not_propagate_in(rootfs: Path) -> None:
    from pyengine.runtime.launch import launch

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    process = launch("test", spec_for(rootfs, "sh", "-c", "read line; ls /mnt; grep -c /tmp/pytest /proc/mounts"),
                     [], stdin=in_r, stdout=out_w)
    os.close(in_r)
    os.close(out_w)
    subprocess.run(["mount", "-t", "tmpfs", "hostside", str(rootfs / "mnt")], check=True)
    try:
        (rootfs / "mnt" / "host-file").write_text("x")
        os.write(in_w, b"\n")
        os.close(in_w)
        assert process.wait() == 1  # grep -c found nothing
    finally:
        subprocess.run(["umount", str(rootfs / "mnt")], check=True)
    out = os.read(out_r, 65536).decode().split()
    os.close(out_r)
    assert out == ["0"]
