#!/usr/bin/env python3
"""Start-to-exit time of ``pyengine run --rm --network none busybox true`` beside podman and
runc running the same rootfs, measured in the same run, interleaved; prints medians and ratios.

The image is Debian's busybox-static made into a rootfs (as the tests make it), imported into
pyengine and into podman; runc runs a bundle of the same rootfs. podman is run the way this
host needs (TESTING.md): runc, cgroupfs, file events, its own roots under a temp dir, explicit
ulimits, --pull never. Every engine's cgroups go under a ``pyengine/bench`` child of this
process's own cgroup, as the safety rules ask.

pyengine is timed twice: as a user runs it, with its fork server warm (the first command of
the warm-up starts it; see pyengine/forkserver), and with ``PYENGINE_FORK_SERVER=0``, every
command a fresh interpreter ("pyengine-cold").

``--breakdown`` also says where the time of pyengine's ``run --rm`` goes, three ways, without
instrumenting the engine:

1. the pieces a user can run alone, timed in the same interleaved rounds: the interpreter plus
   the client module, ``pyengine --version`` (the floor every served command pays), ``create``,
   ``start -a`` and ``rm`` of one container, and the launcher alone in this process (what
   bench/run_runtime.py calls "the launcher alone": namespaces, pivot_root, seccomp, exec, wait;
   no cgroups, no layer); what their sum leaves of ``run --rm`` is printed as unexplained;
2. the same ``run --rm`` runs split at the container events the engine journals anyway
   (``<run-root>/events``, nanosecond timestamps): create, start, die, destroy;
3. after the rounds, ``create`` and ``start -a`` again with ``--log-level debug --log-format
   json``, split at every log event of the command and of the container's monitor (its
   ``monitor.log``) plus the journal's; their total beside the plain one shows what the log
   costs (and how far the machine drifted since the rounds). The create's log also times the
   engine's construction, which each piece pays and ``run --rm`` pays once.

    sudo python bench/run.py [--runs 20] [--storage-driver overlay|vfs] [--breakdown] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_CONFIG,
    Env,
    Podman,
    busybox_rootfs_tar,
    cleanup,
    own_cgroup_parent,
    require_root,
    runc_bundle,
    timed,
)

#: The journal's container events of one ``run --rm``, in the order the engine records them,
#: and what happens between each and the next ("client" is the benchmark starting the command,
#: "exit" the command's end).
RUN_SPLIT = (
    ("client", "create", "client start, fork-server round trip, CLI + engine, create: layer + record"),
    ("create", "start", "start: monitor fork, layer mount, spec, cgroups, clone/namespaces, seccomp, exec"),
    ("start", "die", "`true` runs, is reaped; exit recorded, cgroups released, layer unmounted"),
    ("die", "destroy", "--rm in the monitor: container layer and record removed"),
    ("destroy", "exit", "exit code to the client; the fork and the client exit"),
)
DEBUG_FLAGS = ("--log-level", "debug", "--log-format", "json")


def timed_output(argv: list[str], env: dict[str, str] | None) -> tuple[float, int, int, str, str]:
    """Like ``common.timed``: seconds, wall-clock start and end (ns, the journal's clock),
    stdout and stderr."""
    begin_ns, started = time.time_ns(), time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env, text=True)
    elapsed, end_ns = time.perf_counter() - started, time.time_ns()
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return elapsed, begin_ns, end_ns, result.stdout, result.stderr


def launcher(rootfs: Path) -> Callable[[], int]:
    """bench/run_runtime.py's in-process launch (its call is inline in its main, so not
    importable): the default spec with every confinement, no isolators, then reap."""
    from pyengine.runtime.launch import launch
    from pyengine.runtime.spec import default_spec

    spec = default_spec(["true"], str(rootfs), hostname="bench")
    return lambda: launch("bench", spec, []).wait()


def log_events(text: str, source: str) -> list[tuple[int, str, float | None]]:
    """(ns since the epoch, ``source event``, its ``ms`` field) of each JSON log line of
    pyengine's structlog output."""
    out = []
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            when = datetime.datetime.fromisoformat(entry["timestamp"])
        except (ValueError, KeyError, TypeError):
            continue
        ms = entry.get("ms")
        out.append(((when - epoch) // datetime.timedelta(microseconds=1) * 1000, f"{source} {entry.get('event')}",
                     ms if isinstance(ms, (int, float)) else None))
    return out


def journal_events(run_root: Path, begin_ns: int, end_ns: int) -> list[tuple[int, str, float | None]]:
    """(ns, action, None) of the container events journaled between the two times."""
    from pyengine.events import EventJournal

    return [(e["timeNano"], e["Action"], None) for e in EventJournal(run_root).read(begin_ns, end_ns)
            if e.get("Type") == "container"]


