"""What a host user and a container may not do (issue 13, items 1, 2, 9 and 10): reach the
stores' files (the data root 0710, the run root 0711, everything else 0700) and run a layer's
setuid file; gain privileges through a setuid binary under no_new_privs; write /etc/hosts,
/etc/hostname and /etc/resolv.conf of a read-only container; use io_uring.

The host-user tests put the roots under a fresh directory of /tmp made 0755: pytest's own temp
dirs live under /tmp/pytest-of-root, which is 0700 and would hide every hole. Probes run as
nobody through ``setpriv``; a static C probe reports real and effective uid (busybox drops a
setuid bit by itself, so it cannot show one being honoured) and io_uring's errnos.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers

from conftest import EngineEnv, need_root, need_tool

pytestmark = pytest.mark.root

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int error_of(long rc) { return rc < 0 ? errno : 0; }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "uring") == 0) {
        unsigned char params[120];  /* struct io_uring_params */
        memset(params, 0, sizeof params);
        long fd = syscall(425, 1, params);
        printf("io_uring_setup %d\n", error_of(fd));
        if (fd >= 0)
            close(fd);
        printf("io_uring_enter %d\n", error_of(syscall(426, -1, 0, 0, 0, NULL, 0)));
        printf("io_uring_register %d\n", error_of(syscall(427, -1, 0, NULL, 0)));
        return 0;
    }
    printf("%d %d\n", (int)getuid(), (int)geteuid());
    return 0;
}
"""


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static binary: ``probe`` prints "UID EUID", ``probe uring`` io_uring's errnos."""
    need_tool("gcc")
    work = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(work / "probe"), str(work / "probe.c")],
                   check=True, capture_output=True)
    return work / "probe"


@pytest.fixture(scope="session")
def suid_image_tar(tmp_path_factory: pytest.TempPathFactory, probe: Path) -> Path:
    """The busybox rootfs plus /bin/probe (0755) and two setuid-root files: /bin/suid-probe
    and /bin/busybox-suid (a copy of busybox; busybox runs as such by a name starting so)."""
    base = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("suid-image") / "rootfs.tar"
    with tarfile.open(base) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, path, mode in (("bin/probe", probe, 0o755), ("bin/suid-probe", probe, 0o4755),
                                 ("bin/busybox-suid", Path("/bin/busybox"), 0o4755)):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
            dst.addfile(info, io.BytesIO(data))
    return out


def _mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@pytest.fixture
def public_dir() -> Path:
    """A directory every host user may pass through (0755, under /tmp), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pyengine-modes-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    left = _mounts_under(str(path) + "/")
    for point in reversed(left):
        subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
    assert not left, f"test left mounts behind: {left}"


def _open_engine(engine_env: EngineEnv, public_dir: Path, driver: str, *, premade: bool) -> EngineEnv:
    """An engine whose roots are under ``public_dir``; ``premade``: made 0755 beforehand, as
    an older engine (or ``mkdir``) left them."""
    data_root, run_root = public_dir / "data", public_dir / "run"
    if premade:
        for path in (data_root, run_root, data_root / "storage", data_root / "storage" / driver):
            path.mkdir()
            os.chmod(path, 0o755)
    env = dict(engine_env.env, PYENGINE_DATA_ROOT=str(data_root), PYENGINE_RUN_ROOT=str(run_root),
               PYENGINE_STORAGE_DRIVER=driver)
    return EngineEnv(public_dir, data_root, run_root, engine_env.config_path, env)


@pytest.fixture(params=["overlay", "vfs"])
def exposed(request: pytest.FixtureRequest, engine_env: EngineEnv, public_dir: Path,
            suid_image_tar: Path) -> EngineEnv:
    """An engine on roots a careless install left 0755, with the setuid image imported."""
    need_root()
    need_tool("setpriv")
    engine = _open_engine(engine_env, public_dir, request.param, premade=True)
    engine.run("import", str(suid_image_tar), "suid:latest", check=True)
    yield engine
    remove_all_containers(engine.run)


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    """``argv`` exec'd by a shell of nobody's: setpriv itself keeps root's capabilities up to its
    execve, so a path it execs directly is looked up as root's would be."""
    script = 'exec "$0" "$@"'
    return subprocess.run([*NOBODY, "/bin/busybox", "sh", "-c", script, *argv], capture_output=True, text=True,
                          timeout=30)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _files_named(top: Path, name: str) -> list[Path]:
    return [Path(d) / name for d, _, files in os.walk(top) if name in files]


