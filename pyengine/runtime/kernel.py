"""The kernel seam: thin ctypes wrappers over the syscalls the launcher needs (unshare, setns,
mount, umount2, pivot_root, mknod, prctl, capget/capset, sethostname, dumpability, sealed
memfds, execveat, the pty ioctls, descriptor passing over a Unix socket) and libseccomp.

Each wrapper raises OSError with the kernel's errno, so callers above it can be tested with a
fake seam; nothing here decides policy. x86_64 syscall numbers; Python 3.11 has no os.unshare.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# clone(2) namespace flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

#: OCI namespace type -> (clone flag, /proc/<pid>/ns entry)
NAMESPACES = {
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "mount": (CLONE_NEWNS, "mnt"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "user": (CLONE_NEWUSER, "user"),
}

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

#: capability name -> number (linux/capability.h)
CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _b(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(ctypes.c_long(_SYS_PIVOT_ROOT), _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


_SYS_BPF = 321  # x86_64
_SYS_EXECVEAT = 322  # x86_64
AT_EMPTY_PATH = 0x1000


def bpf(cmd: int, attr: bytes) -> int:
    """bpf(2) with ``attr`` (a packed ``union bpf_attr``); its result (a new fd for loads)."""
    buffer = ctypes.create_string_buffer(attr, len(attr))
    return _check(_syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), buffer, ctypes.c_uint(len(attr))), "bpf")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), "prctl")


def get_dumpable() -> bool:
    return prctl(PR_GET_DUMPABLE) == 1


def set_dumpable(dumpable: bool) -> None:
    """A non-dumpable process's /proc/<pid> files (exe, fd, mem, environ...) are root's, and
    only a holder of CAP_SYS_PTRACE over it may open them. execve of a readable, non-setuid
    file makes a process dumpable again."""
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


#: pty ioctls (asm-generic numbers: x86_64 and arm64 alike)
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441  # Linux 4.13


def pty_unlock(master: int) -> None:
    """unlockpt(3): let the slave of the pty ``master`` be opened."""
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))


def pty_number(master: int) -> int:
    """The N of the slave /dev/pts/N of the pty ``master`` (ptsname(3)), on the devpts
    instance the master was opened from."""
    return struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]


def pty_peer(master: int, flags: int) -> int:
    """Open the slave of the pty ``master`` through the master itself, not by a path a
    process could have swapped (TIOCGPTPEER); a new fd opened with ``flags``."""
    return fcntl.ioctl(master, TIOCGPTPEER, flags)


def send_fd(sock: int, fd: int) -> None:
    """Send the descriptor ``fd`` over the connected Unix socket ``sock`` (SCM_RIGHTS)."""
    carrier = socket.socket(fileno=sock)
    try:
        socket.send_fds(carrier, [b"F"], [fd])
    finally:
        carrier.detach()


def recv_fd(sock: int) -> int | None:
    """The descriptor sent over the Unix socket ``sock`` (close-on-exec), or None at EOF
    (the peer closed its end without sending one)."""
    carrier = socket.socket(fileno=sock)
    size = struct.calcsize("i")
    try:
        # recvmsg, not socket.recv_fds: Python 3.11's drops its flags, and with them CLOEXEC
        _, ancillary, _, _ = carrier.recvmsg(1, socket.CMSG_SPACE(size), socket.MSG_CMSG_CLOEXEC)
    finally:
        carrier.detach()
    fds = [fd for level, kind, data in ancillary if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
           for (fd,) in struct.iter_unpack("i", data[:len(data) - len(data) % size])]
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else None


#: memfd_create(2) flags; MFD_EXEC (Linux 6.3) asks for an executable memfd where the
#: vm.memfd_noexec sysctl would otherwise make new memfds non-executable
MFD_CLOEXEC = 0x1
MFD_ALLOW_SEALING = 0x2
MFD_EXEC = 0x10
#: fcntl(2) file seals (linux/fcntl.h)
F_ADD_SEALS = 1033
F_GET_SEALS = 1034
F_SEAL_SEAL = 0x1
F_SEAL_SHRINK = 0x2
F_SEAL_GROW = 0x4
F_SEAL_WRITE = 0x8


def sealed_copy(path: str, name: str) -> int:
    """A close-on-exec memfd holding a copy of the file at ``path``, sealed against every
    change (shrink, grow, write, further seals): a process exec'd from it has no host file
    behind its /proc/<pid>/exe, and nobody can alter the copy. Its descriptor."""
    import fcntl

    try:
        fd = os.memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a kernel before 6.3 does not know MFD_EXEC
            raise
        fd = os.memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)
    try:
        source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(source).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(fd, source, offset, size - offset)
                if sent == 0:
                    raise OSError(errno.EIO, f"{path} shrank while it was copied", path)
                offset += sent
        finally:
            os.close(source)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def execveat(fd: int, argv: list[str], env: dict[str, str], path: str = "", flags: int = AT_EMPTY_PATH) -> None:
    """execveat(2): with the default empty ``path`` and AT_EMPTY_PATH, execute the file open
    at ``fd`` (a memfd, say) without any path to it. Returns only by raising OSError."""
    def strings(values: list[str]) -> Any:
        array = (ctypes.c_char_p * (len(values) + 1))()
        array[:-1] = [v.encode() for v in values]
        array[-1] = None
        return array

    envp = strings([f"{key}={value}" for key, value in env.items()])
    _check(_syscall(ctypes.c_long(_SYS_EXECVEAT), ctypes.c_int(fd), _b(path), strings(argv), envp,
                    ctypes.c_int(flags)), "execveat", path or None)


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def bounding_drop(keep: set[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(last_cap() + 1):
        if cap not in keep and prctl(PR_CAPBSET_READ, cap) == 1:
            prctl(PR_CAPBSET_DROP, cap)


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread as 64-bit masks."""
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)
    _check(_syscall(ctypes.c_long(_SYS_CAPGET), header, data), "capget")
    e0, p0, i0, e1, p1, i1 = struct.unpack("6I", data.raw)
    return e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    low, high = 0xFFFFFFFF, 32
    data = struct.pack("6I", effective & low, permitted & low, inheritable & low,
                       effective >> high, permitted >> high, inheritable >> high)
    _check(_syscall(ctypes.c_long(_SYS_CAPSET), header, data), "capset")


