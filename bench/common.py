"""What the benchmarks share: isolated pyengine and podman environments, the busybox image,
this host's podman flags, cgroups kept under this process's own cgroup, and the clean-up.

Nothing here is a benchmark. Every environment lives under a temp dir the caller owns and
passes to ``cleanup`` in a ``finally``: containers are removed, mounts under it lazily
unmounted, the dir deleted and the (empty) ``pyengine`` cgroups this run made removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from containers_support import busybox_rootfs_tar  # noqa: E402

__all__ = ["REPO", "CGROUP_PARENT", "BENCH_CONFIG", "PODMAN_ULIMITS", "Engine", "Env", "Podman", "busybox_rootfs_tar",
           "cleanup", "own_cgroup_parent", "pyengine_script", "remove_cgroups", "require_root", "runc_bundle",
           "timed", "unmount_under"]

#: Where every engine's container cgroups go, relative to this process's own cgroup.
CGROUP_PARENT = "pyengine/bench"
#: A pyengine config that puts container cgroups there.
BENCH_CONFIG = f'[cgroups]\nparent = "{CGROUP_PARENT}"\n'
#: This host cannot raise a hard rlimit (no CAP_SYS_RESOURCE): podman needs explicit limits.
PODMAN_ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"run as root: {why}")


def pyengine_script() -> str:
    """The ``pyengine`` console script (what a user runs): the one beside this interpreter (its
    venv) first, then the one on PATH."""
    beside = Path(sys.executable).parent / "pyengine"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("pyengine") or str(beside)


def own_cgroup_parent() -> str | None:
    """An absolute cgroup path under this process's own cgroup in every v1 hierarchy, or None."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers:
                paths[controllers] = path
    deepest = max(paths.values(), key=len) if paths else "/"
    if not all(deepest.startswith(p.rstrip("/") + "/") or p == "/" or p == deepest for p in paths.values()):
        return None
    return deepest.rstrip("/") + "/" + CGROUP_PARENT


