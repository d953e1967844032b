#!/usr/bin/env python3
"""Commands with a thousand containers present, beside podman with the same counts.

``ps -a``, ``inspect``, ``run --rm --network none busybox true`` and ``network connect`` /
``disconnect`` of one container, with ``--created`` (1000) created and ``--running`` (100)
running containers and ``--networks`` (50) bridge networks; and the same ``run --rm`` in a
second, empty installation of each engine, so the ratio "run --rm with them present / with
none" shows what the others cost a command.

Setup, per engine: the networks (``network create``), the created containers (``create``, on
the networks in turn, never started), the running ones (``run -d --network none ... sleep``),
the last two from a thread pool of ``--jobs``; the setup times are printed. One more container
runs on the first network: ``network connect`` joins it to the second network and ``network
disconnect`` takes it off again; ``inspect`` looks at one of the created containers. Then every
command is timed ``--runs`` times, pyengine and podman interleaved (who goes first flipped every
round), and the medians are printed. The full counts take about 17 minutes here, most of it
podman creating its 1000 containers (about 10 minutes; pyengine about 1.5).

The benchmark enters a network namespace it made (``ip netns add``) before anything else
starts, so both engines, pyengine's fork server and every clean-up command make their bridges,
veths and nftables rules there; they vanish with it. podman runs as bench/common.py runs it
(own roots in the temp dir, runc, cgroupfs); every container cgroup goes under a
``pyengine/bench`` child of this process's own cgroup. At the end, even on failure, the
containers and networks are removed, mounts undone, the temp dirs, the empty cgroups and the
namespace deleted.

    sudo python bench/scale.py [--created 1000] [--running 100] [--networks 50] [--runs 10]
                               [--jobs 8] [--json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_CONFIG,
    Engine,
    Env,
    Podman,
    busybox_rootfs_tar,
    cleanup,
    own_cgroup_parent,
    require_root,
    timed,
)

CLONE_NEWNET = 0x40000000
SLEEP = ["sleep", "86400"]
#: the timed commands, in the order of each round
COMMANDS = ("ps -a", "inspect", "run --rm", "network connect", "network disconnect")
NONE_PRESENT = "run --rm, none present"


def enter_netns(name: str) -> None:
    """Move this process (still one thread) into ``/run/netns/NAME``: every command it starts
    from here on, clean-up included, works in that namespace and never on the host's."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


def network_names(count: int) -> list[str]:
    return [f"scale-net-{i:02d}" for i in range(count)]


def in_parallel(engine: Engine, argvs: list[list[str]], jobs: int) -> tuple[float, list[str]]:
    """Run the commands from a pool of ``jobs`` threads; the wall time and what each printed
    last (an id). Any failure ends the benchmark with the first one's stderr."""

    def one(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=engine.env, capture_output=True, text=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, argvs))
    elapsed = time.perf_counter() - started
    failed = [r for r in results if r.returncode != 0]
    if failed:
        raise RuntimeError(f"{engine.name}: {len(failed)} of {len(argvs)} commands failed, first: "
                           f"{' '.join(failed[0].args)}: {failed[0].stderr.strip()[-300:]}")
    return elapsed, [(r.stdout.strip().splitlines() or [""])[-1] for r in results]