def ambient_raise(caps: set[int]) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in sorted(caps):
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


# -- seccomp through libseccomp ----------------------------------------------------------
_SCMP_ACT_ALLOW = 0x7FFF0000
_NR_SCMP_ERROR = -1
#: OCI's comparison names -> libseccomp's enum scmp_compare
_SCMP_CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
             "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_seccomp: ctypes.CDLL | None = None
_seccomp_looked_up = False


class _ArgCmp(ctypes.Structure):
    """libseccomp's struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def libseccomp() -> ctypes.CDLL | None:
    """libseccomp.so.2 when installed, else None (seccomp is then not applied)."""
    global _seccomp, _seccomp_looked_up
    if not _seccomp_looked_up:
        _seccomp_looked_up = True
        try:
            # The soname first: find_library runs ldconfig, slow on the launch path.
            try:
                lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
            except OSError:
                from ctypes.util import find_library

                lib = ctypes.CDLL(find_library("seccomp") or "libseccomp.so", use_errno=True)
            lib.seccomp_init.restype = ctypes.c_void_p
            lib.seccomp_init.argtypes = [ctypes.c_uint32]
            lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                                   ctypes.POINTER(_ArgCmp)]
            lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
            lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
            lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
            lib.seccomp_arch_native.restype = ctypes.c_uint32
            lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
            lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.seccomp_release.argtypes = [ctypes.c_void_p]
            _seccomp = lib
        except OSError:
            _seccomp = None
    return _seccomp


def _act_errno(errno_value: int) -> int:
    return 0x00050000 | (errno_value & 0xFFFF)


def _seccomp_action(name: str, errno_value: int) -> int:
    if name == "SCMP_ACT_ALLOW":
        return _SCMP_ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return _act_errno(errno_value)
    raise OSError(0, f"unsupported seccomp action {name}")


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
#: compiled filters by profile: a fork (the container's child) inherits what its parent built
_compiled: dict[str, bytes] = {}
#: Where compiled filters are kept across processes (``use_seccomp_cache``), or None.
_cache_dir: str | None = None
SECCOMP_CACHE_MAGIC = b"PYENGINE-SECCOMP-BPF-1\n"
_BPF_MAXINSNS = 4096


def use_seccomp_cache(directory: str | os.PathLike[str] | None) -> None:
    """Keep compiled filters in ``directory`` (the engine's run root: root's own, 0700) so
    that a cold process - a monitor forked from a fresh ``pyengine`` command - reads the
    ~10 ms compile of Docker's profile instead of doing it again. None turns it off."""
    global _cache_dir
    _cache_dir = None if directory is None else os.fspath(directory)


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def _cache_identity(lib: ctypes.CDLL, key: str) -> bytes:
    """What a cached program was compiled from: the profile (sorted JSON), this machine's
    architecture and libseccomp's version (a newer library may compile it differently)."""
    try:
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        version = lib.seccomp_version().contents
        library = f"{version.major}.{version.minor}.{version.micro}"
    except (AttributeError, ValueError):
        library = "?"
    return f"{os.uname().machine}\0{lib.seccomp_arch_native()}\0libseccomp {library}\0{key}".encode()


