#!/usr/bin/env python3
"""``pyengine build`` beside ``podman build`` (buildah) on the issue's 10-instruction Dockerfile
(FROM, ENV, WORKDIR, COPY, 2 RUN, ARG, LABEL, EXPOSE, CMD), cold (``--no-cache``) and fully
cached, measured in the same run, interleaved; prints medians and the ratios.

Both engines build from the same busybox rootfs (as the tests make it), imported into each.
podman runs the way this host needs (TESTING.md): runc, cgroupfs, file events, its own roots
under a temp dir, explicit ulimits, ``--pull never``, its RUN containers' cgroups under a
``pyengine/bench`` child of this process's own cgroup (pyengine's too, through its config).
dockerd (Debian's docker.io, started by the script on its own roots as bench/daemon.py does it,
never the machine's) builds the same context with its legacy builder (``DOCKER_BUILDKIT=0``, what
the docker CLI without buildx uses). Goal (issue 12): cold at most 0.5x the faster of podman and
dockerd, cached no slower than dockerd's.

    sudo python bench/build.py [--runs 10] [--storage-driver overlay|vfs] [--no-dockerd] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    unmount_under,
)
from daemon import DOCKER, children, start_dockerd, stop  # noqa: E402

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
    parser.add_argument("--no-dockerd", action="store_true", help="leave dockerd out")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("RUN steps need namespaces, mounts and cgroups")
    parent = own_cgroup_parent()
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-build-"))
    results: dict[str, list[float]] = {}
    notes: list[str] = []
    envs, podmans = [], []
    docker: Any = None
    exec_root = Path(tempfile.mkdtemp(prefix="pdx-", dir="/tmp"))  # dockerd's sockets: keep it short
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
        if not args.no_dockerd and parent:
            docker = start_dockerd(work, exec_root, parent)
        if docker is not None:
            docker.docker("import", str(tar), "busybox:latest")
            docker_ctx = context(work, "dockerd", "busybox")
            docker.env["DOCKER_BUILDKIT"] = "0"
            flags = ["build", "-q", "--network", "none", "-t", "bench:1"]
            commands["dockerd cold"] = ([DOCKER, *flags, "--no-cache", str(docker_ctx)], docker.env)
            commands["dockerd cached"] = ([DOCKER, *flags, str(docker_ctx)], docker.env)
        elif not args.no_dockerd:
            notes.append("dockerd: docker.io could not be installed" if parent else "dockerd: no safe cgroup parent")
        for argv, environ in commands.values():  # warm-up: caches filled, fork server started
            timed(argv, environ)
            timed(argv, environ)
        results = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (argv, environ) in commands.items():
                results[name].append(timed(argv, environ))
    finally:
        if docker is not None:
            docker.remove_all()
            stop(docker.process, children(docker.process.pid))
        unmount_under(work, exec_root)
        shutil.rmtree(exec_root, ignore_errors=True)
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
        ours = medians.get(f"pyengine {kind}")
        for peer in ("podman", "dockerd"):
            theirs = medians.get(f"{peer} {kind}")
            if ours and theirs:
                print(f"  {kind}: pyengine/{peer} = {ours / theirs:.2f}x")
    peers_cold = [medians[f"{p} cold"] for p in ("podman", "dockerd") if f"{p} cold" in medians]
    if peers_cold and "pyengine cold" in medians:
        print(f"  goal cold: pyengine / the faster peer = {medians['pyengine cold'] / min(peers_cold):.2f}x"
              " (at most 0.50x)")
    if "dockerd cached" in medians and "pyengine cached" in medians:
        print(f"  goal cached: pyengine / dockerd = {medians['pyengine cached'] / medians['dockerd cached']:.2f}x"
              " (at most 1.00x)")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
