"""Benchmark of the launcher alone: start `true` in a busybox rootfs with full confinement
(namespaces, pivot_root, masks, /dev, caps, seccomp) and reap it, in-process and from a fresh
Python process, against `runc run` of the same rootfs. Prints medians and ratios.

    /opt/pyengine-venv/bin/python bench/run_runtime.py [--runs 30]
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
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from common import own_cgroup_parent, remove_cgroups, runc_bundle  # noqa: E402

from tests.test_runtime_launch import make_rootfs  # noqa: E402

FRESH = """
import sys
from pyengine.runtime.launch import launch
from pyengine.runtime.spec import default_spec
sys.exit(launch("bench", default_spec(["true"], sys.argv[1], hostname="bench"), []).wait())
"""


def median_of(runs: int, action) -> float:  # noqa: ANN001
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    import structlog

    from pyengine.runtime.launch import launch
    from pyengine.runtime.spec import default_spec

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = make_rootfs(Path(tmp) / "rootfs")
        spec = default_spec(["true"], str(rootfs), hostname="bench")
        results = {"launch_in_process_s": median_of(runs, lambda: launch("bench", spec, []).wait())}
        results["launch_fresh_python_s"] = median_of(
            runs, lambda: subprocess.run([sys.executable, "-c", FRESH, str(rootfs)], check=True))
        parent = own_cgroup_parent()
        if shutil.which("runc") and parent:
            # runc's cgroups go under this process's own cgroup (its default is a top-level group).
            bundle = runc_bundle(Path(tmp) / "bundle", ["true"], parent + "/runc", rootfs=rootfs, keep_rlimits=False)
            state = Path(tmp) / "runc-state"
            counter = iter(range(10**6))
            try:
                results["runc_run_s"] = median_of(runs, lambda: subprocess.run(
                    ["runc", "--root", str(state), "run", "--bundle", str(bundle), f"bench{next(counter)}"],
                    check=True, stdin=subprocess.DEVNULL))
            finally:
                remove_cgroups()
            results["launch_fresh_python_vs_runc"] = results["launch_fresh_python_s"] / results["runc_run_s"]
    for key, value in results.items():
        print(f"{key:32} {value:.4f}")


if __name__ == "__main__":
    main()
