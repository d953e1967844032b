"""The daemon and the monitors it forks: each is reaped when it exits, so that a daemon does
not keep one zombie per container run for its whole life."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from daemon_support import busybox_daemon

from conftest import EngineEnv

pytestmark = [pytest.mark.root]


@pytest.fixture
def daemon(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory):
    yield from busybox_daemon(engine_env, tmp_path_factory, assert_none_left=False)


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