# -- 1. the stores' modes --------------------------------------------------------------------
def test_setuid_probe_outside_the_stores_does_give_root(public_dir: Path, probe: Path) -> None:
    """The control for the tests below: on this filesystem a setuid-root file run by nobody
    does give euid 0, so a store left open would be a way to root."""
    need_root()
    need_tool("setpriv")
    planted = public_dir / "suid-probe"
    shutil.copy(probe, planted)
    os.chmod(planted, 0o4755)
    assert as_nobody(str(planted)).stdout.split() == ["65534", "0"]


def test_host_user_cannot_reach_or_run_layer_and_container_files(exposed: EngineEnv) -> None:
    cid = exposed.run("run", "-d", "suid", "sh", "-c", "echo secret > /root/secret; sleep 60",
                      check=True).stdout.strip()
    storage = exposed.data_root / "storage"
    for _ in range(100):
        secrets = _files_named(storage, "secret")
        if secrets:
            break
        subprocess.run(["sleep", "0.05"])
    probes = _files_named(storage, "suid-probe")
    busyboxes = _files_named(storage, "busybox-suid")
    # the image's layer and the container's rootfs (overlay: its merged mount as well)
    assert len(probes) >= 2 and len(busyboxes) >= 2 and secrets, (probes, secrets)
    for path in probes:
        result = as_nobody(str(path))
        assert result.returncode != 0 and result.stdout == "", f"{path}: {result.stdout}"
        assert "Permission denied" in result.stderr
    for path in busyboxes:
        result = as_nobody(str(path), "id", "-u")
        assert result.returncode != 0 and result.stdout == "", f"{path}: {result.stdout}"
    for path in secrets + probes:
        result = as_nobody("/bin/busybox", "cat", str(path))
        assert result.returncode != 0 and "secret" not in result.stdout
    # nobody cannot list anything in either root
    found = as_nobody("/bin/busybox", "find", str(exposed.data_root), str(exposed.run_root))
    assert found.stdout.split() == [str(exposed.data_root), str(exposed.run_root)]
    # the roots a careless install left 0755 were tightened; what the engine made is 0700
    assert _mode(exposed.data_root) == 0o710
    assert _mode(exposed.run_root) == 0o711
    driver = exposed.env["PYENGINE_STORAGE_DRIVER"]
    for sub in (f"storage/{driver}", "images", "containers", f"containers/{cid}", "blobs"):
        assert _mode(exposed.data_root / sub) == 0o700, sub
    for directory, dirs, _ in os.walk(exposed.run_root):
        for name in dirs:
            assert _mode(Path(directory) / name) == 0o700, Path(directory) / name
    exposed.run("rm", "-f", cid, check=True)


def test_fresh_roots_are_made_root_only(engine_env: EngineEnv, public_dir: Path, suid_image_tar: Path) -> None:
    need_root()
    engine = _open_engine(engine_env, public_dir, "overlay", premade=False)
    engine.run("import", str(suid_image_tar), "suid:latest", check=True)
    engine.run("run", "--rm", "-v", "vol:/data", "suid", "true", check=True)
    assert _mode(engine.data_root) == 0o710
    assert _mode(engine.run_root) == 0o711
    for sub in ("storage", "storage/overlay", "storage/overlay/l", "images", "images/records", "containers",
                "blobs", "blobs/sha256", "volumes", "volumes/vol"):
        assert _mode(engine.data_root / sub) == 0o700, sub
    for layer in (engine.data_root / "storage" / "overlay").iterdir():
        if layer.name != "l":
            assert _mode(layer) == 0o700, layer
    assert _mode(engine.data_root / "volumes" / "vol" / "_data") == 0o755  # as Docker's
    for directory, dirs, _ in os.walk(engine.run_root):
        for name in dirs:
            assert _mode(Path(directory) / name) == 0o700, Path(directory) / name
    remove_all_containers(engine.run)


