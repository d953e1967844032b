#!/usr/bin/env python3
"""The daemon through the docker CLI: ``docker run --rm --network none busybox true`` against
pyengine's daemon, dockerd and podman's service, interleaved in one run; ``docker ps -a`` with
100 containers on each; the idle PSS of each daemon. Prints medians and ratios.

The three daemons run with their own roots under a temp dir and nothing on the host's network:
pyengine's (``pyengine daemon -H unix://...``); dockerd (Debian's docker.io, installed here if
missing and never started by the tests) with its own --data-root, --exec-root and --pidfile,
``--bridge=none --iptables=false --ip-forward=false --ip-masq=false``, the default ulimits this
host can grant and its cgroups under this process's own; and ``podman system service`` with
the flags this host needs (TESTING.md). ``ps`` lists 100 created containers (``-a``): starting
100 sleeping containers on a shared 2-core machine would measure the machine. Every daemon the
bench started is stopped by its pid at the end, and what dockerd leaves mounted is unmounted.

    sudo python bench/daemon.py [--runs 10] [--ps-containers 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_CONFIG,
    PODMAN_ULIMITS,
    Env,
    Podman,
    busybox_rootfs_tar,
    cleanup,
    own_cgroup_parent,
    pyengine_script,
    require_root,
    timed,
    unmount_under,
)
from idle_memory import rollup  # noqa: E402

DOCKER = shutil.which("docker") or "docker"


def wait_for_socket(path: Path, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited {process.returncode} before listening")
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {path} in {timeout}s")


def stop(process: subprocess.Popen, also: list[int] = ()) -> None:
    """SIGTERM the daemon by its pid, SIGKILL it after 20 s; then any child it left (by pid)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in also:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_pss(pid: int) -> int:
    """PSS (KiB) of a process and its descendants that are daemons (not containers)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            comm = Path(f"/proc/{current}/comm").read_text().strip()
            if comm.startswith(("containerd-shim", "conmon", "pyengine-shim", "runc")):
                continue
            total += rollup(current)["Pss"]
        except OSError:
            continue
        todo += children(current)
    return total


class Daemon:
    """One daemon reached with the docker CLI at ``unix://socket``."""

    def __init__(self, name: str, socket_path: Path, process: subprocess.Popen, run_flags: list[str],
                 image: str = "busybox") -> None:
        self.name, self.socket_path, self.process = name, socket_path, process
        self.run_flags, self.image = run_flags, image
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
                    "DOCKER_HOST": f"unix://{socket_path}", "DOCKER_CLI_HINTS": "false",
                    "DOCKER_CONFIG": str(socket_path.parent / f"{name}-cli")}

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise SystemExit(f"{self.name}: docker {' '.join(args)} exited {result.returncode}: {result.stderr[-500:]}")
        return result

    def run_argv(self) -> list[str]:
        return [DOCKER, "run", "--rm", "--network", "none", *self.run_flags, self.image, "true"]

    def remove_all(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)


def ensure_dockerd() -> str | None:
    """dockerd from Debian's docker.io, installed (never started: policy-rc.d) when missing."""
    found = shutil.which("dockerd")
    if found:
        return found
    print("installing docker.io for dockerd (its service is not started)", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"],
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True)
    subprocess.run(["systemctl", "disable", "--now", "docker.service", "docker.socket"], capture_output=True)
    return shutil.which("dockerd")


