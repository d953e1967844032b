#!/usr/bin/env python3
"""Wall time of ``pyengine --version`` and of ``pyengine ps`` (no containers) beside podman's,
measured in the same run.

Runs each command N times, interleaved (so a busy moment of the machine hits both alike),
after one warm-up run each, and prints the medians and their ratios. ``pyengine --version`` is
the cost every command pays before it does anything: the client's start and the fork server's
round trip (the first warm-up run starts the server). ``ps`` adds building the engine (config,
plugins, stores) and listing nothing. Each engine gets its own roots under a temp dir (pyengine
its own fork server, stopped at the end). Without podman it prints pyengine's figures alone.

    python bench/version.py [--runs 21] [--pyengine PATH] [--podman PATH] [--no-ps] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Env, Podman, cleanup, pyengine_script, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command (default 21)")
    parser.add_argument("--pyengine", default=pyengine_script(), help="the pyengine executable")
    parser.add_argument("--podman", default=shutil.which("podman"), help="the podman executable")
    parser.add_argument("--no-ps", action="store_true", help="time --version only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not (os.access(args.pyengine, os.X_OK) or shutil.which(args.pyengine)):
        parser.error("pyengine is not installed here; pip install -e . first or pass --pyengine")
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-version-"))
    env = Env(work / "pyengine")
    podman = Podman(work, executable=args.podman) if args.podman and not args.no_ps else None
    try:
        return measure(args, env, podman)
    finally:
        cleanup(work, [env], [podman] if podman else [])


def measure(args: argparse.Namespace, env: Env, podman: Podman | None) -> int:
    # (label, engine, argv, environment)
    commands = [("--version", "pyengine", [args.pyengine, "--version"], env.env)]
    if args.podman:
        commands.append(("--version", "podman", [args.podman, "--version"], None))
    if not args.no_ps:
        commands.append(("ps", "pyengine", [args.pyengine, "ps"], env.env))
        if podman is not None:
            commands.append(("ps", "podman", [*podman.base, "ps"], podman.env))
    for _, _, argv, environ in commands:
        timed(argv, env=environ)  # warm the page cache and the bytecode cache; start the fork server
    env.wait_for_fork_server()
    samples: dict[tuple[str, str], list[float]] = {(c[0], c[1]): [] for c in commands}
    for _ in range(args.runs):
        for label, engine, argv, environ in commands:
            samples[label, engine].append(timed(argv, env=environ))
    medians = {key: statistics.median(times) for key, times in samples.items()}
    ratios = {label: medians[label, "pyengine"] / medians[label, "podman"]
              for label, engine in medians if engine == "podman"}

    if args.json:
        print(json.dumps({"runs": args.runs,
                          "median_seconds": {f"{e} {lab}": t for (lab, e), t in medians.items()},
                          "min_seconds": {f"{e} {lab}": min(t) for (lab, e), t in samples.items()},
                          "ratio_pyengine_to_podman": ratios}))
        return 0
    print(f"{'command':<20} {'median':>10} {'min':>10}   ({args.runs} runs each, interleaved)")
    for (label, engine), times in samples.items():
        print(f"{engine + ' ' + label:<20} {medians[label, engine] * 1000:>8.1f}ms {min(times) * 1000:>8.1f}ms")
    for label, ratio in ratios.items():
        print(f"ratio pyengine/podman, {label}: {ratio:.2f}x (goal: at most 1.00x)")
    if not ratios:
        print("podman not found: no ratio (apt-get install podman to compare)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
