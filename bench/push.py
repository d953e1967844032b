"""Benchmark: `pyengine push` beside `skopeo copy` of the same ~200 MB many-file image to a
fresh local docker-registry (plain HTTP on 127.0.0.1), in the same run, printed as a ratio.

    /opt/pyengine-venv/bin/python bench/push.py [--driver overlay|vfs] [--runs 3] [--mb 200]
        [--files 14000] [--work DIR]

pyengine pushes from its store (the image pulled once beforehand); skopeo copies from the OCI
layout the image was built in. Every run of either gets an empty registry, so no blob is skipped.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_image_args, work_dir  # noqa: E402
from pull import NAME, build_layout, pyengine_env, rf, seed_registry  # noqa: E402


def fresh_registry(work: Path) -> rf.Registry:
    return rf.start_registry(Path(tempfile.mkdtemp(prefix="registry-", dir=work)))


def timed(work: Path, push) -> float:  # noqa: ANN001 - host -> None
    reg = fresh_registry(work)
    try:
        started = time.perf_counter()
        push(reg.host)
        return time.perf_counter() - started
    finally:
        reg.stop()
        shutil.rmtree(reg.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay", help="storage driver of pyengine's store")
    add_image_args(parser, runs=3)
    args = parser.parse_args()
    work = work_dir(args)
    layout = build_layout(work, args.mb, args.files)
    seed = seed_registry(work, layout)
    env = pyengine_env(work, seed.host)
    try:
        env.pyengine("--storage-driver", args.driver, "pull", "-q", f"{seed.host}/{NAME}")
    finally:
        seed.stop()
        shutil.rmtree(seed.root, ignore_errors=True)

    def ours(host: str) -> None:
        env.config_path.write_text(f'[registries."{host}"]\ninsecure = true\n')
        env.pyengine("--storage-driver", args.driver, "push", "-q", f"{seed.host}/{NAME}", f"{host}/{NAME}")

    def theirs(host: str) -> None:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{layout}:big",
                        f"docker://{host}/{NAME}"], check=True, capture_output=True)

    try:
        mine_all, peer_all = [], []
        for _ in range(args.runs):
            mine_all.append(timed(work, ours))
            peer_all.append(timed(work, theirs))
    finally:
        subprocess.run([sys.executable, "-m", "pyengine", "--storage-driver", args.driver, "rmi",
                        f"{seed.host}/{NAME}"], env=env.env, capture_output=True)
        shutil.rmtree(env.root, ignore_errors=True)
    mine, peer = statistics.median(mine_all), statistics.median(peer_all)
    print(f"image {args.mb} MB / {args.files} files, {args.runs} runs")
    print(f"pyengine push: median {mine:.2f}s  (all: {', '.join(f'{t:.2f}' for t in mine_all)})")
    print(f"skopeo copy:   median {peer:.2f}s  (all: {', '.join(f'{t:.2f}' for t in peer_all)})")
    print(f"ratio pyengine/skopeo: {mine / peer:.2f}")


if __name__ == "__main__":
    main()