def run_split(run_root: Path, windows: list[tuple[int, int]]) -> dict[str, list[float]]:
    """Per RUN_SPLIT segment, its seconds in each ``run --rm`` whose journal has every mark."""
    segments: dict[str, list[float]] = {f"{a} -> {b}": [] for a, b, _ in RUN_SPLIT}
    for begin_ns, end_ns in windows:
        marks = {"client": begin_ns, "exit": end_ns}
        for when, action, _ in journal_events(run_root, begin_ns, end_ns):
            marks.setdefault(action, when)
        if all(a in marks and b in marks for a, b, _ in RUN_SPLIT):
            for a, b, _ in RUN_SPLIT:
                segments[f"{a} -> {b}"].append((marks[b] - marks[a]) / 1e9)
    return segments


def timeline(samples: list[list[tuple[int, str, float | None]]]) -> dict[str, Any]:
    """Consecutive events of several runs of one command: each pair ``A -> B`` with its median
    seconds and the runs that had it, in the order of their median offset from the start; and
    the median ``ms`` an event reports of itself."""
    gaps: dict[str, list[float]] = {}
    offsets: dict[str, list[float]] = {}
    reported: dict[str, list[float]] = {}
    for events in samples:
        events = sorted(events, key=lambda event: event[0])
        for _, name, ms in events:
            if ms is not None:
                reported.setdefault(name, []).append(ms)
        for (t_a, a, _), (t_b, b, _) in zip(events, events[1:], strict=False):
            key = f"{a} -> {b}"
            gaps.setdefault(key, []).append((t_b - t_a) / 1e9)
            offsets.setdefault(key, []).append((t_a - events[0][0]) / 1e9)
    order = sorted(gaps, key=lambda key: statistics.median(offsets[key]))
    return {"gaps": [(key, statistics.median(gaps[key]), len(gaps[key])) for key in order],
            "reported_ms": {name: statistics.median(values) for name, values in reported.items()}}


