"""The daemon and the monitors it forks: each is reaped when it exits, so that a daemon does
not keep one zombie per container run for its whole life."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar
from daemon_support import start_daemon

from conftest import EngineEnv, need_root

pytestmark = [pytest.mark.root]


@pytest.fixture
def daemon(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory):
    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    d = start_daemon(engine_env)
    yield d
    ids = d.docker("ps", "-aq").stdout.split()
    if ids:
        d.docker("rm", "-f", *ids)
    assert d.stop() == 0


def children_states(pid: int) -> dict[int, str]:
    """The daemon's child processes and their states (``Z``: a zombie)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                out[int(child)] = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
    return out


def test_the_daemon_reaps_the_monitors_it_forks(daemon) -> None:
    for code in (0, 3, 0):
        result = daemon.docker("run", "--rm", "--network", "none", "busybox", "sh", "-c", f"exit {code}")
        assert result.returncode == code, result.stderr
    daemon.docker("run", "-d", "--name", "done", "--network", "none", "busybox", "true", check=True)
    assert daemon.docker("wait", "done", check=True).stdout.strip() == "0"
    deadline = time.monotonic() + 10
    while (zombies := [p for p, s in children_states(daemon.process.pid).items() if s == "Z"]) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert not zombies, f"monitors left as zombies of the daemon: {zombies}"

