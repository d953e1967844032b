"""The kernel seam against the real kernel (each call in a forked child, so this process is
never changed), and the pure helpers above it without root."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from tests.conftest import need_root

pytestmark = pytest.mark.root


def in_child(body) -> int:  # noqa: ANN001
    """Run ``body()`` in a forked child; its return value (an int) is the exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(int(body()))
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_unshare_and_mount_stay_in_the_new_mount_namespace(tmp_path: Path) -> None:
    from pyengine.runtime import kernel as k

    need_root()
    target = tmp_path / "m"
    target.mkdir()

    def body() -> int:
        k.unshare(k.CLONE_NEWNS | k.CLONE_NEWUTS)
        k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        k.mount("tmpfs", str(target), "tmpfs", k.MS_NOSUID, "size=1m")
        (target / "f").write_text("x")
        k.sethostname("seam-test")
        ok = os.uname().nodename == "seam-test" and (target / "f").exists()
        k.umount2(str(target), k.MNT_DETACH)
        return 0 if ok else 1

    assert in_child(body) == 0
    assert not (target / "f").exists()
    assert os.uname().nodename != "seam-test"


def test_mount_error_carries_the_errno_and_path() -> None:
    from pyengine.runtime import kernel as k

    need_root()

    def body() -> int:
        k.unshare(k.CLONE_NEWNS)
        try:
            k.mount("/no/such/source", "/no/such/target", None, k.MS_BIND)
        except OSError as exc:
            return 0 if exc.errno == errno.ENOENT and exc.filename == "/no/such/target" else 2
        return 1

    assert in_child(body) == 0


def test_bounding_drop_and_capset_reduce_capabilities() -> None:
    from pyengine.runtime import kernel as k

    need_root()

    def body() -> int:
        keep = {k.CAPABILITIES["CAP_CHOWN"], k.CAPABILITIES["CAP_KILL"]}
        k.bounding_drop(keep)
        mask = sum(1 << c for c in keep)
        k.capset(mask, mask, 0)
        effective, permitted, _ = k.capget()
        bounding = [c for c in range(k.last_cap() + 1) if k.prctl(k.PR_CAPBSET_READ, c) == 1]
        return 0 if (effective, permitted, set(bounding)) == (mask, mask, keep) else 1

    assert in_child(body) == 0


def test_seccomp_profile_errno_rule_makes_keyctl_fail_with_eperm() -> None:
    from pyengine.runtime import kernel as k

    if k.libseccomp() is None:
        pytest.skip("needs libseccomp2")
    libc = ctypes.CDLL(None, use_errno=True)
    sys_keyctl = 250  # x86_64
    KEYCTL_GET_KEYRING_ID = 0
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["keyctl", "no_such_syscall_name"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}

    def body() -> int:
        k.seccomp_load_profile(profile, set_nnp=True)
        rc = libc.syscall(sys_keyctl, KEYCTL_GET_KEYRING_ID, -3, 0)
        return 0 if rc == -1 and ctypes.get_errno() == errno.EPERM else 1

    assert in_child(body) == 0
    # Without the filter the same call is not refused with EPERM.
    rc = libc.syscall(sys_keyctl, KEYCTL_GET_KEYRING_ID, -3, 0)
    assert rc >= 0 or ctypes.get_errno() != errno.EPERM


