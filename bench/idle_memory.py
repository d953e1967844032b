#!/usr/bin/env python3
"""Memory the engine keeps per idle container: N detached ``busybox sleep 300`` containers,
then the PSS of the engine's own processes beside each one: pyengine's monitor against
podman's conmon, measured in the same run. Prints KiB per container and the ratio (goal:
pyengine no more than conmon, about 414 KiB here; docker's containerd-shim is about 2,962 KiB).

Per container, the engine's processes are the supervisor that stays the container's parent
(pyengine: the monitor, ``monitor_pid`` in the container's state record, checked to be the
parent of ``State.Pid``; podman: ``State.ConmonPid``) and any descendants of it, minus the
container's own process tree. PSS is the sum of ``Pss`` from ``/proc/<pid>/smaps_rollup``:
pages shared between processes (the N monitors, or libc with everyone) are divided among them,
so the figure is what each container adds. A pyengine monitor is Python for its container's
first second, then the small pyengine-shim program (same pid); the benchmark waits for that.
pyengine's fork server (one per user, exiting after its idle time) is shown apart: its PSS
divided over the containers is added in a second figure and ratio. The largest mappings of one monitor and
one conmon are printed too, to show what the memory is.

    sudo python bench/idle_memory.py [--count 10] [--settle 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_CONFIG,
    Engine,
    Env,
    Podman,
    busybox_rootfs_tar,
    cleanup,
    own_cgroup_parent,
    require_root,
)

from pyengine.procfs import children_map  # noqa: E402

FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")
GOALS_KIB = {"conmon": 414, "containerd-shim": 2962}


def tree(root: int, children: dict[int, list[int]], exclude: int) -> list[int]:
    """``root`` and its descendants, without the subtree of ``exclude``."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid == exclude:
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rollup(pid: int) -> dict[str, int]:
    """KiB per field of /proc/<pid>/smaps_rollup."""
    values = dict.fromkeys(FIELDS, 0)
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values


def largest_mappings(pid: int, top: int = 6) -> list[tuple[str, int]]:
    """The mappings with the most PSS (KiB), anonymous ones grouped as [anon]."""
    totals: dict[str, int] = {}
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                parts = line.split()
                name = parts[5] if len(parts) > 5 else "[anon]"
            elif first == "Pss:":
                totals[name] = totals.get(name, 0) + int(line.split()[1])
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


def command_of(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]


def start_idle(engine: Engine, count: int) -> list[str]:
    args = engine.run_args(["-d", "--network", "none"], ["sleep", "300"])
    return [engine.cli(*args).stdout.strip().splitlines()[-1] for _ in range(count)]


def supervisors(engine: Engine, env: Env | None, ids: list[str], notes: list[str]) -> list[tuple[int, int]]:
    """(supervisor pid, container pid) per container."""
    pairs = []
    template = "{{.State.Pid}}" if env is not None else "{{.State.Pid}} {{.State.ConmonPid}}"
    for cid in ids:
        fields = engine.cli("inspect", "--format", template, cid).stdout.split()
        pid = int(fields[0])
        with open(f"/proc/{pid}/status") as f:
            parent = int(next(line for line in f if line.startswith("PPid:")).split()[1])
        supervisor = env.monitor_pid(cid) if env is not None else int(fields[1])
        if supervisor != parent:
            notes.append(f"{engine.name} {cid[:12]}: the container's parent is {parent} "
                         f"({command_of(parent)}), not the supervisor {supervisor}")
        pairs.append((supervisor, pid))
    return pairs


def wait_for_shims(env: Env, ids: list[str], deadline: float = 15.0) -> int:
    """Wait until each monitor has exec'd pyengine-shim (after its container's first second);
    how many have."""
    from pyengine import shim

    end = time.monotonic() + deadline
    while True:
        done = 0
        for cid in ids:
            try:
                done += os.readlink(f"/proc/{env.monitor_pid(cid)}/exe") == shim.PROGRAM
            except OSError:
                pass
        if done == len(ids) or time.monotonic() > end:
            return done
        time.sleep(0.1)


def fork_server_pid(env: Env) -> int:
    try:
        pid = int(Path(env.fork_socket + ".pid").read_text())
        return pid if Path(f"/proc/{pid}").exists() else 0
    except (OSError, ValueError):
        return 0


