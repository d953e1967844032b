"""vfs runs the storage conformance suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyengine.drivers import DriverContext
from pyengine.testing.storage_conformance import StorageConformance
from pyengine_plugins.vfs.driver import VfsDriver


class TestVfs(StorageConformance):
    @pytest.fixture
    def driver(self, tmp_path):
        ctx = DriverContext(name="vfs", options=None, configured=False, data_root=tmp_path / "data",
                            run_root=tmp_path / "run", state_dir=tmp_path / "data" / "storage" / "vfs")
        drv = VfsDriver(ctx)
        yield drv
        drv.cleanup()


CHILD = """
import sys
from pathlib import Path
from pyengine.drivers import DriverContext
from pyengine_plugins.vfs.driver import VfsDriver

root = Path(sys.argv[1])
drv = VfsDriver(DriverContext(name="vfs", options=None, configured=False, data_root=root / "data",
                              run_root=root / "run", state_dir=root / "data" / "storage" / "vfs"))
drv.create("base", None)
base = drv.get("base")
for i in range(20000):
    (base / f"f{i}").write_bytes(b"x")
drv.put("base")
print("ready", flush=True)
drv.create("child", "base")
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def test_a_layer_copy_dies_with_the_engine_that_started_it(tmp_path) -> None:
    """A killed engine leaves no cp writing into the store after its lock is gone (a repair racing
    that cp once found the temp entry back after removing it)."""
    engine = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    cp = None
    try:
        assert engine.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 60
        while cp is None and time.monotonic() < deadline and engine.poll() is None:
            cp = next((pid for pid in _children(engine.pid) if _comm(pid) == "cp"), None)
        assert cp is not None, "the copy of the parent layer was never seen running"
        os.kill(cp, signal.SIGSTOP)  # a cp that would outlive the engine stays, stopped, to be seen
        engine.kill()
        engine.wait()
        deadline = time.monotonic() + 10
        while _comm(cp) == "cp" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _comm(cp) != "cp", "cp outlived the engine that started it"
    finally:
        if cp is not None and _comm(cp) == "cp":
            os.kill(cp, signal.SIGKILL)
        engine.kill()
        engine.wait()
