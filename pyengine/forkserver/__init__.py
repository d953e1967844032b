"""The fork server: a warm copy of the engine that runs CLI commands for the same user.

pyengine is daemonless: every command is a process that builds the engine, does its work and
exits. Most of a short command's time is Python starting and importing the engine, not the
work. The fork server is a process that has imported everything once; the ``pyengine``
command (``pyengine.forkserver.client``) hands it its argv, environment, working directory and
stdin/stdout/stderr (as file descriptors, over a Unix socket), the server forks, and the fork
runs the ordinary CLI with them — the same code, the same config read per command, the same
per-command engine. The client relays signals to the fork and exits with its status.

It is an accelerator, never a dependency: containers do not run under it (their monitors are
``setsid`` processes, as without it); when it is not running, answers for another context, or
its code is older than the installed code, the command runs in-process, exactly as before,
and starts a new server in the background for the next one. It serves only a client of its
own user whose namespaces, cgroups, root, credentials, capabilities and limits are its own
(``context_mismatch``), so a command never runs somewhere its user did not run it. It exits
after ``PYENGINE_FORK_SERVER_IDLE`` seconds (default 300) without a command.

``PYENGINE_FORK_SERVER=0`` turns it off; ``PYENGINE_FORK_SOCKET`` moves its socket (default
``/run/pyengine-fork/fork-KEY.sock`` for root, ``$XDG_RUNTIME_DIR/pyengine-fork/fork-KEY.sock``
otherwise, and off when neither applies; KEY is ``install_key()``, one server per installation).
"""

from __future__ import annotations

import os

#: Environment variables the client and server read (all optional).
ENABLE_ENV = "PYENGINE_FORK_SERVER"
SOCKET_ENV = "PYENGINE_FORK_SOCKET"
IDLE_ENV = "PYENGINE_FORK_SERVER_IDLE"
#: Descriptors beyond stdio that a command is given (comma-separated numbers): the client
#: passes them with the request and the fork sets the variable to its own numbers for them.
#: Used by a container monitor's resume (see pyengine.containers.monitor).
PASS_FDS_ENV = "PYENGINE_PASS_FDS"
MAX_PASS_FDS = 64
DEFAULT_IDLE_SECONDS = 300.0

#: Commands that need a controlling terminal of their own (password prompts read /dev/tty),
#: and the daemon, which lives long and owns its own process (pid file, signals, threads).
IN_PROCESS_ONLY = frozenset({"login", "daemon"})

#: In a fork that runs a client's command: the server's pid (``pyengine info`` shows it).
SERVED_BY: int | None = None

#: The /proc/<pid>/status lines that must be equal in client and server.
STATUS_KEYS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
               "Seccomp")
NAMESPACES = ("mnt", "net", "pid", "pid_for_children", "uts", "ipc", "cgroup", "user")


def socket_path(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """Where the fork server listens, or None when it is turned off or has no safe place."""
    env = os.environ if environ is None else environ
    if env.get(ENABLE_ENV, "1").strip().lower() in ("0", "no", "false", "off"):
        return None
    if env.get(SOCKET_ENV):
        return env[SOCKET_ENV]
    name = f"fork-{install_key()}.sock"
    if os.geteuid() == 0:
        return "/run/pyengine-fork/" + name
    runtime = env.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "pyengine-fork", name) if runtime else None


def install_key() -> str:
    """A short stable hash of what makes this installation: the interpreter (its real path, as
    the server compares it: ``python`` and ``python3`` of one venv are one installation), ``sys.prefix``,
    the module search path the server compares (``sys.path`` without the script's directory,
    which a served fork no longer has), where this package lives and its version. Two
    installations on one machine (two venvs, a checkout and a system install, a tox env) get
    two servers instead of one refusing the other's commands. Cheap on purpose (the client
    imports no hash module): the bytes read as one integer modulo the Mersenne prime 2**61-1."""
    import sys

    from pyengine import __version__

    path = sys.path if SERVED_BY is not None else sys.path[1:]
    package = os.path.dirname(os.path.dirname(__file__))
    text = "\0".join([os.path.realpath(sys.executable), sys.prefix, package, __version__, *path])
    value = int.from_bytes(os.fsencode(text), "big") % ((1 << 61) - 1)
    return f"{value:016x}"


def pid_file(sock: str) -> str:
    return sock + ".pid"


def execution_context(pid: int | str) -> dict[str, str]:
    """What makes a process's view of the system: its namespaces, cgroups, root directory,
    credentials, capabilities, seccomp, rlimits and LSM label, read from /proc."""
    base = f"/proc/{pid}"
    ctx: dict[str, str] = {}
    for ns in NAMESPACES:
        try:
            ctx[f"ns:{ns}"] = os.readlink(f"{base}/ns/{ns}")
        except OSError:
            ctx[f"ns:{ns}"] = "?"
    st = os.stat(f"{base}/root")
    ctx["root"] = f"{st.st_dev}:{st.st_ino}"
    for name in ("cgroup", "limits", "attr/current"):
        try:
            with open(f"{base}/{name}") as f:
                ctx[name] = f.read()
        except OSError:
            ctx[name] = "?"
    with open(f"{base}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_KEYS:
                ctx[key] = value.strip()
    return ctx


def context_mismatch(client_pid: int) -> str | None:
    """The first way the client's execution context differs from this process's, or None."""
    mine, theirs = execution_context("self"), execution_context(client_pid)
    for key, value in mine.items():
        if theirs.get(key) != value:
            return key
    return None


def stop_server(sock: str, timeout: float = 5.0) -> bool:
    """Ask the server on ``sock`` to stop (SIGTERM: it stops listening and exits once the
    commands it runs have ended), SIGKILL it after ``timeout``. True if one was running."""
    import signal
    import time

    try:
        with open(pid_file(sock)) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"pyengine.forkserver.server" not in f.read():
                return False  # the pid file outlived its server and the pid was reused
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return False
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    if os.path.exists(f"/proc/{pid}"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True
