#!/usr/bin/env python3
"""Start-to-exit time of ``pyengine run --rm --network none busybox true`` beside podman and
runc running the same rootfs, measured in the same run, interleaved; prints medians and ratios.

The image is Debian's busybox-static made into a rootfs (as the tests make it), imported into
pyengine and into podman; runc runs a bundle of the same rootfs. podman is run the way this
host needs (TESTING.md): runc, cgroupfs, file events, its own roots under a temp dir, explicit
ulimits, --pull never. Every engine's cgroups go under a ``pyengine/bench`` child of this
process's own cgroup, as the safety rules ask.

pyengine is timed twice: as a user runs it, with its fork server warm (the first command of
the warm-up starts it; see pyengine/forkserver), and with ``PYENGINE_FORK_SERVER=0``, every
command a fresh interpreter ("pyengine-cold").

    sudo python bench/run.py [--runs 20] [--storage-driver overlay|vfs] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_CONFIG,
    Env,
    Podman,
    busybox_rootfs_tar,
    cleanup,
    own_cgroup_parent,
    require_root,
    runc_bundle,
    timed,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--storage-driver", default="overlay")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("containers need namespaces, mounts and cgroups")
    parent = own_cgroup_parent()
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-run-"))
    results: dict[str, list[float]] = {"pyengine": [], "pyengine-cold": [], "podman": [], "runc": []}
    notes = []
    envs, podmans = [], []
    try:
        tar = busybox_rootfs_tar(work)
        env = Env(work / "pyengine", BENCH_CONFIG, storage_driver=args.storage_driver)
        envs.append(env)
        env.import_busybox(tar)
        argv = env.argv("run", "--rm", "--network", "none", "busybox", "true")
        # pyengine as a user runs it (the fork server warm), and with the fork server off.
        commands = {"pyengine": (argv, env.env, None), "pyengine-cold": (argv, env.without_fork_server(), None)}

        podman_found = shutil.which("podman")
        if podman_found and parent:
            podman = Podman(work, storage_driver=args.storage_driver)
            podmans.append(podman)
            podman.import_busybox(tar)
            commands["podman"] = ([*podman.base, "run", "--rm", *podman.run_flags(parent), "--network", "none",
                                   "localhost/busybox", "true"], podman.env, None)
        else:
            notes.append("podman: not installed" if not podman_found else "podman: no safe cgroup parent here")

        runc = shutil.which("runc")
        if runc and parent:
            bundle = runc_bundle(work / "bundle", ["true"], parent + "/runc")
            (bundle / "rootfs").mkdir()
            subprocess.run(["tar", "-C", str(bundle / "rootfs"), "-xf", str(tar)], check=True)
            commands["runc"] = ([runc, "--root", str(work / "runc-state"), "run", "-b", str(bundle), "bench"],
                                None, None)
        else:
            notes.append("runc: not installed" if not runc else "runc: no safe cgroup parent here")

        for argv, env_, cwd in commands.values():  # warm-up
            timed(argv, env_, cwd)
        if not env.wait_for_fork_server():
            notes.append("pyengine: the fork server did not start; both rows ran in-process")
        for _ in range(args.runs):
            for name, (argv, env_, cwd) in commands.items():
                results[name].append(timed(argv, env_, cwd))
    finally:
        cleanup(work, envs, podmans)

    medians = {name: statistics.median(v) for name, v in results.items() if v}
    report = {"runs": args.runs, "storage_driver": args.storage_driver, "median_s": medians, "notes": notes}
    if "podman" in medians:
        report["pyengine_over_podman"] = medians["pyengine"] / medians["podman"]
        report["pyengine_cold_over_podman"] = medians["pyengine-cold"] / medians["podman"]
    if "runc" in medians:
        report["pyengine_over_runc"] = medians["pyengine"] / medians["runc"]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"run --rm --network none busybox true, {args.runs} runs each, {args.storage_driver}, medians:")
    for name, value in medians.items():
        print(f"  {name:<13} {value * 1000:7.1f} ms")
    if "podman" in medians:
        print(f"  pyengine / podman = {report['pyengine_over_podman']:.2f}  (goal: <= 0.50)")
        print(f"  pyengine-cold / podman = {report['pyengine_cold_over_podman']:.2f}  (fork server off)")
    if "runc" in medians:
        print(f"  pyengine / runc   = {report['pyengine_over_runc']:.2f}")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