class Installation:
    """One engine with the counts present: its setup times and the ids the commands use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.setup_s: dict[str, float] = {}
        self.inspected = self.target = ""

    def populate(self, args: argparse.Namespace) -> None:
        engine, networks = self.engine, network_names(args.networks)
        started = time.perf_counter()
        self.setup_s["networks"], _ = in_parallel(
            engine, [engine.argv("network", "create", name) for name in networks], 1)
        create = [engine.argv("create", "--network", networks[i % len(networks)], *engine.run_flags, engine.image,
                              "true") for i in range(args.created)]
        self.setup_s["created"], created = in_parallel(engine, create, args.jobs)
        run = [engine.run_argv(["-d", "--network", "none"], SLEEP)] * args.running
        self.setup_s["running"], _ = in_parallel(engine, run, args.jobs)
        self.target = engine.cli(*engine.run_args(["-d", "--network", networks[0]], SLEEP)).stdout.split()[-1]
        self.inspected = created[len(created) // 2]
        present, running = engine.ids(all_=True), engine.ids()
        if len(present) != args.created + args.running + 1 or len(running) != args.running + 1:
            raise RuntimeError(f"{engine.name}: {len(present)} containers present, {len(running)} running; expected "
                               f"{args.created + args.running + 1} and {args.running + 1}")
        self.setup_s["total"] = time.perf_counter() - started

    def commands(self, second_network: str) -> dict[str, list[str]]:
        engine = self.engine
        return {"ps -a": engine.argv("ps", "-a"),
                "inspect": engine.argv("inspect", self.inspected),
                "run --rm": engine.run_argv(["--rm", "--network", "none"], ["true"]),
                "network connect": engine.argv("network", "connect", second_network, self.target),
                "network disconnect": engine.argv("network", "disconnect", second_network, self.target)}

    def remove_all(self, networks: int) -> None:
        """Clean-up: every container, then the bench's networks; errors are printed, not raised."""
        engine = self.engine
        try:
            ids = sorted(engine.ids(all_=True))
            if ids:
                engine.cli("rm", "-f", *ids)
        except Exception as exc:  # keep cleaning up
            print(f"cleanup: {engine.name} containers: {exc}", file=sys.stderr)
        result = engine.cli("network", "rm", *network_names(networks), check=False)
        if result.returncode != 0 and "not found" not in result.stderr:
            print(f"cleanup: {engine.name} network rm: {result.stderr.strip()[-300:]}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--created", type=int, default=1000, help="created (never started) containers (1000)")
    parser.add_argument("--running", type=int, default=100, help="running containers (100)")
    parser.add_argument("--networks", type=int, default=50, help="bridge networks, at least 2 (50)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command (10)")
    parser.add_argument("--jobs", type=int, default=8, help="threads that create and start the containers (8)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.networks < 2 or args.created < 1:
        parser.error("--networks must be at least 2 and --created at least 1")
    require_root("containers, bridges and namespaces need it")
    parent = own_cgroup_parent()
    netns = f"pyb-scale-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-scale-"))
    notes: list[str] = []
    envs: list[Env] = []
    podmans: list[Podman] = []
    full: list[Installation] = []
    times: dict[str, dict[str, list[float]]] = {}
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        enter_netns(netns)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        tar = busybox_rootfs_tar(work)
        for label in ("full", "empty"):
            env = Env(work / f"pyengine-{label}", BENCH_CONFIG, storage_driver="overlay")
            envs.append(env)
            env.import_busybox(tar)
        podman_found = shutil.which("podman")
        if podman_found and parent:
            for _ in ("full", "empty"):
                podman = Podman(work, storage_driver="overlay")
                podmans.append(podman)
                podman.import_busybox(tar)
        else:
            notes.append("podman: not installed" if not podman_found else "podman: no safe cgroup parent here")
        full = [Installation(envs[0].engine())]
        empty = [envs[1].engine()]
        if podmans:
            full.append(Installation(podmans[0].engine(parent)))
            empty.append(podmans[1].engine(parent))

        for installation in full:
            installation.populate(args)
            if not args.json:
                print(f"setup {installation.engine.name}: " + ", ".join(
                    f"{what} {seconds:.1f}s" for what, seconds in installation.setup_s.items()), flush=True)

        second = network_names(args.networks)[1]
        # one group per command, each engine's command line in it; "network connect" comes
        # before "network disconnect", so every round leaves the target as it found it
        groups: list[list[tuple[str, str, list[str], dict[str, str]]]] = []
        for command in COMMANDS:
            groups.append([(i.engine.name, command, i.commands(second)[command], i.engine.env) for i in full])
            if command == "run --rm":
                groups.append([(engine.name, NONE_PRESENT, engine.run_argv(["--rm", "--network", "none"], ["true"]),
                                engine.env) for engine in empty])
        for group in groups:  # warm-up: fork servers, page cache
            for name, command, argv, env_ in group:
                timed(argv, env_)
                times.setdefault(name, {})[command] = []
        for round_ in range(args.runs):
            for group in groups:  # interleaved; who goes first flips every round
                for name, command, argv, env_ in (group if round_ % 2 == 0 else reversed(group)):
                    times[name][command].append(timed(argv, env_))
    finally:
        for installation in full:
            installation.remove_all(args.networks)
        cleanup(work, envs, podmans)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)

    medians = {name: {command: statistics.median(values) for command, values in by_command.items()}
               for name, by_command in times.items()}
    present = args.created + args.running + 1
    report: dict = {"created": args.created, "running": args.running, "networks": args.networks,
                    "present": present, "runs": args.runs, "jobs": args.jobs,
                    "setup_s": {i.engine.name: i.setup_s for i in full}, "median_s": medians, "notes": notes}
    for name, by_command in medians.items():
        report[f"{name}_run_present_over_none"] = by_command["run --rm"] / by_command[NONE_PRESENT]
    if "podman" in medians:
        report["pyengine_over_podman"] = {command: medians["pyengine"][command] / medians["podman"][command]
                                          for command in medians["pyengine"]}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    names = list(medians)
    print(f"{args.created} created + {args.running} running containers (+1 on a bridge), {args.networks} bridge "
          f"networks; {args.runs} runs each, interleaved; medians:")
    print(f"  {'':<24}" + "".join(f"{name:>11}" for name in names)
          + ("  pyengine/podman" if "podman" in medians else ""))
    for command in medians["pyengine"]:
        row = f"  {command:<24}" + "".join(f"{medians[name][command] * 1000:8.1f} ms" for name in names)
        if "podman" in medians:
            row += f"  {report['pyengine_over_podman'][command]:15.2f}"
        print(row)
    for name in names:
        goal = "  (goal: <= 1.10)" if name == "pyengine" else ""
        print(f"  {name}: run --rm with {present} present / with none = "
              f"{report[f'{name}_run_present_over_none']:.2f}{goal}")
    if "podman" in medians:
        print(f"  ps -a pyengine / podman = {report['pyengine_over_podman']['ps -a']:.2f}  (goal: <= 0.50)")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