def test_a_non_root_container_user_writes_a_volume_it_owns(engine_env: EngineEnv, public_dir: Path,
                                                           suid_image_tar: Path) -> None:
    """The volume's _data is 0755 under 0700 parents: the host cannot reach it, a container
    user can use it as its owner (Docker's modes)."""
    need_root()
    need_tool("setpriv")
    engine = _open_engine(engine_env, public_dir, "overlay", premade=False)
    engine.run("import", str(suid_image_tar), "suid:latest", check=True)
    engine.run("volume", "create", "shared", check=True)
    engine.run("run", "--rm", "-v", "shared:/data", "suid", "chown", "1000:1000", "/data", check=True)
    result = engine.run("run", "--rm", "-u", "1000", "-v", "shared:/data", "suid", "sh", "-c",
                        "echo from-1000 > /data/f && cat /data/f && id -u", check=True)
    assert result.stdout.split() == ["from-1000", "1000"]
    data = engine.data_root / "volumes" / "shared" / "_data"
    assert (data / "f").read_text() == "from-1000\n"
    assert as_nobody("/bin/busybox", "cat", str(data / "f")).returncode != 0
    remove_all_containers(engine.run)


# -- 2. no-new-privileges ------------------------------------------------------------------
@pytest.fixture
def suid_engine(engine_env: EngineEnv, suid_image_tar: Path) -> EngineEnv:
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = "overlay"
    engine_env.run("import", str(suid_image_tar), "suid:latest", check=True)
    yield engine_env
    remove_all_containers(engine_env.run)


_IDS_AND_NNP = "/bin/suid-probe; grep NoNewPrivs /proc/self/status"


def test_setuid_binary_raises_euid_without_no_new_privileges(suid_engine: EngineEnv) -> None:
    """The control: the probe's setuid bit works in a container (its rootfs is not nosuid)."""
    for extra in ([], ["--security-opt", "no-new-privileges=false"], ["--security-opt", "no-new-privileges:0"]):
        result = suid_engine.run("run", "--rm", "-u", "1000", *extra, "suid", "sh", "-c", _IDS_AND_NNP,
                                 check=True)
        assert result.stdout.split() == ["1000", "0", "NoNewPrivs:", "0"], extra


@pytest.mark.parametrize("opt", ["no-new-privileges", "no-new-privileges=true", "no-new-privileges:true",
                                 "no-new-privileges=1"])
def test_no_new_privileges_keeps_a_setuid_binary_at_the_users_euid(suid_engine: EngineEnv, opt: str) -> None:
    result = suid_engine.run("run", "--rm", "-u", "1000", "--security-opt", opt, "suid", "sh", "-c", _IDS_AND_NNP,
                             check=True)
    assert result.stdout.split() == ["1000", "1000", "NoNewPrivs:", "1"]


def test_engine_default_no_new_privileges_from_the_config_file(suid_engine: EngineEnv) -> None:
    suid_engine.write_config("no-new-privileges = true\n")
    result = suid_engine.run("run", "--rm", "-u", "1000", "suid", "sh", "-c", _IDS_AND_NNP, check=True)
    assert result.stdout.split() == ["1000", "1000", "NoNewPrivs:", "1"]
    # a container may still say otherwise, as with dockerd's default
    result = suid_engine.run("run", "--rm", "-u", "1000", "--security-opt", "no-new-privileges=false", "suid",
                             "sh", "-c", _IDS_AND_NNP, check=True)
    assert result.stdout.split() == ["1000", "0", "NoNewPrivs:", "0"]
    # exec gets the container's no_new_privs
    cid = suid_engine.run("run", "-d", "suid", "sleep", "60", check=True).stdout.strip()
    result = suid_engine.run("exec", "-u", "1000", cid, "sh", "-c", _IDS_AND_NNP, check=True)
    assert result.stdout.split() == ["1000", "1000", "NoNewPrivs:", "1"]
    info = suid_engine.run("info", check=True).stdout
    row = next(line.split() for line in info.splitlines() if line.startswith("no-new-privileges"))
    assert row == ["no-new-privileges", "True", f"file:{suid_engine.config_path}"]
    suid_engine.run("rm", "-f", cid, check=True)