def test_docker_default_profile_refuses_by_default_and_by_argument() -> None:
    """Docker's allow list, built for the default capabilities, loaded by a root child that
    has every capability: what fails here fails because of the filter."""
    from pyengine.runtime import kernel as k
    from pyengine.runtime.spec import DEFAULT_CAPABILITIES, default_seccomp

    need_root()
    if k.libseccomp() is None:
        pytest.skip("needs libseccomp2")
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_personality, SYS_clone3, SYS_keyctl = 135, 435, 250  # x86_64
    AF_UNIX, AF_VSOCK, SOCK_STREAM, ADDR_NO_RANDOMIZE = 1, 40, 1, 0x0040000

    def errno_of(rc: int) -> int:
        return 0 if rc >= 0 else ctypes.get_errno()

    def body() -> int:
        k.seccomp_load_profile(default_seccomp(DEFAULT_CAPABILITIES), set_nnp=True)
        results = [
            errno_of(libc.syscall(SYS_keyctl, 0, -3, 0)) == errno.EPERM,          # not in the list
            errno_of(libc.unshare(k.CLONE_NEWUTS)) == errno.EPERM,                # needs CAP_SYS_ADMIN
            errno_of(libc.socket(AF_VSOCK, SOCK_STREAM, 0)) == errno.EPERM,        # socket, by family
            errno_of(libc.socket(AF_UNIX, SOCK_STREAM, 0)) == 0,
            errno_of(libc.syscall(SYS_personality, ctypes.c_ulong(0xFFFFFFFF))) == 0,  # personality, by value
            errno_of(libc.syscall(SYS_personality, ctypes.c_ulong(ADDR_NO_RANDOMIZE))) == errno.EPERM,
            errno_of(libc.syscall(SYS_clone3, 0, 0)) == errno.ENOSYS,             # libc falls back to clone
        ]
        pid = os.fork()  # clone without namespace flags is allowed
        if pid == 0:
            os._exit(7)
        results.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7)
        return sum(1 << n for n, ok in enumerate(results) if not ok)

    assert in_child(body) == 0, "bit n set: check n failed"


