"""Benchmark: `pyengine pull` beside `podman pull` of the same ~200 MB many-file image from the
same local docker-registry (plain HTTP on 127.0.0.1), in the same run, printed as a ratio
(goal, issue 15: pyengine at most 0.5x podman), with the floor: the same layers already on
disk, extracted by GNU tar (bench/floor.py says how, and why without a sync).

    /opt/pyengine-venv/bin/python bench/pull.py [--driver overlay|vfs] [--runs 3] [--mb 200]
        [--files 14000] [--work DIR]

Each run pulls into a fresh data root (pyengine) and a fresh --root/--runroot (podman), then
extracts the layout's layer blobs into a fresh directory beside them (the floor), interleaving
the three; both engines unpack the layers into their storage driver. The registry's files and
the layout's blobs are read once before the first run, so all three find them in the page cache.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

import imagebuild as ib  # noqa: E402
import registry_fixtures as rf  # noqa: E402
from common import Env, Podman, add_image_args, work_dir  # noqa: E402
from floor import layout_layers, time_floor, warm  # noqa: E402

NAME = "bench/big:1"


def build_layout(work: Path, mb: int, files: int) -> Path:
    layout = work / f"build-{mb}-{files}" / "layout"
    if not (layout / "index.json").exists():
        shutil.rmtree(layout.parent, ignore_errors=True)
        started = time.monotonic()
        ib.synthetic_image(layout.parent, total_mb=mb, files=files)
        print(f"built {layout} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return layout


def seed_registry(work: Path, layout: Path) -> rf.Registry:
    reg = rf.start_registry(Path(tempfile.mkdtemp(prefix="registry-", dir=work)))
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{layout}:big",
                    f"docker://{reg.host}/{NAME}"], check=True, capture_output=True)
    return reg


def pyengine_env(work: Path, host: str) -> Env:
    env = Env(Path(tempfile.mkdtemp(prefix="pull-pyengine-", dir=work)))
    env.config_path.write_text(f'[registries."{host}"]\ninsecure = true\n')
    return env


def time_pyengine(driver: str, host: str, work: Path) -> float:
    env = pyengine_env(work, host)
    try:
        started = time.perf_counter()
        env.pyengine("--storage-driver", driver, "pull", "-q", f"{host}/{NAME}")
        return time.perf_counter() - started
    finally:
        subprocess.run([sys.executable, "-m", "pyengine", "--storage-driver", driver, "rmi", f"{host}/{NAME}"],
                       env=env.env, capture_output=True)
        shutil.rmtree(env.root, ignore_errors=True)


def time_podman(driver: str, host: str, work: Path) -> float:
    podman = Podman(work, storage_driver=driver)
    try:
        started = time.perf_counter()
        podman.run("pull", "-q", "--tls-verify=false", f"{host}/{NAME}")
        return time.perf_counter() - started
    finally:
        podman.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay", help="storage driver for both engines")
    add_image_args(parser, runs=3)
    args = parser.parse_args()
    work = work_dir(args)
    layout = build_layout(work, args.mb, args.files)
    reg = seed_registry(work, layout)
    layers = layout_layers(layout)
    warm(reg.root, *layers)
    try:
        ours, theirs, floors = [], [], []
        for _ in range(args.runs):
            ours.append(time_pyengine(args.driver, reg.host, work))
            theirs.append(time_podman(args.driver, reg.host, work))
            floors.append(time_floor(layers, work))
    finally:
        reg.stop()
        shutil.rmtree(reg.root, ignore_errors=True)
    mine, peer, bare = statistics.median(ours), statistics.median(theirs), statistics.median(floors)
    size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
    print(f"image {args.mb} MB / {args.files} files ({size / 1e6:.0f} MB compressed), driver {args.driver}, "
          f"{args.runs} runs")
    print(f"pyengine pull: median {mine:.2f}s  (all: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"podman pull:   median {peer:.2f}s  (all: {', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"floor (tar of the same layers): median {bare:.2f}s  (all: {', '.join(f'{t:.2f}' for t in floors)})")
    print(f"ratio pyengine/podman: {mine / peer:.2f}")
    print(f"ratio pyengine/floor: {mine / bare:.2f}")
    print("goal pyengine/podman <= 0.50")


if __name__ == "__main__":
    main()