def test_engine_default_no_new_privileges_from_the_environment(suid_engine: EngineEnv) -> None:
    env = {"PYENGINE_NO_NEW_PRIVILEGES": "true"}
    result = suid_engine.run("run", "--rm", "-u", "1000", "suid", "sh", "-c", _IDS_AND_NNP, env=env, check=True)
    assert result.stdout.split() == ["1000", "1000", "NoNewPrivs:", "1"]
    info = suid_engine.run("info", env=env, check=True).stdout
    assert ["no-new-privileges", "True", "env"] in [line.split() for line in info.splitlines()]
    bad = suid_engine.run("info", env={"PYENGINE_NO_NEW_PRIVILEGES": "maybe"})
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("pyengine: error: PYENGINE_NO_NEW_PRIVILEGES: expected a boolean "
                                  "(true or false), got 'maybe'")
    suid_engine.write_config('no-new-privileges = "yes"\n')
    bad = suid_engine.run("info")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "no-new-privileges: expected boolean, got str 'yes'" in bad.stderr


@pytest.mark.parametrize(("opt", "message"), [
    ("bogus", 'invalid --security-opt 1: "bogus"'),
    ("label", 'invalid --security-opt 1: "label"'),
    ("bogus=1", 'invalid --security-opt 2: "bogus=1"'),
    ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ("systempaths=confined", 'invalid --security-opt 2: "systempaths=confined"'),
    ("mask=relative", 'invalid --security-opt 2: "mask=relative"'),
    ("seccomp=/no/such/profile.json", 'invalid --security-opt "seccomp=/no/such/profile.json": pyengine does not '
     "support a seccomp profile other than Docker's default; only seccomp=unconfined can replace it"),
    ("apparmor=my-profile", 'invalid --security-opt "apparmor=my-profile": pyengine does not support AppArmor '
     "profiles (this engine applies none; apparmor=unconfined is accepted)"),
    ("label=type:svirt_t", 'invalid --security-opt "label=type:svirt_t": pyengine does not support SELinux '
     "labels (this engine applies none; label=disable is accepted)"),
])
def test_bad_security_opt_is_one_line_exit_125_and_creates_nothing(suid_engine: EngineEnv, opt: str,
                                                                   message: str) -> None:
    for command in ("run", "create"):
        result = suid_engine.run(command, "--security-opt", opt, "suid", "true")
        assert result.returncode == 125, result.stderr
        assert result.stderr.strip() == f"pyengine: error: {message}"
    assert suid_engine.run("ps", "-aq").stdout == ""
    containers = suid_engine.data_root / "containers"
    assert not containers.exists() or [p.name for p in containers.iterdir()] == [".lock"]


def test_accepted_security_opts_apply(suid_engine: EngineEnv) -> None:
    def sh(script: str, *opts: str) -> str:
        args = [a for opt in opts for a in ("--security-opt", opt)]
        return suid_engine.run("run", "--rm", *args, "suid", "sh", "-c", script, check=True).stdout

    timer_list = "wc -c < /proc/timer_list"
    assert sh(timer_list).split() == ["0"]  # masked by default
    assert int(sh(timer_list, "systempaths=unconfined").split()[0]) > 0
    assert int(sh(timer_list, "unmask=/proc/timer_list").split()[0]) > 0
    assert int(sh(timer_list, "unmask=ALL").split()[0]) > 0
    assert sh("wc -c < /etc/passwd; wc -c < /etc/group", "mask=/etc/passwd:/etc/group").split() == ["0", "0"]
    assert sh("echo ok", "apparmor=unconfined", "label=disable", "seccomp:unconfined").split() == ["ok"]


