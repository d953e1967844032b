#!/usr/bin/env python3
"""``pyengine build`` beside ``podman build`` (buildah) on the issue's 10-instruction Dockerfile
(FROM, ENV, WORKDIR, COPY, 2 RUN, ARG, LABEL, EXPOSE, CMD), cold (``--no-cache``) and fully
cached, measured in the same run, interleaved; prints medians and the ratios.

Both engines build from the same busybox rootfs (as the tests make it), imported into each.
podman runs the way this host needs (TESTING.md): runc, cgroupfs, file events, its own roots
under a temp dir, explicit ulimits, ``--pull never``, its RUN containers' cgroups under a
``pyengine/bench`` child of this process's own cgroup (pyengine's too, through its config).
Goal (issue 12): cold at most 0.5x the faster of podman and dockerd's legacy builder (0.87 s
and 0.99 s measured here), cached no slower than dockerd's (0.05 s).

    sudo python bench/build.py [--runs 10] [--storage-driver overlay|vfs] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_CONFIG,
    PODMAN_ULIMITS,
    Env,
    Podman,
    busybox_rootfs_tar,
    cleanup,
    own_cgroup_parent,
    remove_cgroups,
    require_root,
    timed,
)

DOCKERFILE = """\
FROM {base}
ENV GREETING=hello
WORKDIR /app
COPY app.txt .
RUN echo "$GREETING" > /app/greeting && cat app.txt > /dev/null
RUN mkdir -p /app/data && echo two > /app/data/two
ARG VERSION=1
LABEL version=$VERSION
EXPOSE 8080
CMD ["cat", "/app/greeting"]
"""


def context(work: Path, name: str, base: str) -> Path:
    ctx = work / f"ctx-{name}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (ctx / "app.txt").write_text("the application\n" * 100)
    return ctx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--storage-driver", default="overlay")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("RUN steps need namespaces, mounts and cgroups")
    parent = own_cgroup_parent()
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-build-"))
    results: dict[str, list[float]] = {}
    notes: list[str] = []
    envs, podmans = [], []
    try:
        tar = busybox_rootfs_tar(work)
        env = Env(work / "pyengine", BENCH_CONFIG, storage_driver=args.storage_driver)
        envs.append(env)
        env.import_busybox(tar)
        ctx = context(work, "pyengine", "busybox")
        commands = {
            "pyengine cold": (env.argv("build", "-q", "--no-cache", "--network", "none", "-t", "bench:1", str(ctx)),
                              env.env),
            "pyengine cached": (env.argv("build", "-q", "--network", "none", "-t", "bench:1", str(ctx)), env.env),
        }
        if shutil.which("podman") and parent:
            podman = Podman(work, storage_driver=args.storage_driver)
            podmans.append(podman)
            podman.import_busybox(tar)
            podman_ctx = context(work, "podman", "localhost/busybox")
            flags = ["build", "-q", "--pull=never", "--network", "none", "--cgroup-parent", parent + "/podman",
                     *PODMAN_ULIMITS, "-t", "bench:1"]
            commands["podman cold"] = ([*podman.base, *flags, "--no-cache", str(podman_ctx)], podman.env)
            commands["podman cached"] = ([*podman.base, *flags, str(podman_ctx)], podman.env)
        else:
            notes.append("podman: not installed" if not shutil.which("podman") else "podman: no safe cgroup parent")
        for argv, environ in commands.values():  # warm-up: caches filled, fork server started
            timed(argv, environ)
            timed(argv, environ)
        results = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (argv, environ) in commands.items():
                results[name].append(timed(argv, environ))
    finally:
        cleanup(work, envs, podmans)
        remove_cgroups()
    medians = {name: statistics.median(times) for name, times in results.items() if times}
    if args.json:
        print(json.dumps({"medians_s": medians, "runs": args.runs, "notes": notes}, indent=1))
        return
    print(f"10-instruction build, {args.runs} runs each, storage driver {args.storage_driver}, median seconds:")
    for name, value in medians.items():
        print(f"  {name:16s} {value:.3f} s")
    for kind in ("cold", "cached"):
        ours, theirs = medians.get(f"pyengine {kind}"), medians.get(f"podman {kind}")
        if ours and theirs:
            print(f"  {kind}: pyengine/podman = {ours / theirs:.2f}x")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