def debug_timelines(env: Env, runs: int) -> dict[str, Any]:
    """``create`` and ``start -a`` with the debug log: each one's timeline and median total."""
    create_argv = env.argv(*DEBUG_FLAGS, "create", "--network", "none", "busybox", "true")
    samples: dict[str, list[list[tuple[int, str, float | None]]]] = {"create": [], "start -a": []}
    totals: dict[str, list[float]] = {"create": [], "start -a": []}
    for _ in range(runs):
        elapsed, begin_ns, end_ns, out, err = timed_output(create_argv, env.env)
        container_id = out.strip()
        totals["create"].append(elapsed)
        samples["create"].append([(begin_ns, "client", None), *log_events(err, "cli"),
                                  *journal_events(env.run_root, begin_ns, end_ns), (end_ns, "exit", None)])
        elapsed, begin_ns, end_ns, _, err = timed_output(env.argv(*DEBUG_FLAGS, "start", "-a", container_id),
                                                         env.env)
        totals["start -a"].append(elapsed)
        monitor_log = env.run_root / "containers" / container_id / "monitor.log"
        monitor = monitor_log.read_text() if monitor_log.exists() else ""
        samples["start -a"].append([(begin_ns, "client", None), *log_events(err, "cli"),
                                    *log_events(monitor, "monitor"), *journal_events(env.run_root, begin_ns, end_ns),
                                    (end_ns, "exit", None)])
        env.cli("rm", container_id)
    return {name: {"median_s": statistics.median(totals[name]), **timeline(samples[name])} for name in samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--storage-driver", default="overlay")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the pieces of pyengine's run --rm and split it at its events")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require_root("containers need namespaces, mounts and cgroups")
    parent = own_cgroup_parent()
    work = Path(tempfile.mkdtemp(prefix="pyengine-bench-run-"))
    results: dict[str, list[float]] = {"pyengine": [], "pyengine-cold": [], "podman": [], "runc": []}
    windows: dict[str, list[tuple[int, int]]] = {"pyengine": [], "pyengine-cold": []}
    pieces: dict[str, list[float]] = {}
    debug: dict[str, Any] = {}
    splits: dict[str, dict[str, list[float]]] = {}
    notes = []
    envs, podmans = [], []
    try:
        tar = busybox_rootfs_tar(work)
        env = Env(work / "pyengine", BENCH_CONFIG, storage_driver=args.storage_driver)
        envs.append(env)
        env.import_busybox(tar)
        argv = env.argv("run", "--rm", "--network", "none", "busybox", "true")
        # pyengine as a user runs it (the fork server warm), and with the fork server off.
        commands: dict[str, tuple[list[str], dict[str, str] | None, str | None]] = {
            "pyengine": (argv, env.env, None), "pyengine-cold": (argv, env.without_fork_server(), None)}

        podman_found = shutil.which("podman")
        if podman_found and parent:
            podman = Podman(work, storage_driver=args.storage_driver)
            podmans.append(podman)
            podman.import_busybox(tar)
            commands["podman"] = ([*podman.base, "run", "--rm", *podman.run_flags(parent), "--network", "none",
                                   "localhost/busybox", "true"], podman.env, None)
        else:
            notes.append("podman: not installed" if not podman_found else "podman: no safe cgroup parent here")

        runc = shutil.which("runc")
        if runc and parent:
            bundle = runc_bundle(work / "bundle", ["true"], parent + "/runc")
            (bundle / "rootfs").mkdir()
            subprocess.run(["tar", "-C", str(bundle / "rootfs"), "-xf", str(tar)], check=True)
            commands["runc"] = ([runc, "--root", str(work / "runc-state"), "run", "-b", str(bundle), "bench"],
                                None, None)
        else:
            notes.append("runc: not installed" if not runc else "runc: no safe cgroup parent here")

        launch_once: Callable[[], int] | None = None
        if args.breakdown:
            rootfs = work / "launcher-rootfs"  # the same busybox rootfs, a copy of its own
            rootfs.mkdir()
            subprocess.run(["tar", "-C", str(rootfs), "-xf", str(tar)], check=True)
            launch_once = launcher(rootfs)
            pieces = {"client": [], "version": [], "create": [], "start": [], "rm": [], "launcher": []}
        client_argv = [sys.executable, "-c", "import pyengine.forkserver.client"]

        def breakdown_round() -> None:
            """One of each piece: the separately runnable commands, then the launcher."""
            pieces["client"].append(timed(client_argv, env.env))
            pieces["version"].append(timed(env.argv("--version"), env.env))
            elapsed, _, _, out, _ = timed_output(env.argv("create", "--network", "none", "busybox", "true"),
                                                 env.env)
            pieces["create"].append(elapsed)
            pieces["start"].append(timed(env.argv("start", "-a", out.strip()), env.env))
            pieces["rm"].append(timed(env.argv("rm", out.strip()), env.env))
            assert launch_once is not None
            started = time.perf_counter()
            launch_once()
            pieces["launcher"].append(time.perf_counter() - started)

        for argv, env_, cwd in commands.values():  # warm-up
            timed(argv, env_, cwd)
        if not env.wait_for_fork_server():
            notes.append("pyengine: the fork server did not start; both rows ran in-process")
        if args.breakdown:
            breakdown_round()
            pieces = {name: [] for name in pieces}
        for _ in range(args.runs):
            for name, (argv, env_, cwd) in commands.items():
                if name in windows:
                    elapsed, begin_ns, end_ns, _, _ = timed_output(argv, env_)
                    windows[name].append((begin_ns, end_ns))
                    results[name].append(elapsed)
                else:
                    results[name].append(timed(argv, env_, cwd))
            if args.breakdown:
                breakdown_round()
        if args.breakdown:
            debug = debug_timelines(env, args.runs)
            splits = {name: run_split(env.run_root, spans) for name, spans in windows.items()}
    finally:
        cleanup(work, envs, podmans)

    medians = {name: statistics.median(v) for name, v in results.items() if v}
    report: dict[str, Any] = {"runs": args.runs, "storage_driver": args.storage_driver, "median_s": medians,
                              "notes": notes}
    if "podman" in medians:
        report["pyengine_over_podman"] = medians["pyengine"] / medians["podman"]
        report["pyengine_cold_over_podman"] = medians["pyengine-cold"] / medians["podman"]
    if "runc" in medians:
        report["pyengine_over_runc"] = medians["pyengine"] / medians["runc"]
    if args.breakdown:
        report["breakdown"] = breakdown_report(medians, pieces, splits, debug)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"run --rm --network none busybox true, {args.runs} runs each, {args.storage_driver}, medians:")
    for name, value in medians.items():
        print(f"  {name:<13} {value * 1000:7.1f} ms")
    if "podman" in medians:
        print(f"  pyengine / podman = {report['pyengine_over_podman']:.2f}  (goal: <= 0.50; issue 15: <= 0.30)")
        print(f"  pyengine-cold / podman = {report['pyengine_cold_over_podman']:.2f}  (fork server off; "
              "issue 15: <= 0.60)")
    if "runc" in medians:
        print(f"  pyengine / runc   = {report['pyengine_over_runc']:.2f}  (issue 15: <= 1.5)")
    for note in notes:
        print(f"  note: {note}")
    if args.breakdown:
        print_breakdown(report["breakdown"], medians)