def test_profile_follows_capabilities() -> None:
    from pyengine.runtime.spec import DEFAULT_CAPABILITIES, default_seccomp

    def allowed(caps: list[str]) -> set[str]:
        return {name for rule in default_seccomp(caps)["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
                and not rule.get("args") for name in rule["names"]}

    default = allowed(DEFAULT_CAPABILITIES)
    assert "chroot" in default and not {"mount", "unshare", "setns", "reboot", "bpf"} & default
    admin = allowed([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    assert {"mount", "unshare", "setns", "clone", "clone3"} <= admin
    clone3 = [r for r in default_seccomp(DEFAULT_CAPABILITIES)["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 and clone3[0]["action"] == "SCMP_ACT_ERRNO" and clone3[0]["errnoRet"] == errno.ENOSYS


def test_parse_mount_options() -> None:
    from pyengine.runtime import kernel as k
    from pyengine.runtime.launch import parse_mount_options

    flags, propagation, data = parse_mount_options(["rbind", "ro", "nosuid", "rslave", "mode=755", "size=1m"])
    assert flags == k.MS_BIND | k.MS_REC | k.MS_RDONLY | k.MS_NOSUID
    assert propagation == k.MS_SLAVE | k.MS_REC
    assert data == "mode=755,size=1m"
    assert parse_mount_options(["ro", "rw"])[0] == 0


def test_resolve_in_root_never_leaves_the_root(tmp_path: Path) -> None:
    from pyengine.runtime.launch import resolve_in_root

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")
    (root / "up").symlink_to("../../../../..")
    (root / "loop").symlink_to("loop")
    assert resolve_in_root(str(root), "/abs/hosts") == str(root / "etc" / "hosts")
    assert resolve_in_root(str(root), "/up/etc/passwd") == str(root / "etc" / "passwd")
    assert resolve_in_root(str(root), "/../../x") == str(root / "x")
    with pytest.raises(OSError):
        resolve_in_root(str(root), "/loop/x")


def test_default_spec_matches_docker_defaults() -> None:
    from pyengine.runtime.spec import DEFAULT_CAPABILITIES, default_spec

    spec = default_spec(["true"], "/r")
    assert len(DEFAULT_CAPABILITIES) == 14
    assert spec["process"]["capabilities"]["bounding"] == DEFAULT_CAPABILITIES
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/proc/sys" in spec["linux"]["readonlyPaths"]
    destinations = {m["destination"] for m in spec["mounts"]}
    assert destinations >= {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"}
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = spec["process"]["rlimits"][0]
    assert nofile["type"] == "RLIMIT_NOFILE" and (hard == resource.RLIM_INFINITY or nofile["hard"] <= hard)
    privileged = default_spec(["true"], "/r", privileged=True)
    assert not privileged["linux"]["maskedPaths"] and "seccomp" not in privileged["linux"]
    assert "CAP_SYS_ADMIN" in privileged["process"]["capabilities"]["bounding"]


@pytest.fixture
def seccomp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """kernel's filter cache in ``tmp_path`` (as a monitor has it in its run root), with an
    empty in-process cache; both as they were afterwards."""
    from pyengine.runtime import kernel as k

    if k.libseccomp() is None:
        pytest.skip("needs libseccomp2")
    monkeypatch.setattr(k, "_compiled", {})
    monkeypatch.setattr(k, "_cache_dir", None)
    k.use_seccomp_cache(tmp_path)
    return tmp_path


def _fresh_compile(profile: dict) -> bytes:
    from pyengine.runtime import kernel as k

    return k._seccomp_build(k.libseccomp(), profile)


def test_cached_seccomp_filter_is_the_compiled_one(seccomp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyengine.runtime import kernel as k
    from pyengine.runtime.spec import DEFAULT_CAPABILITIES, default_seccomp

    profile = default_seccomp(DEFAULT_CAPABILITIES)
    first = k.seccomp_compile(profile)
    (cache,) = (seccomp_cache / "seccomp").iterdir()
    assert first == _fresh_compile(profile) and len(first) % 8 == 0
    assert (cache.stat().st_mode & 0o777, cache.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary left
    # the next process (an empty in-process cache) reads it instead of compiling
    monkeypatch.setattr(k, "_compiled", {})
    compiled = []
    monkeypatch.setattr(k, "_seccomp_build", lambda lib, p: compiled.append(p) or b"")
    assert k.seccomp_compile(profile) == first and compiled == []
    # another profile is another entry: never the first one's program
    other = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}]}
    monkeypatch.undo()
    k.use_seccomp_cache(seccomp_cache)
    monkeypatch.setattr(k, "_compiled", {})
    assert k.seccomp_compile(other) == _fresh_compile(other) != first
    assert len(list((seccomp_cache / "seccomp").iterdir())) == 2
    k.use_seccomp_cache(None)

    def body() -> int:  # the program read from the file confines as the compiled one does
        k._compiled.clear()
        k.use_seccomp_cache(seccomp_cache)
        k.seccomp_load_profile(other, set_nnp=True)
        libc = ctypes.CDLL(None, use_errno=True)
        return 0 if libc.syscall(250, 0, -3, 0) < 0 and ctypes.get_errno() == errno.EPERM else 1

    assert in_child(body) == 0


def test_a_damaged_seccomp_cache_is_compiled_again(seccomp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyengine.runtime import kernel as k
    from pyengine.runtime.spec import DEFAULT_CAPABILITIES, default_seccomp

    profile = default_seccomp(DEFAULT_CAPABILITIES)
    good = k.seccomp_compile(profile)
    (cache,) = (seccomp_cache / "seccomp").iterdir()
    whole = cache.read_bytes()
    other = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
    k.seccomp_compile(other)
    (other_file,) = [p for p in (seccomp_cache / "seccomp").iterdir() if p != cache]
    flipped = bytearray(whole)
    flipped[-5] ^= 0x01  # one bit of one instruction
    damaged = {
        "a flipped bit": bytes(flipped),
        "truncated": whole[:-8],
        "an extra instruction": whole + whole[-8:],
        "no magic": b"X" + whole[1:],
        "empty": b"",
        "another profile's entry": other_file.read_bytes(),
    }
    for what, data in damaged.items():
        cache.write_bytes(data)
        monkeypatch.setattr(k, "_compiled", {})
        assert k.seccomp_compile(profile) == good, what
        assert cache.read_bytes() == whole, f"{what}: not replaced by a good entry"
