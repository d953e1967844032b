#!/usr/bin/env python3
"""Wall time of ``pyengine --version`` beside ``podman --version``, measured in the same run.

Runs each command N times, interleaved (so a busy moment of the machine hits both alike),
after one warm-up run each, and prints the medians and their ratio. ``pyengine --version`` is
the cost every command pays before it does anything: Python start-up plus ``import
pyengine.cli``. Without podman it prints pyengine's figure alone.

    python bench/version.py [--runs 21] [--pyengine PATH] [--podman PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pyengine_script, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command (default 21)")
    parser.add_argument("--pyengine", default=pyengine_script(), help="the pyengine executable")
    parser.add_argument("--podman", default=shutil.which("podman"), help="the podman executable")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not (os.access(args.pyengine, os.X_OK) or shutil.which(args.pyengine)):
        parser.error("pyengine is not installed here; pip install -e . first or pass --pyengine")
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    commands = {"pyengine": [args.pyengine, "--version"]}
    if args.podman:
        commands["podman"] = [args.podman, "--version"]
    for argv in commands.values():
        timed(argv)  # warm the page cache and the bytecode cache
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            samples[name].append(timed(argv))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    ratio = medians["pyengine"] / medians["podman"] if "podman" in medians else None

    if args.json:
        print(json.dumps({"runs": args.runs, "median_seconds": medians, "ratio_pyengine_to_podman": ratio,
                          "min_seconds": {n: min(t) for n, t in samples.items()}}))
        return 0
    print(f"{'command':<20} {'median':>10} {'min':>10}   ({args.runs} runs each, interleaved)")
    for name in commands:
        label = f"{name} --version"
        print(f"{label:<20} {medians[name] * 1000:>8.1f}ms {min(samples[name]) * 1000:>8.1f}ms")
    if ratio is not None:
        print(f"ratio pyengine/podman: {ratio:.2f}x")
    else:
        print("podman not found: no ratio (apt-get install podman to compare)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
