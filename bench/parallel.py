#!/usr/bin/env python3
"""Many containers at once: N ``run -d --network none busybox sleep 300`` started in parallel
(a thread pool of N, all submitted together), then all killed in parallel, then all removed in
parallel; pyengine beside podman (same flags) in the same run. Prints each phase's wall time,
the time per container and the ratio pyengine/podman.

Phases, each timed from the first command submitted to the engine's ``ps`` agreeing:
  start   ``run -d`` x N, until ``ps`` lists all N running
  stop    ``kill`` x N (SIGKILL, both engines' default), until ``ps`` lists none of them running.
          Not ``stop -t 1``: ``sleep`` as PID 1 ignores SIGTERM, so that phase would measure
          the one-second grace period of every container, not the engine.
  remove  ``rm`` x N, until ``ps -a`` lists none of them

Cgroups go under a ``pyengine/bench`` child of this process's own cgroup; everything (the
containers, podman's store, the temp dir, the cgroups) is removed at the end, even on failure.

    sudo python bench/parallel.py [--count 50] [--rounds 1] [--json]
"""

from __future__ import annotations

import argparse
import json
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

COMMAND = ["sleep", "300"]
PHASES = ("start", "stop", "remove")


def parallel(argvs: list[list[str]], env: dict[str, str]) -> list[tuple[float, subprocess.CompletedProcess[str]]]:
    """Run every command at once, one thread each; (latency, result) in submission order."""

    def one(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        return time.perf_counter() - started, result

    with ThreadPoolExecutor(max_workers=len(argvs)) as pool:
        return list(pool.map(one, argvs))


def wait_until(condition, what: str, timeout: float = 180.0) -> None:  # noqa: ANN001 - () -> bool
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.05)


def one_round(engine: Engine, count: int, notes: list[str]) -> dict[str, dict[str, float]]:
    """The three phases once; per phase its wall time and the median and max command latency."""
    phases: dict[str, dict[str, float]] = {}

    def record(phase: str, started: float, runs: list[tuple[float, subprocess.CompletedProcess[str]]]) -> None:
        latencies = [latency for latency, _ in runs]
        phases[phase] = {"wall_s": time.perf_counter() - started, "median_command_s": statistics.median(latencies),
                         "max_command_s": max(latencies)}
        failed = [r for _, r in runs if r.returncode != 0]
        if failed:
            notes.append(f"{engine.name} {phase}: {len(failed)} of {len(runs)} commands failed, first: "
                         f"{failed[0].stderr.strip()[-300:]}")

    started = time.perf_counter()
    runs = parallel([engine.run_argv(["-d", "--network", "none"], COMMAND)] * count, engine.env)
    ids = {r.stdout.strip().splitlines()[-1] for _, r in runs if r.returncode == 0 and r.stdout.strip()}
    wait_until(lambda: ids <= engine.ids(), f"{engine.name} ps shows all {len(ids)} containers running")
    record("start", started, runs)
    if len(ids) < count:
        raise RuntimeError(f"{engine.name}: only {len(ids)} of {count} containers started")

    started = time.perf_counter()
    runs = parallel([engine.argv("kill", cid) for cid in sorted(ids)], engine.env)
    wait_until(lambda: not ids & engine.ids(), f"{engine.name} ps shows none of them running")
    record("stop", started, runs)

    started = time.perf_counter()
    runs = parallel([engine.argv("rm", cid) for cid in sorted(ids)], engine.env)
    wait_until(lambda: not ids & engine.ids(all_=True), f"{engine.name} ps -a shows none of them")
    record("remove", started, runs)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="containers started at once (default 50)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per engine, alternating; medians are printed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("containers need namespaces, mounts and cgroups")
    parent = own_cgroup_parent()
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-par-"))
    notes: list[str] = []
    envs, podmans = [], []
    results: dict[str, list[dict[str, dict[str, float]]]] = {}
    try:
        tar = busybox_rootfs_tar(work)
        env = Env(work / "pyengine", BENCH_CONFIG)
        envs.append(env)
        env.import_busybox(tar)
        engines = [env.engine()]
        podman_found = shutil.which("podman")
        if podman_found and parent:
            podman = Podman(work)
            podmans.append(podman)
            podman.import_busybox(tar)
            engines.append(podman.engine(parent))
        else:
            notes.append("podman: not installed" if not podman_found else "podman: no safe cgroup parent here")
        for engine in engines:  # warm-up: page cache, bytecode, the cgroup parents exist after
            timed(engine.run_argv(["--rm", "--network", "none"], ["true"]), engine.env)
            results[engine.name] = []
        for _ in range(args.rounds):
            for engine in engines:
                results[engine.name].append(one_round(engine, args.count, notes))
    finally:
        cleanup(work, envs, podmans)

    medians = {name: {phase: statistics.median(r[phase]["wall_s"] for r in rounds) for phase in PHASES}
               for name, rounds in results.items()}
    report: dict = {"count": args.count, "rounds": args.rounds, "stop_by": "kill (SIGKILL)",
                    "median_wall_s": medians, "rounds_detail": results, "notes": notes}
    if "podman" in medians:
        report["pyengine_over_podman"] = {phase: medians["pyengine"][phase] / medians["podman"][phase]
                                          for phase in PHASES}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.count} containers in parallel (run -d --network none busybox sleep 300; kill; rm), "
          f"{args.rounds} round(s), median wall time per phase:")
    print(f"  {'':<9} {'phase':<7} {'wall':>8} {'per container':>14} {'command median':>15} {'command max':>12}")
    for name, rounds in results.items():
        for phase in PHASES:
            wall = medians[name][phase]
            median_cmd = statistics.median(r[phase]["median_command_s"] for r in rounds)
            max_cmd = max(r[phase]["max_command_s"] for r in rounds)
            print(f"  {name:<9} {phase:<7} {wall:7.2f}s {wall / args.count * 1000:11.1f} ms "
                  f"{median_cmd * 1000:12.0f} ms {max_cmd * 1000:9.0f} ms")
    if "podman" in medians:
        for phase in PHASES:
            print(f"  pyengine / podman, {phase:<6} = {report['pyengine_over_podman'][phase]:.2f}")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