def start_dockerd(work: Path, exec_root: Path, parent: str) -> Daemon | None:
    """dockerd on ``work/dockerd.sock`` with its own roots under ``work`` and ``exec_root``, no
    bridge and no iptables, its containers' cgroups under ``parent``/dockerd; None without
    dockerd. The caller stops it (``stop``) and unmounts ``exec_root``."""
    dockerd = ensure_dockerd()
    if not dockerd:
        return None
    dsock = work / "dockerd.sock"
    (work / "daemon.json").write_text("{}")
    dlog = open(work / "dockerd.log", "wb")
    dprocess = subprocess.Popen(
        [dockerd, "--data-root", str(work / "docker-data"), "--exec-root", str(exec_root),
         "--pidfile", str(work / "dockerd.pid"), "-H", f"unix://{dsock}", "--bridge=none",
         "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
         "--storage-driver", "overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs",
         "--cgroup-parent", parent + "/dockerd", "--default-ulimit", "nofile=20000:20000",
         "--default-ulimit", "nproc=32768:32768", "--config-file", str(work / "daemon.json")],
        stdout=dlog, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(work)})
    wait_for_socket(dsock, dprocess, "dockerd")
    return Daemon("dockerd", dsock, dprocess, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ps-containers", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("containers need namespaces, mounts and cgroups")
    parent = own_cgroup_parent()
    if parent is None:
        raise SystemExit("no safe cgroup parent under this process's own cgroup")
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-daemon-"))
    exec_root = Path(tempfile.mkdtemp(prefix="pdx-", dir="/tmp"))  # dockerd's sockets: keep it short
    envs, podmans, daemons = [], [], []
    notes: list[str] = []
    times: dict[str, list[float]] = {}
    ps_times: dict[str, list[float]] = {}
    pss: dict[str, int] = {}
    try:
        tar = busybox_rootfs_tar(work)
        env = Env(work / "pyengine", BENCH_CONFIG, storage_driver="overlay")
        envs.append(env)
        env.import_busybox(tar)
        sock = work / "pyengine.sock"
        log = open(work / "pyengine-daemon.log", "wb")
        process = subprocess.Popen([pyengine_script(), "daemon", "-H", f"unix://{sock}"], env=env.env,
                                   stdout=log, stderr=subprocess.STDOUT)
        wait_for_socket(sock, process, "pyengine daemon")
        daemons.append(Daemon("pyengine", sock, process, []))

        docker = start_dockerd(work, exec_root, parent)
        if docker:
            daemons.append(docker)
            docker.docker("import", str(tar), "busybox:latest")
        else:
            notes.append("dockerd: docker.io could not be installed")

        if shutil.which("podman"):
            podman = Podman(work, storage_driver="overlay")
            podmans.append(podman)
            podman.import_busybox(tar, "docker.io/library/busybox:latest")
            psock = work / "podman.sock"
            plog = open(work / "podman-service.log", "wb")
            pprocess = subprocess.Popen([*podman.base, "system", "service", "--time", "0", f"unix://{psock}"],
                                        env=podman.env, stdout=plog, stderr=subprocess.STDOUT)
            wait_for_socket(psock, pprocess, "podman system service")
            daemons.append(Daemon("podman", psock, pprocess,
                                  ["--cgroup-parent", parent + "/podman", *PODMAN_ULIMITS]))
        else:
            notes.append("podman: not installed")

        for daemon in daemons:  # warm-up
            timed(daemon.run_argv(), daemon.env)
            times[daemon.name], ps_times[daemon.name] = [], []
        for _ in range(args.runs):
            for daemon in daemons:
                times[daemon.name].append(timed(daemon.run_argv(), daemon.env))
        time.sleep(2)
        for daemon in daemons:
            pss[daemon.name] = tree_pss(daemon.process.pid)

        for daemon in daemons:
            for _ in range(args.ps_containers):
                daemon.docker("create", "--network", "none", *daemon.run_flags, daemon.image, "true")
        for _ in range(args.runs):
            for daemon in daemons:
                ps_times[daemon.name].append(timed([DOCKER, "ps", "-a"], daemon.env))
    finally:
        for daemon in daemons:
            try:
                daemon.remove_all()
            except SystemExit as exc:
                print(f"cleanup: {daemon.name}: {exc}", file=sys.stderr)
            leftovers = children(daemon.process.pid) if daemon.name == "dockerd" else []
            stop(daemon.process, leftovers)
        unmount_under(work, exec_root)
        shutil.rmtree(exec_root, ignore_errors=True)
        cleanup(work, envs, podmans)

    run_medians = {name: statistics.median(v) for name, v in times.items() if v}
    ps_medians = {name: statistics.median(v) for name, v in ps_times.items() if v}
    report = {"runs": args.runs, "ps_containers": args.ps_containers, "run_median_s": run_medians,
              "ps_median_s": ps_medians, "idle_pss_kib": pss, "notes": notes}
    for peer in ("dockerd", "podman"):
        if peer in run_medians:
            report[f"run_pyengine_over_{peer}"] = run_medians["pyengine"] / run_medians[peer]
            report[f"ps_pyengine_over_{peer}"] = ps_medians["pyengine"] / ps_medians[peer]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"docker run --rm --network none busybox true, {args.runs} runs each, interleaved, medians:")
    for name, value in run_medians.items():
        print(f"  {name:<9} {value * 1000:7.1f} ms")
    print(f"docker ps -a with {args.ps_containers} containers, medians:")
    for name, value in ps_medians.items():
        print(f"  {name:<9} {value * 1000:7.1f} ms")
    print("idle PSS of the daemon (and its non-container helpers):")
    for name, value in pss.items():
        print(f"  {name:<9} {value:7d} KiB")
    for peer in ("dockerd", "podman"):
        if f"run_pyengine_over_{peer}" in report:
            print(f"  run: pyengine / {peer} = {report[f'run_pyengine_over_{peer}']:.2f}"
                  + ("  (goal: <= 0.50)" if peer == "dockerd" else ""))
            print(f"  ps:  pyengine / {peer} = {report[f'ps_pyengine_over_{peer}']:.2f}"
                  + ("  (goal: <= 1.00)" if peer == "dockerd" else ""))
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
