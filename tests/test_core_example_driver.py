"""The example third-party storage driver (docs/examples/pyengine-example-driver) does real work:
layers are real directory copies, diffs are real tar streams with whiteouts, and a malicious
layer cannot write outside its tree."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from pyengine.drivers import DriverContext
from pyengine.drivers.storage import StorageDriver
from pyengine.errors import Conflict, InvalidArchive, NotFound

try:
    from pyengine_example_driver import ExampleOptions
    from pyengine_example_driver.driver import ExampleDriver
except ImportError as exc:  # fail, never skip: CI installs the example
    raise AssertionError("pip install --no-deps -e docs/examples/pyengine-example-driver") from exc


@pytest.fixture
def driver(engine_env) -> ExampleDriver:
    ctx = DriverContext(name="example", options=ExampleOptions(fsync=False), configured=True,
                        data_root=engine_env.data_root, run_root=engine_env.run_root,
                        state_dir=engine_env.data_root / "storage" / "example")
    return ExampleDriver(ctx)


def layer_tar(entries: list[tuple[str, bytes | None, str | None]]) -> io.BytesIO:
    """A layer tar: (name, file content or None for a directory, symlink target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    buf.seek(0)
    return buf


def test_example_driver_implements_the_storage_protocol(driver):
    assert isinstance(driver, StorageDriver)


def test_example_layers_are_independent_copies(driver):
    driver.create("base", None)
    base = driver.get("base")
    (base / "etc").mkdir()
    (base / "etc" / "hostname").write_text("base\n")
    os.symlink("/etc/hostname", base / "link")
    driver.put("base")

    driver.create_read_write("ctr", "base")
    ctr = driver.get("ctr")
    assert (ctr / "etc" / "hostname").read_text() == "base\n"
    assert os.readlink(ctr / "link") == "/etc/hostname"  # a link stays a link
    (ctr / "etc" / "hostname").write_text("changed\n")
    assert (base / "etc" / "hostname").read_text() == "base\n"
    assert driver.exists("ctr") and not driver.exists("nope")
    assert ("Layers", "2") in driver.status()
    driver.put("ctr")


def test_example_remove_refuses_held_layers_and_parents(driver):
    driver.create("base", None)
    driver.create("child", "base")
    with pytest.raises(Conflict, match="child layers: child"):
        driver.remove("base")
    driver.get("child")
    with pytest.raises(Conflict, match="in use"):
        driver.remove("child")
    driver.put("child")
    driver.remove("child")
    driver.remove("base")
    assert not driver.exists("base")
    assert list((driver.root / "layers").iterdir()) == []
    with pytest.raises(NotFound):
        driver.create("orphan", "base")


def test_example_diff_round_trip_with_whiteouts(driver):
    driver.create("base", None)
    applied = driver.apply_diff("base", None, layer_tar([
        ("etc", None, None), ("etc/motd", b"hello\n", None), ("etc/gone", b"x", None),
        ("var", None, None), ("var/cache", None, None), ("var/cache/big", b"y" * 100, None),
        ("etc/localtime", None, "/usr/share/zoneinfo/UTC"),
    ]))
    assert applied > 0
    driver.create("top", "base")
    top = driver.get("top")
    (top / "etc" / "gone").unlink()
    (top / "etc" / "motd").write_text("changed!\n")
    (top / "etc" / "new").write_text("new\n")
    shutil.rmtree(top / "var" / "cache")
    driver.put("top")

    changes = driver.changes("top", "base")
    assert ("D", "/etc/gone") in changes and ("D", "/var/cache") in changes
    assert ("D", "/var/cache/big") not in changes  # one record for a removed subtree
    assert ("C", "/etc/motd") in changes and ("A", "/etc/new") in changes
    assert driver.diff_size("top", "base") == len("changed!\n") + len("new\n")

    # Apply the diff onto a fresh copy of base: it must become equal to top.
    driver.create("replay", "base")
    driver.apply_diff("replay", "base", driver.diff("top", "base"))
    replay = Path(driver.get("replay"))
    assert sorted(p.relative_to(replay).as_posix() for p in replay.rglob("*")) == \
        sorted(p.relative_to(top).as_posix() for p in top.rglob("*"))
    assert (replay / "etc" / "motd").read_text() == "changed!\n"
    assert not (replay / "var" / "cache").exists()
    assert os.readlink(replay / "etc" / "localtime") == "/usr/share/zoneinfo/UTC"
    driver.put("replay")


def test_example_apply_diff_cannot_escape_the_layer(driver, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    driver.create("evil", None)
    with pytest.raises(InvalidArchive, match="leaves the layer"):
        driver.apply_diff("evil", None, layer_tar([("../../escape", b"x", None)]))
    with pytest.raises(InvalidArchive, match="symlink"):
        driver.apply_diff("evil", None, layer_tar([("out", None, str(outside)), ("out/pwned", b"x", None)]))
    assert list(outside.iterdir()) == []