def breakdown_report(medians: dict[str, float], pieces: dict[str, list[float]],
                     splits: dict[str, dict[str, list[float]]], debug: dict[str, Any]) -> dict[str, Any]:
    """The breakdown's figures, in seconds: the pieces (each served command's share above the
    ``--version`` floor), what they leave unexplained, the journal splits, the debug timelines."""
    m = {name: statistics.median(values) for name, values in pieces.items()}
    floor = m["version"]
    rows = [
        ("client start: python + import pyengine.forkserver.client", m["client"], True),
        ("fork-server round trip + CLI (--version minus client start)", floor - m["client"], True),
        ("create, above the --version floor: engine, layer + record", m["create"] - floor, True),
        ("start -a, above the floor", m["start"] - floor, True),
        ("  of it: the launcher alone, in-process (namespaces, pivot_root, seccomp, exec, wait)",
         m["launcher"], False),
        ("  of it: the rest (monitor fork, layer mount, spec, cgroups, state, relay)",
         m["start"] - floor - m["launcher"], False),
        ("rm, above the floor: layer + record removed", m["rm"] - floor, True),
    ]
    explained = sum(value for _, value, counted in rows if counted)
    # Each of create, start -a and rm builds an engine (plugins, storage choice); run --rm
    # builds one: what the pieces pay twice more, as the create's debug log times it.
    create_log = debug.get("create", {})
    gaps = {key: seconds for key, seconds, _ in create_log.get("gaps", [])}
    plugins_ms = create_log.get("reported_ms", {}).get("cli plugins.loaded")
    storage_gap = gaps.get("cli plugins.loaded -> cli storage.selected")
    engine = (plugins_ms / 1000 + storage_gap) if plugins_ms is not None and storage_gap is not None else None
    if engine is not None:
        rows.append(("  of create, start -a, rm each: engine build (plugins.loaded ms + gap to storage.selected)",
                     engine, False))
    return {
        "pieces_median_s": m,
        "rows": [{"piece": label, "s": value, "summed": counted} for label, value, counted in rows],
        "explained_s": explained,
        "unexplained_s": medians["pyengine"] - explained,
        "engine_build_s": engine,
        "unexplained_engine_once_s": None if engine is None else medians["pyengine"] - (explained - 2 * engine),
        "journal_split_median_s": {name: {key: statistics.median(v) if v else None for key, v in split.items()}
                                   for name, split in splits.items()},
        "journal_split_runs": {name: min((len(v) for v in split.values()), default=0)
                               for name, split in splits.items()},
        "debug": debug,
    }


def print_breakdown(breakdown: dict[str, Any], medians: dict[str, float]) -> None:
    def row(label: str, seconds: float | None, whole: float) -> None:
        if seconds is None:
            print(f"  {label:<96} {'-':>7}")
        else:
            print(f"  {label:<96} {seconds * 1000:7.1f} {seconds / whole * 100:6.0f}%")

    whole = medians["pyengine"]
    print(f"\nwhere pyengine's run --rm goes ({whole * 1000:.1f} ms), from the pieces run alone "
          "(medians, interleaved with the runs above):")
    print(f"  {'piece':<96} {'ms':>7} {'share':>7}")
    for entry in breakdown["rows"]:
        row(entry["piece"], entry["s"], whole)
    row("sum of the unindented pieces", breakdown["explained_s"], whole)
    row("unexplained: run --rm minus that sum (negative: the pieces repeat what run --rm does once)",
        breakdown["unexplained_s"], whole)
    if breakdown["unexplained_engine_once_s"] is not None:
        row("unexplained, counting the engine run --rm builds once (the pieces build three)",
            breakdown["unexplained_engine_once_s"], whole)
    m = breakdown["pieces_median_s"]
    print("  whole commands: " + ", ".join(f"{name} {m[key] * 1000:.1f} ms" for name, key in (
        ("python+client", "client"), ("--version", "version"), ("create", "create"), ("start -a", "start"),
        ("rm", "rm"), ("launcher in-process", "launcher"))))
    for name, split in breakdown["journal_split_median_s"].items():
        whole = medians[name]
        print(f"\n{name} run --rm ({whole * 1000:.1f} ms) split at its journal events "
              f"({breakdown['journal_split_runs'][name]} runs; medians of each gap):")
        for (a, b, what), seconds in zip(RUN_SPLIT, split.values(), strict=True):
            row(f"{a} -> {b}: {what}", seconds, whole)
        row("sum of those medians", sum(v for v in split.values() if v is not None), whole)
    for name, entry in breakdown["debug"].items():
        plain = m["create" if name == "create" else "start"]
        print(f"\n{name} with {' '.join(DEBUG_FLAGS)}: {entry['median_s'] * 1000:.1f} ms (plain: "
              f"{plain * 1000:.1f} ms, interleaved; these runs come after the rounds: the difference is the log's "
              "cost and the machine's drift); gaps between consecutive events, medians:")
        for key, seconds, count in entry["gaps"]:
            print(f"    {key:<92} {seconds * 1000:7.1f} ms  ({count} runs)")
        for event, ms in entry["reported_ms"].items():
            print(f"    {event} reports ms={ms:.1f} of itself (median)")


if __name__ == "__main__":
    main()
