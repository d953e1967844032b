"""Benchmark: `pyengine pull` beside `podman pull` of the same ~200 MB many-file image from the
same local docker-registry (plain HTTP on 127.0.0.1), in the same run, printed as a ratio
(goal: pyengine no slower than podman).

    /opt/pyengine-venv/bin/python bench/pull.py [--driver overlay|vfs] [--runs 3] [--mb 200]
        [--files 14000] [--work DIR]

Each run pulls into a fresh data root (pyengine) and a fresh --root/--runroot (podman),
alternating the two; both unpack the layers into their storage driver.
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
sys.path.insert(0, str(REPO / "tests"))

import imagebuild as ib  # noqa: E402
import registry_fixtures as rf  # noqa: E402
from layer_create import Env  # noqa: E402

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


class Podman:
    """podman with its own root, run root and tmp dir (this host's flags from TESTING.md)."""

    def __init__(self, driver: str, work: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pull-podman-", dir=work))
        # podman refuses a runroot longer than 50 characters.
        self.runroot = Path(tempfile.mkdtemp(prefix="pdr-", dir="/tmp"))
        (self.root / "tmp").mkdir()
        self.flags = ["--root", str(self.root / "root"), "--runroot", str(self.runroot), "--tmpdir",
                      str(self.root / "tmp"), "--storage-driver", driver, "--runtime", "runc",
                      "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        self.env = {**os.environ, "TMPDIR": str(self.root / "tmp")}

    def run(self, *args: str) -> None:
        subprocess.run(["podman", *self.flags, *args], check=True, env=self.env, stdout=subprocess.DEVNULL)

    def close(self) -> None:
        subprocess.run(["podman", *self.flags, "system", "reset", "-f"], check=False, env=self.env,
                       capture_output=True)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f
                      if line.split()[4].startswith((f"{self.root}/", f"{self.runroot}/"))]
        for point in reversed(mounts):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


def time_podman(driver: str, host: str, work: Path) -> float:
    podman = Podman(driver, work)
    try:
        started = time.perf_counter()
        podman.run("pull", "-q", "--tls-verify=false", f"{host}/{NAME}")
        return time.perf_counter() - started
    finally:
        podman.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay", help="storage driver for both engines")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=14000)
    parser.add_argument("--work", type=Path, default=None, help="keep the built image here between runs")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pyengine-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    layout = build_layout(work, args.mb, args.files)
    reg = seed_registry(work, layout)
    try:
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(time_pyengine(args.driver, reg.host, work))
            theirs.append(time_podman(args.driver, reg.host, work))
    finally:
        reg.stop()
        shutil.rmtree(reg.root, ignore_errors=True)
    mine, peer = statistics.median(ours), statistics.median(theirs)
    size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
    print(f"image {args.mb} MB / {args.files} files ({size / 1e6:.0f} MB compressed), driver {args.driver}, "
          f"{args.runs} runs")
    print(f"pyengine pull: median {mine:.2f}s  (all: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"podman pull:   median {peer:.2f}s  (all: {', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"ratio pyengine/podman: {mine / peer:.2f}")


if __name__ == "__main__":
    main()