# -- 9. --read-only and the /etc files -----------------------------------------------------
def test_read_only_container_cannot_write_its_etc_files(suid_engine: EngineEnv) -> None:
    script = "for f in hosts hostname resolv.conf; do echo x >> /etc/$f && echo $f; done; true"
    writable = suid_engine.run("run", "--rm", "suid", "sh", "-c", script, check=True)
    assert writable.stdout.split() == ["hosts", "hostname", "resolv.conf"]
    read_only = suid_engine.run("run", "--rm", "--read-only", "suid", "sh", "-c", script, check=True)
    assert read_only.stdout == ""
    assert read_only.stderr.count("Read-only file system") == 3, read_only.stderr


# -- 10. io_uring --------------------------------------------------------------------------
def test_host_network_container_writes_copies_not_the_hosts_etc_files(suid_engine: EngineEnv) -> None:
    """With --network host a container gets copies of the host's hosts and resolv.conf, as in
    Docker: writing them inside must not change the host's name resolution."""
    before = {name: Path("/etc", name).read_bytes() for name in ("hosts", "resolv.conf")}
    try:
        result = suid_engine.run("run", "--rm", "--network", "host", "suid", "sh", "-c",
                                 "echo 10.9.9.9 pyengine-probe >> /etc/hosts && echo nameserver 10.9.9.9 "
                                 ">> /etc/resolv.conf && grep -c pyengine-probe /etc/hosts", check=True)
        assert result.stdout.strip() == "1"
        assert {name: Path("/etc", name).read_bytes() for name in before} == before
    finally:
        for name, content in before.items():
            if Path("/etc", name).read_bytes() != content:
                Path("/etc", name).write_bytes(content)


def test_io_uring_is_refused_inside_a_container(suid_engine: EngineEnv) -> None:
    refused = suid_engine.run("run", "--rm", "suid", "/bin/probe", "uring", check=True)
    assert refused.stdout.split() == ["io_uring_setup", str(errno.EPERM), "io_uring_enter", str(errno.EPERM),
                                      "io_uring_register", str(errno.EPERM)]
    # The control: without the filter the kernel serves io_uring (a ring is made; the other
    # two calls reach the kernel, which refuses their bad arguments in its own words).
    open_ = suid_engine.run("run", "--rm", "--security-opt", "seccomp=unconfined", "suid", "/bin/probe", "uring",
                            check=True)
    words = open_.stdout.split()
    assert words[:4] == ["io_uring_setup", "0", "io_uring_enter", str(errno.EBADF)]
    assert words[4] == "io_uring_register" and int(words[5]) in (errno.EBADF, errno.EINVAL)


def test_default_profile_refuses_io_uring_in_a_filtered_child() -> None:
    """Docker's profile loaded in a forked root child: the three calls fail with EPERM there,
    and io_uring_setup works in this (unfiltered) process."""
    from pyengine.runtime import kernel as k
    from pyengine.runtime.spec import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, default_seccomp

    need_root()
    if k.libseccomp() is None:
        pytest.skip("needs libseccomp2")
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register = 425, 426, 427

    def syscall(number: int, *args: int | ctypes.Array) -> int:
        longs = [a if isinstance(a, ctypes.Array) else ctypes.c_long(a) for a in args]
        rc = libc.syscall(ctypes.c_long(number), *longs)
        return rc if rc >= 0 else -ctypes.get_errno()

    def calls() -> list[int]:
        fd = syscall(SYS_io_uring_setup, 1, ctypes.create_string_buffer(120))
        if fd >= 0:
            os.close(fd)
        return [min(fd, 0) * -1, -syscall(SYS_io_uring_enter, -1, 0, 0, 0, 0, 0),
                -syscall(SYS_io_uring_register, -1, 0, 0, 0)]

    unfiltered = calls()
    assert unfiltered[:2] == [0, errno.EBADF] and unfiltered[2] in (errno.EBADF, errno.EINVAL)
    for caps in (DEFAULT_CAPABILITIES, ALL_CAPABILITIES):
        profile = default_seccomp(list(caps))
        read_r, read_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                k.seccomp_load_profile(profile, set_nnp=True)
                os.write(read_w, " ".join(map(str, calls())).encode())
                os._exit(0)
            except BaseException:  # noqa: BLE001
                os._exit(99)
        os.close(read_w)
        with os.fdopen(read_r) as f:
            seen = f.read()
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert seen.split() == [str(errno.EPERM)] * 3, caps
