#!/usr/bin/env python3
"""Start-to-exit time of ``pyengine run --rm --network none busybox true`` beside podman and
runc running the same rootfs, measured in the same run, interleaved; prints medians and ratios.

The image is Debian's busybox-static made into a rootfs (as the tests make it), imported into
pyengine and into podman; runc runs a bundle of the same rootfs. podman is run the way this
host needs (TESTING.md): runc, cgroupfs, file events, its own roots under a temp dir, explicit
ulimits, --pull never. Every engine's cgroups go under a ``pyengine/bench`` child of this
process's own cgroup, as the safety rules ask.

    sudo python bench/run.py [--runs 20] [--storage-driver overlay|vfs] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from containers_support import busybox_rootfs_tar  # noqa: E402


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
    return deepest.rstrip("/") + "/pyengine/bench"


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


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode().strip()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--storage-driver", default="overlay")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: containers need namespaces, mounts and cgroups")
    pyengine = str(Path(sys.executable).parent / "pyengine")
    parent = own_cgroup_parent()
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-run-"))
    results: dict[str, list[float]] = {"pyengine": [], "podman": [], "runc": []}
    notes = []
    try:
        tar = busybox_rootfs_tar(work)
        env = {**os.environ, "PYENGINE_DATA_ROOT": str(work / "pe-data"), "PYENGINE_RUN_ROOT": str(work / "pe-run"),
               "PYENGINE_CONFIG": str(work / "pe.toml"), "PYENGINE_STORAGE_DRIVER": args.storage_driver}
        (work / "pe.toml").write_text('[cgroups]\nparent = "pyengine/bench"\n')
        subprocess.run([pyengine, "import", str(tar), "busybox"], env=env, check=True, capture_output=True)
        commands = {"pyengine": ([pyengine, "run", "--rm", "--network", "none", "busybox", "true"], env, None)}

        podman = shutil.which("podman")
        if podman and parent:
            p = work / "podman"
            base = [podman, "--root", str(p / "root"), "--runroot", str(p / "runroot"), "--tmpdir", str(p / "tmp"),
                    "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                    "--storage-driver", args.storage_driver]
            subprocess.run(base + ["import", str(tar), "localhost/busybox"], check=True, capture_output=True)
            commands["podman"] = (base + ["run", "--rm", "--pull", "never", "--network", "none",
                                          "--cgroup-parent", parent + "/podman",
                                          "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
                                          "localhost/busybox", "true"], None, None)
        else:
            notes.append("podman: not installed" if not podman else "podman: no safe cgroup parent here")

        runc = shutil.which("runc")
        if runc and parent:
            bundle = work / "bundle"
            (bundle / "rootfs").mkdir(parents=True)
            subprocess.run(["tar", "-C", str(bundle / "rootfs"), "-xf", str(tar)], check=True)
            subprocess.run([runc, "spec"], cwd=bundle, check=True)
            spec = json.loads((bundle / "config.json").read_text())
            spec["process"]["terminal"] = False
            spec["process"]["args"] = ["true"]
            spec["linux"]["cgroupsPath"] = parent + "/runc"
            (bundle / "config.json").write_text(json.dumps(spec))
            commands["runc"] = ([runc, "--root", str(work / "runc-state"), "run", "-b", str(bundle), "bench"],
                                None, None)
        else:
            notes.append("runc: not installed" if not runc else "runc: no safe cgroup parent here")

        for argv, env_, cwd in commands.values():  # warm-up
            timed(argv, env_, cwd)
        for _ in range(args.runs):
            for name, (argv, env_, cwd) in commands.items():
                results[name].append(timed(argv, env_, cwd))
    finally:
        if (work / "podman").exists() and shutil.which("podman"):
            subprocess.run(["umount", "-R", str(work / "podman" / "root" / "overlay")], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], capture_output=True)
        remove_cgroups()

    medians = {name: statistics.median(v) for name, v in results.items() if v}
    report = {"runs": args.runs, "storage_driver": args.storage_driver, "median_s": medians, "notes": notes}
    if "podman" in medians:
        report["pyengine_over_podman"] = medians["pyengine"] / medians["podman"]
    if "runc" in medians:
        report["pyengine_over_runc"] = medians["pyengine"] / medians["runc"]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"run --rm --network none busybox true, {args.runs} runs each, {args.storage_driver}, medians:")
    for name, value in medians.items():
        print(f"  {name:<9} {value * 1000:7.1f} ms")
    if "podman" in medians:
        print(f"  pyengine / podman = {report['pyengine_over_podman']:.2f}  (goal: <= 0.50)")
    if "runc" in medians:
        print(f"  pyengine / runc   = {report['pyengine_over_runc']:.2f}")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
