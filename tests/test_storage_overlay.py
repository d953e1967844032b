"""overlay runs the storage conformance suite, and its own layout checks."""

from __future__ import annotations

import json

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


def test_probe_success_is_remembered_until_reboot_per_data_root(tmp_path):
    # The probe's test mount costs a few ms a command: a success is kept in the run root,
    # stamped with this boot and the data root's filesystem; a stamp that does not match
    # (another boot, a data root moved to another filesystem) means probing again.
    need_root()
    from pyengine_plugins.overlay import driver as overlay

    ctx = DriverContext(name="overlay", options=None, configured=False, data_root=tmp_path / "data",
                        run_root=tmp_path / "run", state_dir=tmp_path / "data" / "storage" / "overlay")
    marker = tmp_path / "run" / "overlay-probe-ok"
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    overlay._probed.clear()
    overlay.probe(ctx)
    first = marker.read_text()
    assert json.loads(first).split() == [boot, str(ctx.data_root), str(tmp_path.stat().st_dev)]
    marker.write_text(json.dumps(f"another-boot {ctx.data_root} {tmp_path.stat().st_dev}"))
    overlay._probed.clear()
    probes = []
    real = overlay._try_mount
    overlay._try_mount = lambda root: probes.append(root) or real(root)
    try:
        overlay.probe(ctx)
        assert probes == [ctx.data_root], "a stale stamp was trusted"
        assert marker.read_text() == first
        overlay._probed.clear()
        overlay.probe(ctx)
        assert probes == [ctx.data_root], "a valid stamp was not trusted"
    finally:
        overlay._try_mount = real
        overlay._probed.clear()