def _cache_file(identity: bytes) -> str | None:
    if _cache_dir is None:
        return None
    import zlib

    return os.path.join(_cache_dir, "seccomp", f"{zlib.crc32(identity):08x}-{len(identity)}.bpf")


def _cache_read(path: str, identity: bytes) -> bytes | None:
    """The program cached at ``path`` for exactly ``identity``, or None when there is none or
    it is not whole: magic, the identity itself (not a hash of it: two profiles never share a
    program), the program's length (whole instructions, at most the kernel's maximum) and its
    CRC must all match."""
    import zlib

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = len(SECCOMP_CACHE_MAGIC)
    if not data.startswith(SECCOMP_CACHE_MAGIC) or len(data) < head + 12:
        return None
    id_len, prog_len, crc = struct.unpack_from("<III", data, head)
    body = head + 12
    if id_len != len(identity) or data[body:body + id_len] != identity:
        return None
    program = data[body + id_len:]
    if (len(program) != prog_len or not prog_len or prog_len % 8 or prog_len // 8 > _BPF_MAXINSNS
            or zlib.crc32(program) != crc):
        return None
    return program


def _cache_write(path: str, identity: bytes, program: bytes) -> None:
    """Write the cache file atomically (a private temporary file renamed over it); a failure
    only means the next process compiles again."""
    import zlib

    directory = os.path.dirname(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            data = SECCOMP_CACHE_MAGIC + struct.pack("<III", len(identity), len(program), zlib.crc32(program))
            os.write(fd, data + identity + program)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def seccomp_compile(profile: dict[str, Any]) -> bytes:
    """The classic-BPF program libseccomp makes of an OCI seccomp profile (``linux.seccomp``:
    defaultAction, defaultErrnoRet, architectures, syscalls with names, action, errnoRet and
    args; the actions ALLOW and ERRNO), cached per profile in this process and, after
    ``use_seccomp_cache``, in a file for the next process (see ``_cache_read``). Names this
    kernel/libseccomp does not know are skipped, as runc does. Docker's profile takes ~10 ms
    to compile (three ABIs): done once, in the parent, not in every container's child."""
    import json

    key = json.dumps(profile, sort_keys=True)
    if key in _compiled:
        return _compiled[key]
    lib = libseccomp()
    if lib is None:
        raise OSError(0, "libseccomp is not installed")
    identity = _cache_identity(lib, key) if _cache_dir is not None else b""
    cache = _cache_file(identity)
    if cache is not None:
        program = _cache_read(cache, identity)
        if program is not None:
            _compiled[key] = program
            return program
    program = _seccomp_build(lib, profile)
    if cache is not None:
        _cache_write(cache, identity, program)
    _compiled[key] = program
    return program


def _seccomp_build(lib: ctypes.CDLL, profile: dict[str, Any]) -> bytes:
    """libseccomp's compile of ``profile`` (seccomp_compile's uncached half)."""
    default_errno = int(profile.get("defaultErrnoRet") or errno.EPERM)
    ctx = lib.seccomp_init(_seccomp_action(profile.get("defaultAction") or "SCMP_ACT_ALLOW", default_errno))
    if not ctx:
        raise OSError(0, "seccomp_init failed")
    try:
        native = lib.seccomp_arch_native()
        for arch in profile.get("architectures") or []:
            token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
            if token and token != native:
                rc = lib.seccomp_arch_add(ctx, token)
                if rc < 0 and -rc != errno.EEXIST:
                    raise OSError(-rc, f"seccomp_arch_add {arch}: {os.strerror(-rc)}")
        for rule in profile.get("syscalls") or []:
            action = _seccomp_action(rule["action"], int(rule.get("errnoRet") or default_errno))
            args = rule.get("args") or []
            array = (_ArgCmp * max(1, len(args)))(*[
                _ArgCmp(int(a["index"]), _SCMP_CMP[a["op"]], int(a.get("value", 0)), int(a.get("valueTwo", 0)))
                for a in args])
            for name in rule.get("names") or []:
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number == _NR_SCMP_ERROR:  # unknown to this libseccomp
                    continue
                rc = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
                if rc < 0 and number >= 0:  # (a pseudo number: a call of an ABI not in this filter)
                    raise OSError(-rc, f"seccomp rule for {name}: {os.strerror(-rc)}")
        fd = os.memfd_create("pyengine-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
            program = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_load_profile(profile: dict[str, Any], set_nnp: bool) -> int:
    """Install ``profile``'s filter on this thread (compiled now unless cached); returns its
    length in instructions. Without ``set_nnp`` installing needs CAP_SYS_ADMIN (Docker keeps
    no_new_privs off by default)."""
    program = seccomp_compile(profile)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    if set_nnp:
        set_no_new_privs()
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    return len(program) // 8


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (a new one starts with it down)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