def remove_cgroups() -> None:
    """Remove every (empty) ``pyengine`` cgroup level this run made, in each hierarchy, both
    under this process's own cgroup and under the hierarchy's root (where a relative parent
    lands for controllers whose own cgroup is the root)."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else ["unified"]:
                own[controller.replace("name=", "")] = path
    bases = {p for p in own.values()} | {"/"}
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for base in bases | {own.get(hierarchy.name, "/")}:
            top = hierarchy / base.lstrip("/") / "pyengine"
            if not top.is_dir():
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def add_image_args(parser: argparse.ArgumentParser, runs: int) -> None:
    """The flags of the scripts that build a test image: its size, the runs, a work dir."""
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=14000)
    parser.add_argument("--work", type=Path, default=None, help="keep the built image here between runs")


def work_dir(args: argparse.Namespace) -> Path:
    """``--work`` (kept between runs), else a fresh temp dir."""
    work = args.work or Path(tempfile.mkdtemp(prefix="pyengine-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    return work


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> float:
    """Wall time of one command; exits the benchmark with its stderr if it fails."""
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode().strip()[-500:]}")
    return elapsed


def runc_bundle(bundle: Path, args: list[str], cgroups_path: str | None, rootfs: Path | None = None,
                keep_rlimits: bool = True) -> Path:
    """A runc bundle from ``runc spec``: a non-interactive ``args`` process, its cgroups at
    ``cgroups_path`` (pass one under ``own_cgroup_parent()``: runc's default is a top-level
    group named after the container). ``rootfs`` None means ``bundle/rootfs`` read-only, as
    ``runc spec`` has it; otherwise that directory, writable."""
    bundle.mkdir(parents=True, exist_ok=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    if rootfs is not None:
        spec["root"] = {"path": str(rootfs), "readonly": False}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    if not keep_rlimits:
        spec["process"]["rlimits"] = []
    if cgroups_path:
        spec["linux"]["cgroupsPath"] = cgroups_path
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def unmount_under(*roots: Path) -> None:
    """Lazily unmount every mount point under the given directories, deepest first."""
    prefixes = tuple(f"{Path(root)}/" for root in roots)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(prefixes)]
    for point in reversed(points):
        subprocess.run(["umount", "-l", point], capture_output=True)


class Env:
    """pyengine with its own data root, run root and config file under ``root`` (as the test
    fixture makes them); no ``PYENGINE_*`` variable of the caller leaks in."""

    def __init__(self, root: Path, config: str = "", storage_driver: str | None = None) -> None:
        self.root = root
        self.data_root, self.run_root = root / "data", root / "run"
        self.data_root.mkdir(parents=True)
        self.run_root.mkdir(parents=True)
        self.config_path = root / "config.toml"
        self.config_path.write_text(config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYENGINE_")}
        # Its own fork server (pyengine.forkserver), stopped by cleanup(): nothing outlives the run.
        self.fork_socket = str(root / "fork" / "fork.sock")
        self.env.update({"PYENGINE_DATA_ROOT": str(self.data_root), "PYENGINE_RUN_ROOT": str(self.run_root),
                         "PYENGINE_CONFIG": str(self.config_path), "PYENGINE_FORK_SOCKET": self.fork_socket})
        if storage_driver:
            self.env["PYENGINE_STORAGE_DRIVER"] = storage_driver

    def without_fork_server(self) -> dict[str, str]:
        """This environment with the fork server turned off (every command runs in-process)."""
        return {**self.env, "PYENGINE_FORK_SERVER": "0"}

    def wait_for_fork_server(self, timeout: float = 10.0) -> bool:
        """After a first command started it: wait until the fork server listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.fork_socket):
                return True
            time.sleep(0.05)
        return False

    def stop_fork_server(self) -> None:
        from pyengine.forkserver import stop_server

        stop_server(self.fork_socket)

    def pyengine(self, *args: str) -> None:
        """``python -m pyengine ARGS``, output discarded; raises if it fails."""
        subprocess.run([sys.executable, "-m", "pyengine", *args], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def argv(self, *args: str) -> list[str]:
        """The console script's command line (what the timed benchmarks run)."""
        return [pyengine_script(), *args]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"pyengine {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-500:]}")
        return result

    def import_busybox(self, tar: Path, name: str = "busybox") -> None:
        self.cli("import", str(tar), name)

    def engine(self) -> Engine:
        return Engine("pyengine", [pyengine_script()], self.env, "busybox")

    def monitor_pid(self, container_id: str) -> int:
        """The container's monitor, from its state record (``pyengine inspect`` does not show it)."""
        state = json.loads((self.data_root / "containers" / container_id / "state.json").read_text())
        return int(state.get("monitor_pid") or 0)

    def remove_containers(self) -> None:
        """``rm -f`` every container; if that fails, SIGKILL the monitors and processes this
        environment started (by the pids in their state records), then try once more."""
        ids = self.cli("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if not ids:
            return
        if self.cli("rm", "-f", *ids, check=False).returncode == 0:
            return
        for state_file in (self.data_root / "containers").glob("*/state.json"):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            for pid in (state.get("pid"), state.get("monitor_pid")):
                if pid:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        time.sleep(0.5)
        ids = self.cli("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            self.cli("rm", "-f", *ids, check=False)


class Podman:
    """podman the way this host needs it (TESTING.md): runc, cgroupfs, file events, and its own
    root, run root, tmp dir and network config dir, so nothing of the machine's podman is used.

    ``base`` is the global part of the command line; ``run_flags(parent)`` the part every
    ``podman run`` needs here: ``--pull never``, a cgroup parent under ours, explicit ulimits.
    """

    def __init__(self, work: Path, storage_driver: str | None = None, prefix: list[str] | None = None,
                 executable: str = "podman") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="podman-", dir=work))
        # podman refuses a runroot longer than 50 characters: keep it short, directly in /tmp.
        self.runroot = Path(tempfile.mkdtemp(prefix="pdr-", dir="/tmp"))
        (self.root / "tmp").mkdir()
        flags = ["--root", str(self.root / "root"), "--runroot", str(self.runroot), "--tmpdir", str(self.root / "tmp"),
                 "--network-config-dir", str(self.root / "net"), "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                 "--events-backend", "file"]
        if storage_driver:
            flags += ["--storage-driver", storage_driver]
        self.flags = flags
        self.base = [*(prefix or []), executable, *flags]
        self.env = {**os.environ, "TMPDIR": str(self.root / "tmp")}

    @staticmethod
    def run_flags(cgroup_parent: str) -> list[str]:
        return ["--pull", "never", "--cgroup-parent", cgroup_parent + "/podman", *PODMAN_ULIMITS]

    def run(self, *args: str) -> None:
        """``podman ARGS``, output discarded; raises if it fails."""
        subprocess.run([*self.base, *args], check=True, env=self.env, stdout=subprocess.DEVNULL)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-500:]}")
        return result

    def import_busybox(self, tar: Path, name: str = "localhost/busybox") -> None:
        self.cli("import", str(tar), name)

    def engine(self, cgroup_parent: str) -> Engine:
        return Engine("podman", self.base, self.env, "localhost/busybox", self.run_flags(cgroup_parent))

    def close(self) -> None:
        """Remove every container and image, unmount what podman left mounted (the store's
        overlay and shm mounts), delete its directories."""
        subprocess.run([*self.base, "rm", "-a", "-f", "-t", "0"], env=self.env, capture_output=True)
        subprocess.run([*self.base, "system", "reset", "-f"], env=self.env, capture_output=True)
        unmount_under(self.root, self.runroot)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


class Engine:
    """One engine's command line for the container benchmarks: the same calls for pyengine and
    podman (``run``, ``ps``, ``kill``, ``rm``, ``inspect`` take the same flags in both)."""

    def __init__(self, name: str, base: list[str], env: dict[str, str], image: str,
                 run_flags: Sequence[str] = ()) -> None:
        self.name, self.base, self.env, self.image, self.run_flags = name, base, env, image, list(run_flags)

    def argv(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def run_args(self, flags: list[str], command: list[str]) -> list[str]:
        """``run FLAGS <this host's flags> IMAGE COMMAND``, for ``cli``."""
        return ["run", *flags, *self.run_flags, self.image, *command]

    def run_argv(self, flags: list[str], command: list[str]) -> list[str]:
        """The whole command line of ``run_args``."""
        return self.argv(*self.run_args(flags, command))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)} exited {result.returncode}: "
                               f"{result.stderr.strip()[-500:]}")
        return result

    def ids(self, all_: bool = False) -> set[str]:
        """Full ids of the running containers (all of them with ``all_``)."""
        return set(self.cli("ps", "-aq" if all_ else "-q", "--no-trunc").stdout.split())


def cleanup(work: Path, envs: Sequence[Env] = (), podmans: Sequence[Podman] = ()) -> None:
    """Everything a benchmark made under ``work``: containers of each engine, mounts, the
    dir itself, then the empty ``pyengine`` cgroups."""
    for env in envs:
        try:
            env.remove_containers()
        except Exception as exc:  # keep cleaning up
            print(f"cleanup: pyengine containers: {exc}", file=sys.stderr)
        env.stop_fork_server()
    for podman in podmans:
        podman.close()
    unmount_under(work)
    shutil.rmtree(work, ignore_errors=True)
    remove_cgroups()
