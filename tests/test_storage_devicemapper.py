"""The devicemapper storage driver: the host without device-mapper reports why it cannot run;
in the VM (``.ci/vm-run``) the driver builds a loop-backed thin pool and passes the storage
conformance suite plus its own checks (snapshots, sizes, pool usage, teardown).

Every VM test tears down its pool, loop devices and thin devices, and asserts none is left.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import need_root, need_tool

dm_mark = pytest.mark.vm


# -- on a kernel without device-mapper -----------------------------------------------------

def _kernel_has_device_mapper() -> bool:
    with open("/proc/misc") as f:
        return any(line.split()[1:] == ["device-mapper"] for line in f if line.strip())


# Where the kernel has device-mapper, the CLI runs in a private mount namespace whose
# /proc/misc lacks the device-mapper line and whose /dev/mapper is empty: what the driver
# reads of a kernel built without it. modprobe finds dm_mod already loaded and changes nothing.
_HIDE_DM = (
    'set -e; grep -v " device-mapper$" /proc/misc > "$MISC"; mount --bind "$MISC" /proc/misc; '
    'if [ -d /dev/mapper ]; then mount -t tmpfs none /dev/mapper; fi; exec "$@"'
)


def _run_without_dm(engine_env, *args: str) -> subprocess.CompletedProcess:
    if not _kernel_has_device_mapper():
        return engine_env.run(*args)
    need_root()
    need_tool("unshare")
    env = dict(engine_env.env, MISC=str(engine_env.root / "misc"))
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDE_DM,
                           "sh", sys.executable, "-m", "pyengine", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_devicemapper_flag_exits_2_with_one_line_on_a_kernel_without_dm(engine_env) -> None:
    result = _run_without_dm(engine_env, "--storage-driver", "devicemapper", "info")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "devicemapper" in lines[0] and "device-mapper" in lines[0]


def test_devicemapper_info_json_shows_skip_with_reason(engine_env) -> None:
    result = _run_without_dm(engine_env, "info", "--format", "json")
    assert result.returncode == 0, result.stderr
    drivers = {(d["kind"], d["name"]): d for d in json.loads(result.stdout)["drivers"]}
    dmrow = drivers[("storage", "devicemapper")]
    assert dmrow["state"] == "skip"
    assert "device-mapper" in dmrow["reason"]
    text = _run_without_dm(engine_env, "info").stdout
    assert any(line.split()[:4] == ["storage", "devicemapper", "devicemapper", "skip"] for line in text.splitlines())


def test_devicemapper_options_are_validated(engine_env) -> None:
    engine_env.write_config('[storage.devicemapper]\nfs = "btrfs"\n')
    result = engine_env.run("info")
    assert result.returncode == 2
    assert "fs must be one of ext4, xfs" in result.stderr


# -- in the VM -----------------------------------------------------------------------------

def need_device_mapper() -> None:
    """Skip (a failure in CI) with the driver's own reason when the kernel lacks dm-thin."""
    need_root()
    from pyengine.errors import DriverNotSupported
    from pyengine_plugins.devicemapper import DevicemapperOptions
    from pyengine_plugins.devicemapper.dm import probe

    try:
        probe(DevicemapperOptions())
    except DriverNotSupported as exc:
        pytest.skip(f"needs device-mapper thin pools (run through .ci/vm-run): {exc}")


def _dm_names() -> list[str]:
    out = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and not line.startswith("No devices")]


