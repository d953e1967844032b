"""overlay runs the storage conformance suite, and its own layout checks."""

from __future__ import annotations

import pytest

from conftest import need_root
from pyengine.drivers import DriverContext
from pyengine.testing.storage_conformance import StorageConformance, layer_tar


def _driver(tmp_path):
    need_root()
    from pyengine_plugins.overlay.driver import OverlayDriver

    ctx = DriverContext(name="overlay", options=None, configured=False, data_root=tmp_path / "data",
                        run_root=tmp_path / "run", state_dir=tmp_path / "data" / "storage" / "overlay")
    return OverlayDriver(ctx)


class TestOverlay(StorageConformance):
    @pytest.fixture
    def driver(self, tmp_path):
        drv = _driver(tmp_path)
        yield drv
        drv.cleanup()


def test_overlay_deep_image_mounts_despite_option_length(tmp_path):
    # 128 layers: the lower chain is longer than one page with absolute paths, so the driver
    # must fall back to relative short links from inside its state dir.
    drv = _driver(tmp_path)
    parent = None
    for n in range(128):
        layer = f"deep-layer-with-a-long-name-{n:03d}"
        drv.create(layer, parent)
        drv.apply_diff(layer, parent, layer_tar([("file", f"f{n:03d}", b"x")]))
        parent = layer
    drv.create_read_write("top", parent)
    root = drv.get("top")
    try:
        assert len(list(root.iterdir())) == 128
    finally:
        drv.put("top")


def test_overlay_whiteout_is_a_char_device_in_the_upper_dir(tmp_path):
    import os
    import stat

    drv = _driver(tmp_path)
    drv.create("base", None)
    drv.apply_diff("base", None, layer_tar([("file", "gone", b"x")]))
    drv.create("child", "base")
    drv.apply_diff("child", "base", layer_tar([("whiteout", "gone", None)]))
    upper = drv.root / "child" / "diff" / "gone"
    st = os.lstat(upper)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
