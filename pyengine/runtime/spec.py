"""Docker's defaults as an OCI runtime spec (config.json as a dict): capabilities, masked and
read-only paths, the mounts of a minimal /dev, /proc and /sys, Docker's default seccomp profile,
and rlimits this host can grant. Pure data; the launcher applies it."""

from __future__ import annotations

import platform
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

# -- the default seccomp profile: Docker's (moby profiles/seccomp/default.json) -------------
# An allow list: any other call fails with EPERM. Calls that need a capability are allowed
# only when the container has it; without CAP_SYS_ADMIN, clone may not make namespaces and
# clone3 (whose flags a filter cannot see) fails with ENOSYS so that libc falls back to clone.
# io_uring_setup, io_uring_enter and io_uring_register are left out, as Docker has since 25.0:
# the operations a ring submits are never seen by the filter, and io_uring has been a steady
# source of kernel holes.

#: allowed for every container (32-bit names cover x86 binaries: the filter has the x86 and
#: x32 ABIs beside x86_64, as Docker's does)
SECCOMP_ALLOWED = """
accept accept4 access adjtimex alarm arch_prctl bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64
fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs
fstatfs64 fsync ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd
getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32
getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt
get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen
listxattr llistxattr _llseek lremovexattr lseek lsetxattr
lstat lstat64 madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat
mlock mlock2 mlockall mmap mmap2 modify_ldt mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl
msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
_newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease
process_vm_readv process_vm_writev pselect6 pselect6_time64 ptrace pwrite64 pwritev pwritev2 read
readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler
sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile
sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32
setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt
set_thread_area set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown
sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64
statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime
utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

#: allowed only with the capability
SECCOMP_BY_CAPABILITY = {
    "CAP_SYS_ADMIN": ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                      "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
                      "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
                      "umount2", "unshare"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
}

AF_VSOCK = 40
#: personality(2) values allowed: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
#: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: clone without CAP_SYS_ADMIN has none
CLONE_NAMESPACE_FLAGS = 0x7E020000
ENOSYS = 38


def default_seccomp(capabilities: list[str]) -> dict[str, Any]:
    """Docker's default profile for a container with ``capabilities`` (its bounding set)."""
    allow = "SCMP_ACT_ALLOW"
    rules: list[dict[str, Any]] = [
        {"names": list(SECCOMP_ALLOWED), "action": allow},
        {"names": ["socket"], "action": allow, "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]},
        *({"names": ["personality"], "action": allow, "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]}
          for value in PERSONALITIES),
    ]
    for capability, names in SECCOMP_BY_CAPABILITY.items():
        if capability in capabilities:
            rules.append({"names": list(names), "action": allow})
    if "CAP_SYS_ADMIN" not in capabilities:
        no_namespaces = {"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
        rules.append({"names": ["clone"], "action": allow, "args": [no_namespaces]})
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": list(_SECCOMP_ARCHES.get(platform.machine(), ())), "syscalls": rules}


#: the ABIs a filter covers, by machine (as Docker's archMap)
_SECCOMP_ARCHES = {"x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
                   "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")}


#: the device cgroup: deny everything, then let device nodes be made (not opened) and the
#: minimal /dev below, ptys and /dev/net/tun be used — Docker's defaults
DEFAULT_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": None, "minor": None, "access": "m"},
    {"allow": True, "type": "b", "major": None, "minor": None, "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, None), (10, 200))),
]
PRIVILEGED_DEVICE_RULES = [{"allow": True, "access": "rwm"}]

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
        "resources": {"devices": list(PRIVILEGED_DEVICE_RULES if privileged else DEFAULT_DEVICE_RULES)},
        "maskedPaths": [] if privileged else list(MASKED_PATHS),
        "readonlyPaths": [] if privileged else list(READONLY_PATHS),
        "devices": [{"path": p, "type": t, "major": ma, "minor": mi, "fileMode": mode, "uid": 0, "gid": 0}
                    for p, t, ma, mi, mode in DEVICES],
    }
    if not privileged:
        linux["seccomp"] = default_seccomp(caps)
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
