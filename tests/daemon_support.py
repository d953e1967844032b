"""Test support for the daemon: start ``pyengine daemon`` on a temp Unix socket with the test
engine's roots, and drive it with the real clients (the docker CLI, docker-py, pyengine -H).

The daemon is stopped with SIGTERM at the end and must exit by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Daemon:
    """A running ``pyengine daemon`` and ways to reach it."""

    process: subprocess.Popen
    socket_path: Path
    env: dict[str, str]
    docker_config: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def docker(self, *args: str, input: str | bytes | None = None, check: bool = False,
               timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the real docker CLI against this daemon."""
        full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "PYENGINE_"))}
        full.update({"DOCKER_HOST": self.url, "DOCKER_CONFIG": str(self.docker_config),
                     "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"})
        full.update(env or {})
        result = subprocess.run(["docker", *args], env=full, input=input, capture_output=True,
                                text=not isinstance(input, bytes), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                                 f"{result.stderr}\n--- daemon log ---\n{self.log()[-4000:]}")
        return result

    def client(self):  # noqa: ANN201 - a docker.DockerClient
        import docker

        return docker.DockerClient(base_url=self.url, timeout=120)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and wait for the daemon to exit on its own; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                tail = self.log()[-4000:]
                raise AssertionError(f"the daemon did not exit {timeout}s after SIGTERM:\n{tail}") from None
        return self.process.returncode


def wait_for_socket(path: Path, process: subprocess.Popen, log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the daemon exited {process.returncode}:\n{log_path.read_text()}")
        if path.exists():
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(path))
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"the daemon did not listen on {path} in {timeout}s:\n{log_path.read_text()}")


def start_daemon(engine_env, *args: str, socket_path: Path | None = None,  # noqa: ANN001 - EngineEnv
                 env: dict[str, str] | None = None) -> Daemon:
    """``pyengine daemon -H unix://<tmp>/pyengine.sock ARGS`` on the engine's roots."""
    if shutil.which("docker") is None and os.environ.get("PYENGINE_NO_SKIP") != "1":
        pytest.skip("needs the docker CLI (.ci/setup installs docker.io's client)")
    socket_path = socket_path or engine_env.root / "pyengine.sock"
    docker_config = engine_env.root / "docker-config"
    docker_config.mkdir(exist_ok=True)
    log_path = engine_env.root / f"daemon-{len(list(engine_env.root.glob('daemon-*.log')))}.log"
    full = dict(engine_env.env)
    full.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "pyengine", "daemon", "-H", f"unix://{socket_path}", *args],
                                   env=full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for_socket(socket_path, process, log_path)
    return Daemon(process, socket_path, full, docker_config, log_path, list(args))


def busybox_daemon(engine_env, tmp_path_factory, *, assert_none_left: bool = True):  # noqa: ANN001, ANN201
    """The body of a ``daemon`` fixture: busybox:latest imported, a daemon started on the
    engine's roots; at the end every container force-removed and the daemon stopped (exit 0)."""
    from containers_support import busybox_rootfs_tar

    from conftest import need_root

    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    d = start_daemon(engine_env)
    yield d
    ids = d.docker("ps", "-aq").stdout.split()
    if ids:
        d.docker("rm", "-f", *ids)
    if assert_none_left:
        assert not d.docker("ps", "-aq").stdout.split(), "containers left"
    assert d.stop() == 0
