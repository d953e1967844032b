"""Benchmark: `pyengine load` beside `podman load` of the same docker-archive, in the same run,
printed as a ratio (goal, issue 15: pyengine at most 0.5x podman), with the floor: the same
layers already on disk, extracted by GNU tar (bench/floor.py says how, and why without a sync).

    /opt/pyengine-venv/bin/python bench/load.py [--driver overlay|vfs] [--runs 3] [--mb 200]
        [--files 14000] [--work DIR] [--archive FILE]

Each run loads into a fresh data root (pyengine) and a fresh --root/--runroot/--tmpdir (podman,
with the matching --storage-driver and this host's flags from TESTING.md), then extracts the
archive's layers (copied out of it once, before the runs) into a fresh directory beside them
(the floor), interleaving the three. The archive and the copied layers are read once before
the first run, so all three find them in the page cache.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Env, Podman, add_image_args, work_dir  # noqa: E402
from floor import archive_layers, time_floor, warm  # noqa: E402
from layer_create import build_archive  # noqa: E402


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
    podman = Podman(work, storage_driver=driver)
    try:
        started = time.perf_counter()
        podman.run("load", "-q", "-i", str(archive))
        return time.perf_counter() - started
    finally:
        podman.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay", help="storage driver for both engines")
    add_image_args(parser, runs=3)
    parser.add_argument("--archive", type=Path, default=None, help="a docker-archive to load instead")
    args = parser.parse_args()
    work = work_dir(args)
    archive = args.archive or build_archive(work, args.mb, args.files)
    blobs = Path(tempfile.mkdtemp(prefix="floor-layers-", dir=work))
    try:
        layers = archive_layers(archive, blobs)
        warm(archive, *layers)
        ours, theirs, floors = [], [], []
        for _ in range(args.runs):
            ours.append(time_pyengine(args.driver, archive, work))
            theirs.append(time_podman(args.driver, archive, work))
            floors.append(time_floor(layers, work))
    finally:
        shutil.rmtree(blobs, ignore_errors=True)
    mine, peer, bare = statistics.median(ours), statistics.median(theirs), statistics.median(floors)
    print(f"archive {archive.name} ({archive.stat().st_size / 1e6:.0f} MB), driver {args.driver}, {args.runs} runs")
    print(f"pyengine load: median {mine:.2f}s  (all: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"podman load:   median {peer:.2f}s  (all: {', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"floor (tar of the same layers): median {bare:.2f}s  (all: {', '.join(f'{t:.2f}' for t in floors)})")
    print(f"ratio pyengine/podman: {mine / peer:.2f}")
    print(f"ratio pyengine/floor: {mine / bare:.2f}")
    print("goal pyengine/podman <= 0.50")


if __name__ == "__main__":
    main()
