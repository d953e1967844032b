"""Restart after a reboot: a simulated reboot (every monitor and container killed, then a new
boot id through the PYENGINE_BOOT_ID_FILE seam, or the run root removed as a tmpfs /run is)
followed by ``pyengine system restore`` (daemonless) or a daemon's start brings back exactly
the containers their restart policies say: always yes; unless-stopped unless the user
stopped it; on-failure and no not; a container never started stays created."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_mode import serve

from conftest import EngineEnv, need_root
from pyengine.containers.store import pid_alive


@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = "overlay"
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest", check=True)
    yield engine_env
    engine_env.env.pop("PYENGINE_HOST", None)
    remove_all_containers(engine_env.run)


def _state(engine: EngineEnv, ref: str) -> dict:
    return json.loads(engine.run("inspect", ref, check=True).stdout)[0]["State"]


def _record(engine: EngineEnv, cid: str) -> dict:
    return json.loads((engine.data_root / "containers" / cid / "state.json").read_text())


def _containers(engine: EngineEnv) -> dict[str, str]:
    """One container per case: name -> ID."""
    ids = {}
    for name, policy in (("always", "always"), ("always-stopped", "always"), ("unless", "unless-stopped"),
                         ("unless-stopped", "unless-stopped"), ("failure", "on-failure"), ("never", "no")):
        ids[name] = engine.run("run", "-d", "--name", name, "--restart", policy, "busybox", "sleep", "300",
                               check=True).stdout.strip()
    ids["created"] = engine.run("create", "--name", "created", "--restart", "always", "busybox", "sleep", "300",
                                check=True).stdout.strip()
    engine.run("stop", "-t", "1", "always-stopped", "unless-stopped", check=True)
    return ids


def _power_off(engine: EngineEnv, ids: dict[str, str]) -> None:
    """What a reboot does to the running containers: every monitor and container process dies
    (SIGKILL), with no chance to record anything."""
    pids = []
    for cid in ids.values():
        state = _record(engine, cid)
        pids += [pid for pid in (state["monitor_pid"], state["pid"]) if pid]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 20
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(pid_alive(pid) for pid in pids)


EXPECTED_BACK = {"always", "always-stopped", "unless"}


def _check_restored(engine: EngineEnv, ids: dict[str, str], old_pids: dict[str, int]) -> None:
    for name, cid in ids.items():
        state = _state(engine, cid)
        if name in EXPECTED_BACK:
            assert state["Running"], (name, state)
            assert state["Pid"] != old_pids[name]
        elif name == "created":
            assert state["Status"] == "created", state
        else:
            assert not state["Running"], (name, state)
    for name in ("failure", "never"):
        state = _state(engine, ids[name])
        assert state["ExitCode"] == 255 and "restarted" in state["Error"], state


def test_system_restore_after_a_new_boot_id(engine: EngineEnv, tmp_path: Path) -> None:
    ids = _containers(engine)
    old_pids = {name: _state(engine, cid)["Pid"] for name, cid in ids.items()}
    marker = engine.run_root / "boot_id"
    assert json.loads(marker.read_text()) == Path("/proc/sys/kernel/random/boot_id").read_text().strip()

    # Same boot: restore starts what is down by policy, and leaves running containers be.
    same = engine.run("system", "restore", check=True)
    assert set(same.stdout.split()) == {ids["always-stopped"]}, same.stdout
    engine.run("stop", "-t", "1", "always-stopped", check=True)

    _power_off(engine, ids)
    boot = tmp_path / "boot_id"
    boot.write_text(str(uuid.uuid4()) + "\n")
    engine.env["PYENGINE_BOOT_ID_FILE"] = str(boot)
    mounts_before = Path("/proc/self/mountinfo").read_text()
    assert ids["failure"] in mounts_before, "the rootfs of a killed container stays mounted until restore"

    result = engine.run("system", "restore", check=True)
    assert set(result.stdout.split()) == {ids[name] for name in EXPECTED_BACK}, result.stdout
    _check_restored(engine, ids, old_pids)
    assert json.loads(marker.read_text()) == boot.read_text().strip()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert ids["failure"] not in mounts and ids["never"] not in mounts, "a stale container's rootfs stays mounted"
    assert not list((engine.run_root / "containers").glob(f"{ids['failure']}/attach.sock"))
    # the restored ones work: their logs and exec
    assert engine.run("exec", "always", "echo", "back", check=True).stdout == "back\n"

    again = engine.run("system", "restore", check=True)
    assert again.stdout == "", "a second restore must start nothing"


def _unmount_under(root: Path) -> None:
    """A reboot takes the mounts with it."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(str(root))]
    for point in reversed(points):
        subprocess.run(["umount", point], check=True)


def test_the_daemon_restores_at_its_start_after_the_run_root_is_gone(engine: EngineEnv) -> None:
    ids = _containers(engine)
    old_pids = {name: _state(engine, cid)["Pid"] for name, cid in ids.items()}
    _power_off(engine, ids)
    _unmount_under(engine.data_root)
    shutil.rmtree(engine.run_root)  # a tmpfs /run starts empty
    engine.run_root.mkdir()

    served = serve(engine, "daemon")
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if all(_state(engine, ids[name])["Running"] for name in EXPECTED_BACK):
                break
            time.sleep(0.2)
        _check_restored(engine, ids, old_pids)
    finally:
        remove_all_containers(engine.run)
        served.stop()
