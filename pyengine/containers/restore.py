"""Restart after a reboot: recognise a run root left by an earlier boot, clear what that boot
left behind, and start the containers whose restart policy says they come back.

The run root holds the id of the boot that used it (``<run-root>/boot_id``, written when a
container starts). When that file is missing while containers are recorded as running, or
names another boot (``/proc/sys/kernel/random/boot_id``; ``PYENGINE_BOOT_ID_FILE`` points
elsewhere, a seam for tests), the recorded monitor and container pids are another boot's: they
are never signalled; each such container is recorded as exited (255, as dockerd records a
container its restart found dead), its networks, cgroups and rootfs mount count released, and
the run root's leftovers of that boot (attach sockets, exec records, kept exit codes) removed.

Then ``restore`` starts every container that has run before and whose policy is ``always``, or
``unless-stopped`` when the user did not stop it, and is not running — what ``pyengine system
restore`` does at boot (docs/examples/pyengine-restore.service, as podman-restart.service) and
the daemon at its start. Calls the container verbs and the store; used by the CLI and the daemon.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyengine.containers.store import DAMAGED, now_iso
from pyengine.errors import NotFound, PyEngineError
from pyengine.log import get_logger

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers

log = get_logger("pyengine.containers.restore")

#: where the kernel tells this boot's id; the variable is a seam for tests (a "new boot")
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
BOOT_ID_ENV = "PYENGINE_BOOT_ID_FILE"
#: the exit code recorded for a container that was running when the host went down
EXIT_AT_REBOOT = 255


def current_boot_id() -> str:
    """This boot's id ("" when it cannot be read: then no run root is ever taken for stale)."""
    try:
        return Path(os.environ.get(BOOT_ID_ENV) or BOOT_ID_FILE).read_text().strip()
    except OSError:
        return ""


def marker(run_root: Path) -> Path:
    return Path(run_root) / "boot_id"


def note_boot(run_root: Path) -> None:
    """Record this boot's id in the run root unless it is there already (a container starts)."""
    path = marker(run_root)
    if path.exists():
        return
    boot = current_boot_id()
    if not boot:
        return
    from pyengine.fsutil import write_json_atomic

    try:
        write_json_atomic(path, boot)
    except OSError as exc:  # a start must not fail for it; restore then relies on the pids
        log.warning("boot.not_recorded", run_root=str(run_root), reason=exc.strerror)


def _recorded_boot(run_root: Path) -> str | None:
    import json

    try:
        value = json.loads(marker(run_root).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def _was_running(status: str) -> bool:
    return status in ("running", "paused", "restarting")


def clear_stale_boot(containers: Containers) -> list[str]:
    """When the run root is an earlier boot's, record its running containers as exited and
    release what they held, and remove that boot's leftovers; the IDs of those containers."""
    run_root = containers.engine.config.run_root
    boot = current_boot_id()
    recorded = _recorded_boot(run_root)
    if not boot or recorded == boot:
        return []
    records = [r for r in containers.store.list() if r.state.status != DAMAGED]
    if recorded is None and not any(_was_running(r.state.status) for r in records):
        note_boot(run_root)  # a fresh run root: nothing of another boot to clear
        return []
    ended = []
    for record in records:
        if not _was_running(record.state.status):
            continue
        try:
            with containers.store.container_lock(record.id):
                current = containers.store.load(record.id)
                state = current.state
                if not _was_running(state.status):
                    continue
                # Another boot's pids: never signalled, whatever now runs with those numbers.
                state.status, state.exit_code = "exited", EXIT_AT_REBOOT
                state.pid = state.monitor_pid = state.pid_start_time = state.monitor_start_time = 0
                state.error, state.finished_at = "the host restarted while the container ran", now_iso()
                containers.store.save_state(record.id, state)
        except NotFound:
            continue
        containers.release_runtime(current)
        ended.append(record.id)
    for leftover in (containers.store.run_dir / ".exits", Path(run_root) / "exec"):
        shutil.rmtree(leftover, ignore_errors=True)
    for sock in containers.store.run_dir.glob("*/attach.sock") if containers.store.run_dir.is_dir() else []:
        sock.unlink(missing_ok=True)
    try:
        marker(run_root).unlink()
    except FileNotFoundError:
        pass
    note_boot(run_root)
    log.info("boot.stale_run_root_cleared", run_root=str(run_root), previous=recorded, boot=boot,
             containers=len(ended))
    return ended


def wants_restore(policy: dict | None, stop_requested: bool) -> bool:
    """Docker's rule at boot (and at a daemon's start): ``always`` comes back, ``unless-stopped``
    unless the user stopped it; ``on-failure`` and ``no`` do not."""
    name = (policy or {}).get("Name") or "no"
    return name == "always" or (name == "unless-stopped" and not stop_requested)


@dataclass
class RestoreResult:
    """What ``restore`` did: containers started, failures (ID, why), containers found stale."""

    started: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def restore(containers: Containers) -> RestoreResult:
    """Clear a stale boot, then start every container its restart policy brings back."""
    result = RestoreResult(stale=clear_stale_boot(containers))
    for record in sorted(containers.store.list(), key=lambda r: r.created):
        state = record.state
        if state.status == DAMAGED or not state.started_at:
            continue  # never started: nothing to come back to
        if not wants_restore(record.host_config.get("RestartPolicy"), state.stop_requested):
            continue
        try:
            if containers.get(record.id).state.running:  # reconciled: a live monitor stays
                continue
            containers.start(record.id)
        except NotFound:
            continue
        except PyEngineError as exc:
            log.warning("container.restore_failed", container=record.id, reason=str(exc))
            result.failed.append((record.id, str(exc)))
            continue
        result.started.append(record.id)
    return result