def _loops_on(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-j", str(path)], capture_output=True, text=True).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def force_teardown(state_dir: Path, prefix: str) -> None:
    """Unmount, deactivate and detach whatever a test left of its driver, worst case first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in reversed(points):
        if point.startswith(str(state_dir)):
            subprocess.run(["umount", "-l", point], capture_output=True)
    pool = f"{prefix}-pool"
    for name in _dm_names():
        if name.startswith(prefix + "-") and name != pool:
            subprocess.run(["dmsetup", "remove", "--force", name], capture_output=True)
    if pool in _dm_names():
        subprocess.run(["dmsetup", "remove", "--force", pool], capture_output=True)
    for path in (state_dir / "devicemapper" / "data", state_dir / "devicemapper" / "metadata"):
        for loop in _loops_on(path):
            subprocess.run(["losetup", "-d", loop], capture_output=True)


def make_prefix(state_dir: Path) -> str:
    """The device-name prefix the driver derives from its state dir."""
    import hashlib

    return "pyengine-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]


def make_driver(root: Path, **options):  # noqa: ANN201 - DevicemapperDriver, imported lazily
    from pyengine.drivers import DriverContext
    from pyengine_plugins.devicemapper import DevicemapperOptions
    from pyengine_plugins.devicemapper.driver import DevicemapperDriver

    # Small sizes: the pool files live in the VM's RAM (tmpfs); sparse, so only used blocks count.
    defaults = {"data_size": "4G", "metadata_size": "64M", "base_size": "256M"}
    opts = DevicemapperOptions(**{**defaults, **options})
    ctx = DriverContext(name="devicemapper", options=opts, configured=True, data_root=root / "data",
                        run_root=root / "run", state_dir=root / "data" / "storage" / "devicemapper")
    return DevicemapperDriver(ctx, opts)


def _driver_with_teardown(tmp_path: Path):  # noqa: ANN202 - a fixture body
    need_device_mapper()
    driver = make_driver(tmp_path)
    yield driver
    try:
        driver.cleanup()
    finally:
        leftovers_dm = [n for n in _dm_names() if n.startswith(driver.prefix + "-")]
        leftovers_loop = _loops_on(driver.loop_dir / "data") + _loops_on(driver.loop_dir / "metadata")
        force_teardown(driver.root, driver.prefix)
    assert not leftovers_dm, f"devices left active: {leftovers_dm}"
    assert not leftovers_loop, f"loop devices left attached: {leftovers_loop}"


@pytest.fixture
def dm_driver(tmp_path: Path):  # noqa: ANN201
    yield from _driver_with_teardown(tmp_path)


try:
    from pyengine.testing.storage_conformance import StorageConformance
except ImportError:
    StorageConformance = None

if StorageConformance is not None:
    @dm_mark
    class TestDevicemapperConformance(StorageConformance):
        """The storage conformance suite on a loop-backed development pool."""

        @pytest.fixture
        def driver(self, tmp_path: Path):  # noqa: ANN201
            yield from _driver_with_teardown(tmp_path)
else:
    @dm_mark
    def test_devicemapper_conformance_suite_is_present() -> None:
        pytest.skip("pyengine.testing.storage_conformance is missing: the conformance suite did not run")


def _thin_device_count(driver) -> int:  # noqa: ANN001
    status = subprocess.run(["dmsetup", "status", driver.pool], capture_output=True, text=True, check=True)
    return int(status.stdout.split()[3])  # the transaction id: one per pool change


@dm_mark
def test_devicemapper_layers_are_thin_snapshots_sharing_the_parent(dm_driver) -> None:
    dm_driver.create("base", None)
    root = dm_driver.get("base")
    assert sorted(os.listdir(root)) == [], "a new layer is empty (no lost+found)"
    (root / "big").write_bytes(os.urandom(1024 * 1024) * 8)  # 8 MiB of data
    (root / "gone").write_text("x")
    dm_driver.put("base")
    from pyengine_plugins.devicemapper.dm import pool_usage

    used_before = pool_usage(dm_driver.pool).data_used
    dm_driver.create("child", "base")
    child = dm_driver.get("child")
    assert (child / "big").stat().st_size == 8 * 1024 * 1024
    (child / "gone").unlink()
    (child / "new").write_text("child only")
    dm_driver.put("child")
    # the parent is untouched by the child's writes
    parent = dm_driver.get("base")
    assert (parent / "gone").read_text() == "x" and not (parent / "new").exists()
    dm_driver.put("base")
    # a snapshot shares its parent's blocks: the 8 MiB was not copied
    used_after = pool_usage(dm_driver.pool).data_used
    assert used_after - used_before < 4 * 1024 * 1024, (used_before, used_after)


@dm_mark
def test_devicemapper_devices_are_active_only_while_mounted(dm_driver) -> None:
    dm_driver.create("l1", None)
    name = dm_driver._device_name(dm_driver._meta()["layers"]["l1"]["device_id"])
    assert name not in _dm_names()
    path = dm_driver.get("l1")
    path2 = dm_driver.get("l1")  # reference counted: one mount
    assert path == path2 and name in _dm_names() and os.path.ismount(path.parent)
    dm_driver.put("l1")
    assert os.path.ismount(path.parent)
    dm_driver.put("l1")
    assert not os.path.ismount(path.parent) and name not in _dm_names()


@dm_mark
def test_devicemapper_remove_refuses_mounted_or_parent_and_deletes_the_device(dm_driver) -> None:
    from pyengine.errors import Conflict

    dm_driver.create("p", None)
    dm_driver.create("c", "p")
    with pytest.raises(Conflict):
        dm_driver.remove("p")
    dm_driver.get("c")
    with pytest.raises(Conflict):
        dm_driver.remove("c")
    dm_driver.put("c")
    tid = _thin_device_count(dm_driver)
    dm_driver.remove("c")
    dm_driver.remove("p")
    assert not dm_driver.exists("c") and not dm_driver.exists("p")
    assert _thin_device_count(dm_driver) == tid + 2  # two delete messages reached the pool


@dm_mark
def test_devicemapper_size_grows_the_filesystem(dm_driver) -> None:
    from pyengine.errors import UsageError

    dm_driver.create("img", None)
    dm_driver.create_read_write("ctr", "img", size=1 << 30)
    path = dm_driver.get("ctr")
    stat = os.statvfs(path)
    assert stat.f_blocks * stat.f_frsize > 900 * (1 << 20)  # 1 GiB device, minus ext4 overhead
    dm_driver.put("ctr")
    path = dm_driver.get("img")
    stat = os.statvfs(path)
    assert stat.f_blocks * stat.f_frsize < 300 * (1 << 20)  # the 256M base size
    dm_driver.put("img")
    with pytest.raises(UsageError):
        dm_driver.create_read_write("small", "img", size=16 << 20)


@dm_mark
def test_devicemapper_xfs_base_and_growth(tmp_path: Path) -> None:
    need_device_mapper()
    driver = make_driver(tmp_path, fs="xfs", base_size="320M")
    try:
        driver.create("a", None)
        driver.create_read_write("b", "a", size=1 << 30)
        pa, pb = driver.get("a"), driver.get("b")  # same UUID on both: needs nouuid
        (pb / "f").write_text("xfs")
        assert subprocess.run(["stat", "-f", "-c", "%T", str(pb)], capture_output=True,
                              text=True).stdout.strip() == "xfs"
        assert os.statvfs(pb).f_blocks * os.statvfs(pb).f_frsize > 900 * (1 << 20)
        assert not (pa / "f").exists()
        driver.put("a")
        driver.put("b")
    finally:
        driver.cleanup()
        force_teardown(driver.root, driver.prefix)


@dm_mark
def test_devicemapper_status_reports_pool_usage(dm_driver) -> None:
    rows = dict(dm_driver.status())
    assert rows["Pool Name"] == dm_driver.pool
    assert rows["Data Space Total"] == "4.00 GiB"
    assert rows["Metadata Space Total"] == "64.00 MiB"
    assert rows["Backing Filesystem"] == "ext4"
    assert rows["Base Device Size"] == "256.00 MiB"


@dm_mark
def test_devicemapper_state_survives_a_new_process_and_pool_teardown(tmp_path: Path) -> None:
    need_device_mapper()
    driver = make_driver(tmp_path)
    try:
        driver.create("keep", None)
        (driver.get("keep") / "file").write_text("persisted")
        driver.put("keep")
        driver.cleanup()  # nothing mounted: the dev pool goes down and its loops are freed
        assert driver.pool not in _dm_names()
        assert not _loops_on(driver.loop_dir / "data")
        again = make_driver(tmp_path)  # re-attaches the loop files and re-activates the pool
        assert again.exists("keep")
        assert (again.get("keep") / "file").read_text() == "persisted"
        again.put("keep")
        again.cleanup()
    finally:
        force_teardown(driver.root, driver.prefix)


@dm_mark
def test_devicemapper_cli_info_is_ok_in_the_vm(engine_env) -> None:
    need_device_mapper()
    engine_env.write_config('[storage.devicemapper]\ndata-size = "2G"\nmetadata-size = "32M"\n'
                            'base-size = "128M"\n')
    prefix_before = set(_dm_names())
    try:
        result = engine_env.run("--storage-driver", "devicemapper", "info", "--format", "json", check=True)
        data = json.loads(result.stdout)
        drivers = {(d["kind"], d["name"]): d for d in data["drivers"]}
        assert drivers[("storage", "devicemapper")]["state"] == "ok"
        assert data["storage"]["driver"] == "devicemapper"
        status = dict(data["storage"]["status"])
        assert status["Data Space Total"] == "2.00 GiB"
        # the CLI process released the dev pool on exit
        assert set(_dm_names()) == prefix_before
    finally:
        state = engine_env.data_root / "storage" / "devicemapper"
        for name in set(_dm_names()) - prefix_before:
            subprocess.run(["dmsetup", "remove", "--force", name], capture_output=True)
        for path in (state / "devicemapper" / "data", state / "devicemapper" / "metadata"):
            for loop in _loops_on(path):
                subprocess.run(["losetup", "-d", loop], capture_output=True)


def _tar(entries: dict[str, bytes | str | None]) -> io.BytesIO:
    """A layer tar: bytes -> file, str -> symlink target, None -> directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in entries.items():
            info = tarfile.TarInfo(name)
            if value is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size, info.mode = len(value), 0o644
                tar.addfile(info, io.BytesIO(value))
    buf.seek(0)
    return buf


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_text()
    return out


@dm_mark
def test_devicemapper_apply_diff_and_diff_round_trip(dm_driver) -> None:
    base_tar = _tar({"etc": None, "etc/a": b"one", "etc/gone": b"x", "bin": None, "bin/sh": "busybox",
                     "opq": None, "opq/old": b"old"})
    dm_driver.create("base", None)
    applied = dm_driver.apply_diff("base", None, base_tar)
    assert applied == len(base_tar.getvalue())
    top_tar = _tar({"etc/a": b"two!", "etc/.wh.gone": b"", "new": b"added", "opq/.wh..wh..opq": b"",
                    "opq/fresh": b"f"})
    dm_driver.create("top", "base")
    dm_driver.apply_diff("top", "base", top_tar)
    top_tree = _tree(dm_driver.get("top"))
    dm_driver.put("top")
    assert top_tree == {"bin": "dir", "bin/sh": "-> busybox", "etc": "dir", "etc/a": "two!", "new": "added",
                        "opq": "dir", "opq/fresh": "f"}
    # directories whose entries changed may count as changed too; files must be exact
    found = {p: k for k, p in dm_driver.changes("top", "base") if p not in ("/etc", "/opq")}
    assert found == {"/etc/a": "C", "/etc/gone": "D", "/new": "A", "/opq/fresh": "A", "/opq/old": "D"}
    assert dm_driver.diff_size("top", "base") == len("two!") + len("added") + len("f")
    # the diff of top against base, applied on a fresh child of base, gives the same tree
    exported = dm_driver.diff("top", "base")
    dm_driver.create("copy", "base")
    dm_driver.apply_diff("copy", "base", exported)
    assert _tree(dm_driver.get("copy")) == top_tree
    dm_driver.put("copy")


@dm_mark
def test_devicemapper_import_gives_a_rootfs_matching_the_tarball(engine_env, tmp_path: Path) -> None:
    """An image imported through the CLI onto devicemapper, seen from a container layer."""
    need_device_mapper()
    import hashlib

    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "busybox").write_bytes(Path("/usr/bin/busybox").read_bytes())
    os.chmod(rootfs / "bin" / "busybox", 0o755)
    (rootfs / "bin" / "sh").symlink_to("busybox")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tmp_path / "rootfs.tar"), "."], check=True)
    engine_env.write_config('[storage.devicemapper]\ndata-size = "2G"\nmetadata-size = "32M"\n'
                            'base-size = "128M"\n')
    driver = None
    try:
        engine_env.run("-s", "devicemapper", "import", str(tmp_path / "rootfs.tar"), "bb:1", check=True)
        image = json.loads(engine_env.run("-s", "devicemapper", "image", "inspect", "bb:1", check=True).stdout)[0]
        assert image["GraphDriver"]["Name"] == "devicemapper"
        top = image["GraphDriver"]["Data"]["TopLayer"]
        driver = make_driver(engine_env.root, data_size="2G", metadata_size="32M", base_size="128M")
        driver.create_read_write("ctr", top)
        root = driver.get("ctr")
        assert hashlib.sha256((root / "bin" / "busybox").read_bytes()).hexdigest() == \
            hashlib.sha256(Path("/usr/bin/busybox").read_bytes()).hexdigest()
        assert os.stat(root / "bin" / "busybox").st_mode & 0o777 == 0o755
        assert os.readlink(root / "bin" / "sh") == "busybox"
        assert sorted(os.listdir(root)) == ["bin"]
        driver.put("ctr")
        driver.remove("ctr")
        engine_env.run("-s", "devicemapper", "rmi", "bb:1", check=True)
        assert not driver.exists(top)
    finally:
        state = engine_env.data_root / "storage" / "devicemapper"
        if driver is not None:
            driver.cleanup()
        force_teardown(state, make_prefix(state))
