"""What /proc/<pid>/stat says of a process: its state, its parent, and every process's
children. The command name may hold spaces and parentheses, so fields are read after the
last ')'."""

from __future__ import annotations

import os


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command: [state, ppid, pgrp, ...]; OSError
    when the process is gone."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks after boot (field 22): with the pid, it names one
    process; the kernel gives a freed pid to a later process, never the same start time.
    OSError when the process is gone."""
    return int(stat_fields(pid)[19])


def parent_of(pid: int) -> int:
    return int(stat_fields(pid)[1])


def children_map() -> dict[int, list[int]]:
    """Every live process's children, by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = parent_of(int(entry))
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children
