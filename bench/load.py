"""Benchmark: `pyengine load` beside `podman load` of the same docker-archive, in the same run,
printed as a ratio (goal: pyengine no slower than podman).

    /opt/pyengine-venv/bin/python bench/load.py [--driver overlay|vfs] [--runs 3] [--mb 200]
        [--files 14000] [--work DIR] [--archive FILE]

Each run loads into a fresh data root (pyengine) and a fresh --root/--runroot/--tmpdir (podman,
with the matching --storage-driver and this host's flags from TESTING.md), alternating the two
so both see the same page cache conditions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from layer_create import Env, build_archive  # noqa: E402


def time_pyengine(driver: str, archive: Path, work: Path) -> float:
    env = Env(Path(tempfile.mkdtemp(prefix="load-pyengine-", dir=work)))
    try:
        started = time.perf_counter()
        env.pyengine("--storage-driver", driver, "load", "-i", str(archive))
        elapsed = time.perf_counter() - started
        env.pyengine("--storage-driver", driver, "rmi", "bench/big:1")
        return elapsed
    finally:
        shutil.rmtree(env.root, ignore_errors=True)


def time_podman(driver: str, archive: Path, work: Path) -> float:
    root = Path(tempfile.mkdtemp(prefix="load-podman-", dir=work))
    # podman refuses a runroot longer than 50 characters.
    runroot = Path(tempfile.mkdtemp(prefix="pdr-", dir="/tmp"))
    flags = ["--root", str(root / "root"), "--runroot", str(runroot), "--tmpdir", str(root / "tmp"),
             "--storage-driver", driver, "--runtime", "runc", "--cgroup-manager", "cgroupfs",
             "--events-backend", "file"]
    env = {**os.environ, "TMPDIR": str(root / "tmp")}
    (root / "tmp").mkdir()
    try:
        started = time.perf_counter()
        subprocess.run(["podman", *flags, "load", "-q", "-i", str(archive)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        subprocess.run(["podman", *flags, "rmi", "-a", "-f"], check=False, env=env, capture_output=True)
        return elapsed
    finally:
        # podman's overlay storage leaves its own mounts (the store's shm/overlay) under --root.
        subprocess.run(["podman", *flags, "system", "reset", "-f"], check=False, env=env, capture_output=True)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith((f"{root}/", f"{runroot}/"))]
        for point in reversed(mounts):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay", help="storage driver for both engines")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=14000)
    parser.add_argument("--work", type=Path, default=None, help="keep the built image here between runs")
    parser.add_argument("--archive", type=Path, default=None, help="a docker-archive to load instead")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pyengine-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    archive = args.archive or build_archive(work, args.mb, args.files)
    ours, theirs = [], []
    for _ in range(args.runs):
        ours.append(time_pyengine(args.driver, archive, work))
        theirs.append(time_podman(args.driver, archive, work))
    mine, peer = statistics.median(ours), statistics.median(theirs)
    print(f"archive {archive.name} ({archive.stat().st_size / 1e6:.0f} MB), driver {args.driver}, {args.runs} runs")
    print(f"pyengine load: median {mine:.2f}s  (all: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"podman load:   median {peer:.2f}s  (all: {', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"ratio pyengine/podman: {mine / peer:.2f}")


if __name__ == "__main__":
    main()
