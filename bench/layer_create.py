"""Benchmark: the time to create a container layer (create_read_write + get + put) on a ~200 MB,
~14k-file image, per storage driver. Overlay should be flat in image size; vfs copies everything.

    /opt/pyengine-venv/bin/python bench/layer_create.py [--drivers overlay,vfs] [--runs 5]
        [--mb 200] [--files 14000] [--work DIR]

Builds the image with umoci (tests/imagebuild.py), loads it with `pyengine load` into a fresh
data root per driver, then times the driver calls in-process. Prints one line per driver.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

import imagebuild as ib  # noqa: E402
from common import Env, add_image_args, work_dir  # noqa: E402


def build_archive(work: Path, mb: int, files: int) -> Path:
    archive = work / f"synthetic-{mb}mb-{files}.tar"
    if not archive.exists():
        started = time.monotonic()
        layout = ib.synthetic_image(work / f"build-{mb}-{files}", total_mb=mb, files=files)
        ib.docker_archive(layout, "big", archive, "bench/big:1")
        print(f"built {archive.name} ({archive.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.1f}s",
              file=sys.stderr)
    return archive


def bench_driver(driver: str, archive: Path, work: Path, runs: int) -> str:
    env = Env(Path(tempfile.mkdtemp(prefix=f"layer-{driver}-", dir=work)))
    try:
        env.pyengine("--storage-driver", driver, "load", "-i", str(archive))
    except subprocess.CalledProcessError as exc:
        subprocess.run(["rm", "-rf", str(env.root)], check=False)
        return f"{driver:>12}: not available ({exc})"
    engine = ib.open_engine(env, driver)
    times = []
    try:
        top = engine.images.resolve_image("bench/big:1").top_layer
        storage = engine.storage
        for i in range(runs):
            layer_id = f"bench-{i}"
            started = time.perf_counter()
            storage.create_read_write(layer_id, top)
            root = storage.get(layer_id)
            assert (root / "bin/busybox").exists()
            storage.put(layer_id)
            times.append(time.perf_counter() - started)
            storage.remove(layer_id)
    finally:
        engine.close()
        env.pyengine("--storage-driver", driver, "rmi", "bench/big:1")
        subprocess.run(["rm", "-rf", str(env.root)], check=False)
    return (f"{driver:>12}: container layer create+mount median {statistics.median(times) * 1000:8.1f} ms "
            f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, {runs} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", default="overlay,vfs")
    add_image_args(parser, runs=5)
    args = parser.parse_args()
    work = work_dir(args)
    archive = build_archive(work, args.mb, args.files)
    print(f"image: {args.mb} MB in {args.files} files, {archive.stat().st_size / 1e6:.0f} MB archive")
    for driver in [d for d in args.drivers.split(",") if d]:
        print(bench_driver(driver, archive, work, args.runs), flush=True)


if __name__ == "__main__":
    main()
