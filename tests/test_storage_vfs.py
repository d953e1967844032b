"""vfs runs the storage conformance suite."""

from __future__ import annotations

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
