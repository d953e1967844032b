"""Conversions between the OCI runtime spec's resource values and cgroup file values, as runc
does them (so a spec means the same under pyengine as under runc). Pure functions."""

from __future__ import annotations

#: the CFS period Docker's ``--cpus`` uses
DEFAULT_CPU_PERIOD = 100_000


def shares_to_weight(shares: int) -> int:
    """cgroup v1 ``cpu.shares`` (2..262144) -> v2 ``cpu.weight`` (1..10000); 0 means unset."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """v1 ``blkio.weight`` (10..1000) -> v2 ``io.weight`` (1..10000); 0 means unset."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def cpus_to_quota(cpus: float, period: int = DEFAULT_CPU_PERIOD) -> tuple[int, int]:
    """Docker's ``--cpus 1.5`` -> (quota, period) in microseconds."""
    if cpus <= 0:
        raise ValueError(f"cpus must be positive, not {cpus}")
    return int(round(cpus * period)), period


def swap_to_v2(memory_swap: int | None, memory_limit: int | None) -> int | None:
    """OCI ``memory.swap`` is memory+swap (v1's memsw); v2's ``memory.swap.max`` is swap
    alone. Returns the swap.max value (-1 for unlimited) or None to leave it alone."""
    if memory_swap is None or memory_swap == 0:
        return None
    if memory_swap == -1:
        return -1
    if memory_limit is None or memory_limit == -1:
        raise ValueError("memory.swap needs a memory.limit on cgroup v2")
    if memory_swap < memory_limit:
        raise ValueError(f"memory.swap ({memory_swap}) must be at least memory.limit ({memory_limit})")
    return memory_swap - memory_limit


def limit_value(value: int, unlimited: str) -> str:
    """A limit as the kernel takes it: -1 (or below) -> ``unlimited`` spelling."""
    return unlimited if value < 0 else str(value)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.events, cpu.stat, memory.oom_control) -> dict of ints."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_limit(text: str) -> int | None:
    """A limit file's content -> int, None for ``max``."""
    text = text.strip()
    return None if text == "max" else int(text)
