"""Docker's defaults as an OCI runtime spec (config.json as a dict): capabilities, masked and
read-only paths, the mounts of a minimal /dev, /proc and /sys, the default seccomp deny list,
and rlimits this host can grant. Pure data; the launcher applies it."""

from __future__ import annotations

import resource
from typing import Any

#: Docker's default capability set (moby oci/caps/defaults.go)
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def _all_capabilities() -> list[str]:
    from pyengine.runtime.kernel import CAPABILITIES, last_cap

    top = last_cap()
    return [name for name, number in CAPABILITIES.items() if number <= top]


ALL_CAPABILITIES = _all_capabilities()

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]

READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

#: syscalls the default profile refuses with EPERM. Docker's profile is an allow list; this is
#: the part of it that matters with the default capabilities (mount, unshare, setns and the
#: like are already refused for lack of CAP_SYS_ADMIN).
SECCOMP_DENIED = [
    "add_key", "request_key", "keyctl", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "create_module", "open_by_handle_at", "bpf",
    "perf_event_open", "userfaultfd", "lookup_dcookie", "nfsservctl", "quotactl",
    "get_kernel_syms", "query_module", "uselib", "ustat", "sysfs", "_sysctl", "acct",
    "swapon", "swapoff", "reboot", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "stime", "vm86", "vm86old", "iopl", "ioperm", "move_pages", "mbind", "set_mempolicy",
    "get_mempolicy", "pivot_root", "fanotify_init", "name_to_handle_at", "process_vm_readv",
    "process_vm_writev", "kcmp", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree",
    "move_mount", "mount_setattr", "quotactl_fd",
]

DEVICES = [
    # path, type, major, minor, mode
    ("/dev/null", "c", 1, 3, 0o666), ("/dev/zero", "c", 1, 5, 0o666), ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666), ("/dev/urandom", "c", 1, 9, 0o666), ("/dev/tty", "c", 5, 0, 0o666),
]

#: OCI rlimit name -> Linux resource number (the resource module lacks a few of them)
RLIMIT_NAMES = {name: number for number, name in enumerate((
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
    "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME"))}

_NOFILE_WANTED = 1048576


def default_rlimits() -> list[dict[str, Any]]:
    """NOFILE as high as the host's hard limit allows (Docker/podman want 1048576; without
    CAP_SYS_RESOURCE in the bounding set a hard limit cannot be raised, so stay under it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = _NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(_NOFILE_WANTED, hard)
    return [{"type": "RLIMIT_NOFILE", "soft": limit, "hard": limit}]


def default_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        # The container's own cgroups, as runc mounts them: made after the cgroup namespace,
        # so each hierarchy's root is the container's cgroup (see launch._mount_cgroups).
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]


def default_spec(args: list[str], rootfs: str, *, terminal: bool = False, privileged: bool = False,
                 hostname: str = "", env: list[str] | None = None, cwd: str = "/",
                 uid: int = 0, gid: int = 0, additional_gids: list[int] | None = None) -> dict[str, Any]:
    """An OCI runtime spec with Docker's defaults for running ``args`` in ``rootfs``;
    ``privileged`` gives every capability, no masked or read-only paths and no seccomp."""
    caps = list(ALL_CAPABILITIES if privileged else DEFAULT_CAPABILITIES)
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
        "resources": {},
        "maskedPaths": [] if privileged else list(MASKED_PATHS),
        "readonlyPaths": [] if privileged else list(READONLY_PATHS),
        "devices": [{"path": p, "type": t, "major": ma, "minor": mi, "fileMode": mode, "uid": 0, "gid": 0}
                    for p, t, ma, mi, mode in DEVICES],
    }
    if not privileged:
        linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                            "syscalls": [{"names": list(SECCOMP_DENIED), "action": "SCMP_ACT_ERRNO",
                                          "errnoRet": 1}]}
    mounts = default_mounts()
    if privileged:  # Docker gives a privileged container a writable /sys and cgroup tree
        for mount in mounts:
            if mount["type"] in ("sysfs", "cgroup"):
                mount["options"] = [o for o in mount["options"] if o != "ro"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": uid, "gid": gid, "additionalGids": list(additional_gids or [])},
            "args": list(args),
            "env": list(env if env is not None else
                        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
            "cwd": cwd,
            "capabilities": {"bounding": list(caps), "effective": list(caps), "permitted": list(caps),
                             "inheritable": [], "ambient": []},
            "rlimits": default_rlimits(),
            "noNewPrivileges": False,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }
