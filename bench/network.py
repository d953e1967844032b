#!/usr/bin/env python3
"""Start-to-exit time of ``run --rm busybox true`` on a bridge network against ``--network none``,
and against podman's bridge network (netavark), measured in the same run, interleaved.

Everything runs inside a network namespace made for the benchmark (a "test host"), so the
bridges, veths and nftables rules of both engines live there and vanish with it; cgroups go
under a ``pyengine/bench`` child of this process's own cgroup.

    sudo python bench/network.py [--runs 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import secrets
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
    timed,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("bridges, veths and namespaces need it")
    parent = own_cgroup_parent()
    netns = f"pyb-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-net-"))
    results: dict[str, list[float]] = {"pyengine bridge": [], "pyengine none": [], "podman bridge": []}
    notes = []
    envs, podmans = [], []
    subprocess.run(["ip", "netns", "add", netns], check=True)
    inside = ["nsenter", f"--net=/run/netns/{netns}"]
    try:
        subprocess.run(inside + ["ip", "link", "set", "lo", "up"], check=True)
        tar = busybox_rootfs_tar(work)
        env = Env(work / "pyengine", BENCH_CONFIG)
        envs.append(env)
        env.import_busybox(tar)
        run = inside + env.argv("run", "--rm")
        commands = {"pyengine bridge": (run + ["--network", "bridge", "busybox", "true"], env.env),
                    "pyengine none": (run + ["--network", "none", "busybox", "true"], env.env)}
        podman_found = shutil.which("podman")
        if podman_found and parent:
            podman = Podman(work, prefix=inside)
            podmans.append(podman)
            podman.import_busybox(tar)
            argv = [*podman.base, "run", "--rm", *podman.run_flags(parent), "--network", "bridge",
                    "localhost/busybox", "true"]
            probe = subprocess.run(argv, capture_output=True, text=True, env=podman.env)
            if probe.returncode == 0:
                commands["podman bridge"] = (argv, podman.env)
            else:
                notes.append(f"podman's bridge network does not work here: {probe.stderr.strip()[-200:]}")
        else:
            notes.append("podman: not installed" if not podman_found else "podman: no safe cgroup parent here")

        for argv, env_ in commands.values():  # warm-up: the bridge and podman's network exist after
            timed(argv, env_)
        for _ in range(args.runs):
            for name, (argv, env_) in commands.items():
                results[name].append(timed(argv, env_))
        leftover = subprocess.run(inside + ["ip", "-o", "link"], capture_output=True, text=True).stdout
        if "veth" in leftover:
            notes.append("a veth was left in the bench's namespace")
    finally:
        # podman's clean-up runs inside the namespace, before it goes with everything in it.
        for podman in podmans:
            podman.close()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        cleanup(work, envs)

    medians = {name: statistics.median(v) for name, v in results.items() if v}
    report: dict = {"runs": args.runs, "median_s": medians, "notes": notes}
    report["bridge_over_none"] = medians["pyengine bridge"] / medians["pyengine none"]
    if "podman bridge" in medians:
        report["pyengine_over_podman_bridge"] = medians["pyengine bridge"] / medians["podman bridge"]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"run --rm busybox true inside a test netns, {args.runs} runs each, medians:")
    for name, value in medians.items():
        print(f"  {name:<16} {value * 1000:7.1f} ms")
    print(f"  bridge / none             = {report['bridge_over_none']:.2f}"
          f"  (+{(medians['pyengine bridge'] - medians['pyengine none']) * 1000:.0f} ms for the network)")
    if "podman bridge" in medians:
        print(f"  pyengine / podman, bridge = {report['pyengine_over_podman_bridge']:.2f}")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
