"""Shared fixtures: an isolated engine per test, a CLI runner, and the leak checks.

Every test gets its own data root, run root and (empty) config file under a temp dir, so no
test ever reads /etc/pyengine or writes /var/lib/pyengine. With PYENGINE_NO_SKIP=1 (CI sets it)
a skipped test fails: in CI, nothing an issue names may skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(prefix)]


@dataclass
class EngineEnv:
    """One isolated engine: its roots, its config file, and a way to run the CLI on it."""

    root: Path
    data_root: Path
    run_root: Path
    config_path: Path
    env: dict[str, str]

    def run(self, *args: str, input: bytes | str | None = None, check: bool = False,
            env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``pyengine ARGS`` as a user would, in a fresh process; returns text output."""
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        result = subprocess.run([sys.executable, "-m", "pyengine", *args], env=full_env,
                                input=input, capture_output=True, text=not isinstance(input, bytes),
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"pyengine {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def write_config(self, text: str) -> Path:
        self.config_path.write_text(text)
        return self.config_path


@pytest.fixture
def engine_env(tmp_path: Path) -> EngineEnv:
    """An engine whose every root lives under this test's temp dir."""
    root = tmp_path / "engine"
    data_root, run_root = root / "data", root / "run"
    data_root.mkdir(parents=True)
    run_root.mkdir(parents=True)
    config_path = root / "config.toml"
    config_path.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYENGINE_")}
    # Containers default to no network here: a bridge would be made in the machine's own
    # namespace. Network tests run the engine inside a test host (tests/test_network_*.py).
    # The session's fork server (see no_fork_server_left) runs the CLI, as a user's does.
    env.update({"PYENGINE_DATA_ROOT": str(data_root), "PYENGINE_RUN_ROOT": str(run_root),
                "PYENGINE_CONFIG": str(config_path), "PYENGINE_NETWORK_DEFAULT": "none",
                "PYENGINE_FORK_SOCKET": os.environ["PYENGINE_FORK_SOCKET"]})
    yield EngineEnv(root, data_root, run_root, config_path, env)
    leftovers = _mounts_under(str(root))
    for point in reversed(leftovers):
        subprocess.run(["umount", "-l", point], capture_output=True)
    assert not leftovers, f"test left mounts behind: {leftovers}"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def need_tool(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install them; .ci/run does)")


def _fork_servers_under(prefix: str) -> dict[int, str]:
    """Fork servers whose socket is under ``prefix`` (their command line names it)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"pyengine.forkserver.server" in argv and any(a.startswith(prefix.encode()) for a in argv):
            found[int(entry)] = b" ".join(argv).decode(errors="replace")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_fork_server_left(tmp_path_factory: pytest.TempPathFactory):
    """One fork server for the whole run, started here from the test process's own context (a
    command in a test host's network namespace finds it answering for another context and
    runs in-process); every engine_env and every other CLI run of the tests uses it. At the
    end it is stopped, and no fork server of this run may remain."""
    from pyengine.forkserver import stop_server

    base = tmp_path_factory.getbasetemp()
    sock = base / "session-fork" / "fork.sock"
    old = os.environ.get("PYENGINE_FORK_SOCKET")
    os.environ["PYENGINE_FORK_SOCKET"] = str(sock)
    subprocess.run([sys.executable, "-m", "pyengine", "--version"], capture_output=True, check=True)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    yield
    stop_server(str(sock))
    if old is None:
        os.environ.pop("PYENGINE_FORK_SOCKET", None)
    else:
        os.environ["PYENGINE_FORK_SOCKET"] = old
    left = _fork_servers_under(str(base))
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"the test run left fork servers running: {left}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_mounted(tmp_path_factory: pytest.TempPathFactory):
    """At the end of the run, nothing is mounted under the run's temp dirs."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    leftovers = _mounts_under(base)
    assert not leftovers, f"the test run left mounts behind: {leftovers}"


def _pyengine_cgroups() -> list[Path]:
    """Every ``pyengine`` cgroup level under this process's own cgroup, in every hierarchy."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else ["unified"]:
                own[controller.replace("name=", "")] = path
    found = []
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # pure cgroup v2
        candidates = [root / own.get("unified", "/").lstrip("/") / "pyengine"]
    else:
        candidates = [h / own.get(h.name, "/").lstrip("/") / "pyengine" for h in root.iterdir() if h.is_dir()]
    for top in candidates:
        if top.is_dir():
            found.append(top)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_cgroups_left():
    """At the end of the run the engine's ``pyengine`` cgroup levels are empty: remove them
    (rmdir succeeds only on a cgroup with no process and no child) and fail on what remains."""
    yield
    if os.geteuid() != 0:
        return
    remaining = []
    for top in _pyengine_cgroups():
        for dirpath, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                remaining.append(dirpath)
    assert not remaining, f"the test run left cgroups with processes or children: {remaining[:10]}"


def pytest_runtest_makereport(item, call):  # noqa: ANN001, ANN201 - pytest hook
    """With PYENGINE_NO_SKIP=1 a skip is a failure: CI must run everything."""
    if os.environ.get("PYENGINE_NO_SKIP") != "1" or call.excinfo is None:
        return None
    if call.excinfo.errisinstance(pytest.skip.Exception):
        from _pytest.reports import TestReport

        report = TestReport.from_item_and_call(item, call)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may skip: {call.excinfo.value}"
        return report
    return None
