"""A running container's processes and resource usage: ``top`` (the host's ``ps`` limited to
the container's processes) and Docker's stats document (cpu, memory, pids, network) built
from what the isolators' ``stats()`` read from the cgroups.

Reads /proc and the isolators; changes nothing. Used by the CLI's ``top``/``stats`` and the
daemon's ``/top`` and ``/stats`` routes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from typing import TYPE_CHECKING, Any

from pyengine.errors import Conflict, PyEngineError, UsageError

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers
    from pyengine.containers.store import ContainerRecord


def container_pids(containers: Containers, record: ContainerRecord) -> list[int]:
    """Host pids of every process of the container: its cgroup's, else PID 1's descendants."""
    for isolator in containers.isolators():
        pids = getattr(isolator, "pids", None)
        if pids is None:
            continue
        try:
            found = pids(record.id)
        except Exception:  # noqa: BLE001 - a cgroup that just went away: try the next way
            continue
        if found:
            return sorted(found)
    from pyengine.procfs import children_map

    children = children_map()
    out, queue = [], [record.state.pid]
    while queue:
        pid = queue.pop(0)
        out.append(pid)
        queue.extend(sorted(children.get(pid, [])))
    return out


def top(containers: Containers, ref: str, ps_args: str = "-ef") -> dict[str, Any]:
    """Docker's ``top``: ``{"Titles": [...], "Processes": [[...], ...]}`` from ``ps PS_ARGS``
    run on the host, keeping the rows of the container's processes."""
    record = containers.get(ref)
    if not record.state.running or not record.state.pid:
        raise Conflict(f"Container {record.id} is not running")
    try:
        args = shlex.split(ps_args or "-ef")
    except ValueError as exc:
        raise UsageError(f"invalid ps arguments {ps_args!r}: {exc}") from None
    pids = set(container_pids(containers, record))
    try:
        result = subprocess.run(["ps", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise PyEngineError("Error running ps: ps is not installed on this host") from None
    if result.returncode != 0:
        raise PyEngineError(f"Error running ps: exit status {result.returncode}: {result.stderr.strip()}")
    lines = result.stdout.splitlines()
    if not lines:
        raise PyEngineError("Error running ps: no output")
    titles = lines[0].split()
    if "PID" not in titles:
        raise UsageError(f"Couldn't find PID field in ps output (ps args {ps_args!r})")
    pid_column = titles.index("PID")
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) <= pid_column or not fields[pid_column].isdigit():
            continue
        if int(fields[pid_column]) in pids:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}


def raw_sample(containers: Containers, record: ContainerRecord) -> dict[str, Any]:
    """The isolators' numbers for the container, plus the host's cpu time and the network
    counters of its namespace, at one moment."""
    sample: dict[str, Any] = {"read": time.time(), "system_ns": _system_cpu_ns(), "online_cpus": _online_cpus()}
    for isolator in containers.isolators():
        stats = getattr(isolator, "stats", None)
        if stats is None:
            continue
        try:
            sample.update(stats(record.id))
        except Exception:  # noqa: BLE001 - a container that just ended has no cgroup any more
            continue
    sample["networks"] = _networks(record.state.pid) if record.state.running and record.state.pid else {}
    return sample


def _system_cpu_ns() -> int:
    """The host's cpu time in nanoseconds, as dockerd's system_cpu_usage (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            first = f.readline().split()
    except OSError:
        return 0
    ticks = os.sysconf("SC_CLK_TCK") or 100
    return sum(int(v) for v in first[1:8]) * 1_000_000_000 // ticks


def _online_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _networks(pid: int) -> dict[str, dict[str, int]]:
    """Each interface but lo in the namespace of ``pid``: Docker's rx_/tx_ counters."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        values = [int(v) for v in rest.split()]
        if name == "lo" or len(values) < 16:
            continue
        out[name] = {"rx_bytes": values[0], "rx_packets": values[1], "rx_errors": values[2],
                     "rx_dropped": values[3], "tx_bytes": values[8], "tx_packets": values[9],
                     "tx_errors": values[10], "tx_dropped": values[11]}
    return out


def _rfc3339(seconds: float) -> str:
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e9):09d}Z"


def _cpu_stats(sample: dict[str, Any] | None) -> dict[str, Any]:
    if not sample:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    cpu = sample.get("cpu") or {}
    total = int(cpu.get("usage_ns") or 0)
    usage: dict[str, Any] = {"total_usage": total, "usage_in_kernelmode": int(cpu.get("system_ns") or 0),
             "usage_in_usermode": int(cpu.get("user_ns") or 0)}
    if cpu.get("percpu_ns"):
        usage["percpu_usage"] = list(cpu["percpu_ns"])
    return {"cpu_usage": usage, "system_cpu_usage": int(sample.get("system_ns") or 0),
            "online_cpus": int(sample.get("online_cpus") or 1),
            "throttling_data": {"periods": int(cpu.get("periods") or 0),
                                "throttled_periods": int(cpu.get("throttled_periods") or 0),
                                "throttled_time": int(cpu.get("throttled_ns") or 0)}}


def docker_stats(record: ContainerRecord, sample: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Docker's stats document (``GET /containers/{id}/stats``) from two raw samples."""
    memory = sample.get("memory") or {}
    pids = sample.get("pids") or {}
    limit = memory.get("limit")
    host = _host_memory()
    if not limit or (host and limit > host):
        limit = host  # unlimited: dockerd reports the host's memory
    memory_stats: dict[str, Any] = {}
    if memory.get("usage") is not None:
        memory_stats = {"usage": int(memory["usage"]), "stats": dict(memory.get("stats") or {}),
                        "limit": int(limit or 0)}
        if memory.get("max_usage") is not None:
            memory_stats["max_usage"] = int(memory["max_usage"])
        if memory.get("failcnt") is not None:
            memory_stats["failcnt"] = int(memory["failcnt"])
    doc = {
        "read": _rfc3339(sample["read"]),
        "preread": _rfc3339(previous["read"]) if previous else "0001-01-01T00:00:00Z",
        "pids_stats": {k: int(v) for k, v in (("current", pids.get("current")), ("limit", pids.get("limit")))
                       if v is not None},
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None,
                        "io_queue_recursive": None, "io_service_time_recursive": None,
                        "io_wait_time_recursive": None, "io_merged_recursive": None, "io_time_recursive": None,
                        "sectors_recursive": None},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": _cpu_stats(sample), "precpu_stats": _cpu_stats(previous),
        "memory_stats": memory_stats, "name": "/" + record.name, "id": record.id,
    }
    if sample.get("networks"):
        doc["networks"] = sample["networks"]
    return doc