def measure(pairs: list[tuple[int, int]]) -> dict:
    children = children_map()
    per_container = []
    processes = 0
    for supervisor, pid in pairs:
        pids = tree(supervisor, children, exclude=pid)
        processes += len(pids)
        total = dict.fromkeys(FIELDS, 0)
        for p in pids:
            for key, value in rollup(p).items():
                total[key] += value
        per_container.append(total)
    return {"kib_per_container": {key: statistics.mean(c[key] for c in per_container) for key in FIELDS},
            "pss_kib_min": min(c["Pss"] for c in per_container), "pss_kib_max": max(c["Pss"] for c in per_container),
            "processes_per_container": processes / len(pairs),
            "largest_mappings_kib": largest_mappings(pairs[0][0]), "example": command_of(pairs[0][0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10, help="idle containers per engine (default 10)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before measuring")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("containers need namespaces, mounts and cgroups")
    parent = own_cgroup_parent()
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-mem-"))
    notes: list[str] = []
    envs, podmans = [], []
    results: dict[str, dict] = {}
    try:
        tar = busybox_rootfs_tar(work)
        env = Env(work / "pyengine", BENCH_CONFIG)
        envs.append(env)
        env.import_busybox(tar)
        started: dict[str, tuple[Engine, Env | None, list[str]]] = {}
        if not env.wait_for_fork_server():
            notes.append("pyengine: the fork server did not start")
        started["pyengine"] = (env.engine(), env, start_idle(env.engine(), args.count))
        podman_found = shutil.which("podman")
        if podman_found and parent:
            podman = Podman(work)
            podmans.append(podman)
            podman.import_busybox(tar)
            engine = podman.engine(parent)
            started["podman"] = (engine, None, start_idle(engine, args.count))
        else:
            notes.append("podman: not installed" if not podman_found else "podman: no safe cgroup parent here")
        time.sleep(args.settle)  # both sets idle at once: each engine's figure is taken beside the other's
        shims = wait_for_shims(env, started["pyengine"][2])
        if shims < args.count:
            notes.append(f"pyengine: only {shims} of {args.count} monitors had become pyengine-shim")
        for name, (engine, env_, ids) in started.items():
            results[name] = measure(supervisors(engine, env_, ids, notes))
        # pyengine's fork server is one of its own processes too (one per user, not per
        # container): its PSS is shared out over the containers in the figure compared.
        server = fork_server_pid(env)
        server_pss = rollup(server)["Pss"] if server else 0
        if not server:
            notes.append("pyengine: no fork server was running (the monitors came from in-process commands)")
        mine = results["pyengine"]
        mine["fork_server_pss_kib"] = server_pss
        mine["pss_kib_with_fork_server"] = mine["kib_per_container"]["Pss"] + server_pss / args.count
    finally:
        cleanup(work, envs, podmans)

    report: dict = {"count": args.count, "results": results, "goals_kib": GOALS_KIB, "notes": notes}
    if "podman" in results:
        conmon = results["podman"]["kib_per_container"]["Pss"]
        report["pyengine_over_conmon"] = results["pyengine"]["kib_per_container"]["Pss"] / conmon
        report["pyengine_with_fork_server_over_conmon"] = results["pyengine"]["pss_kib_with_fork_server"] / conmon
    if args.json:
        print(json.dumps(report, indent=2))
        return
    labels = {"pyengine": "pyengine monitor", "podman": "podman conmon"}
    print(f"{args.count} idle containers per engine (busybox sleep 300), the engine's processes per container, KiB:")
    print(f"  {'':<17} {'PSS':>8} {'(min':>7} {'max)':>7} {'anon':>8} {'file':>7} {'RSS':>8} {'procs':>6}")
    for name, r in results.items():
        k = r["kib_per_container"]
        print(f"  {labels[name]:<17} {k['Pss']:8.0f} {r['pss_kib_min']:7d} {r['pss_kib_max']:7d} "
              f"{k['Pss_Anon']:8.0f} {k['Pss_File']:7.0f} {k['Rss']:8.0f} {r['processes_per_container']:6.1f}")
    mine = results["pyengine"]
    print(f"  pyengine's fork server: {mine['fork_server_pss_kib']} KiB PSS in all, "
          f"{mine['fork_server_pss_kib'] / args.count:.0f} per container; monitor + that share: "
          f"{mine['pss_kib_with_fork_server']:.0f} KiB per container")
    if "pyengine_over_conmon" in report:
        print(f"  pyengine / conmon = {report['pyengine_over_conmon']:.2f}  (the monitors: what stays once the "
              f"fork server has idled out; goal: <= 1.0; conmon here was {GOALS_KIB['conmon']} KiB, docker's "
              f"containerd-shim {GOALS_KIB['containerd-shim']:,} KiB)")
        print(f"  pyengine with the fork server's share / conmon = "
              f"{report['pyengine_with_fork_server_over_conmon']:.2f}  (while the server lives: "
              f"{os.environ.get('PYENGINE_FORK_SERVER_IDLE', '300')} s after the last command)")
    for name, r in results.items():
        parts = ", ".join(f"{Path(m).name if m.startswith('/') else m} {kib}" for m, kib in r["largest_mappings_kib"])
        print(f"  largest PSS of one {labels[name]} ({r['example']}): {parts}")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
