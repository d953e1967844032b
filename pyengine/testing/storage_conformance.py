"""The storage driver conformance suite, modelled on moby's graphtest.

A driver's own test module hands the suite its factory and nothing more::

    class TestVfs(StorageConformance):
        @pytest.fixture
        def driver(self, tmp_path):
            drv = make_driver(tmp_path)
            yield drv
            drv.cleanup()

Every test observes the driver through its protocol and the trees it shows: file types,
content hashes, modes, ownership and link targets (:func:`tree_manifest`).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from pyengine.errors import Conflict


def tree_manifest(root: Path | str) -> dict[str, tuple[Any, ...]]:
    """path -> (type, sha256 of content, mode, uid, gid, link target) for every entry below
    ``root``; overlay whiteouts (char 0:0) do not appear in a merged view, so none are here."""
    root = str(root)
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            digest = link = None
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                digest = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            out[rel] = (kind, digest, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, link)
    return out


def layer_tar(entries: list[tuple[str, str, Any]]) -> io.BytesIO:
    """An uncompressed layer tar: (kind, name, data) with kind file, dir, symlink, whiteout,
    opaque; data is bytes for files, the target for symlinks."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in entries:
            if kind == "whiteout":
                directory, base = os.path.split(name)
                info = tarfile.TarInfo(os.path.join(directory, ".wh." + base))
                tar.addfile(info)
            elif kind == "opaque":
                tar.addfile(tarfile.TarInfo(os.path.join(name, ".wh..wh..opq")))
            elif kind == "dir":
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.uid, info.gid = len(data), 0o644, 1000, 1000
                tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


BASE = [("dir", "etc", None), ("file", "etc/os-release", b"base\n"), ("dir", "data", None),
        ("file", "data/a", b"a" * 100), ("file", "data/b", b"b" * 200), ("dir", "keep", None),
        ("file", "keep/x", b"x"), ("symlink", "link", "/etc/os-release")]


class StorageConformance:
    """Every storage driver passes these; subclasses provide the ``driver`` fixture."""

    def _layer(self, driver: Any, layer_id: str, parent: str | None, entries: list) -> None:
        driver.create(layer_id, parent)
        driver.apply_diff(layer_id, parent, layer_tar(entries))

    def _tree(self, driver: Any, layer_id: str) -> dict[str, tuple[Any, ...]]:
        path = driver.get(layer_id)
        try:
            return tree_manifest(path)
        finally:
            driver.put(layer_id)

    def test_create_empty_layer_is_an_empty_tree(self, driver: Any) -> None:
        driver.create("empty", None)
        assert driver.exists("empty")
        assert self._tree(driver, "empty") == {}
        driver.remove("empty")
        assert not driver.exists("empty")

    def test_layered_create_shows_parent_tree(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        driver.create("child", "base")
        assert self._tree(driver, "child") == self._tree(driver, "base")
        assert self._tree(driver, "child")["etc/os-release"][1] == hashlib.sha256(b"base\n").hexdigest()

    def test_file_changes_visible_through_get(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        driver.create_read_write("rw", "base")
        root = Path(driver.get("rw"))
        (root / "new").write_text("hello")
        (root / "data" / "a").write_text("changed")
        driver.put("rw")
        tree = self._tree(driver, "rw")
        assert tree["new"][1] == hashlib.sha256(b"hello").hexdigest()
        assert tree["data/a"][1] == hashlib.sha256(b"changed").hexdigest()
        assert self._tree(driver, "base")["data/a"][1] == hashlib.sha256(b"a" * 100).hexdigest()

    def test_whiteout_hides_lower_file(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        self._layer(driver, "child", "base", [("whiteout", "data/a", None), ("whiteout", "keep", None)])
        child = self._tree(driver, "child")
        assert "data/a" not in child and "keep" not in child and "keep/x" not in child
        assert "data/b" in child
        assert "data/a" in self._tree(driver, "base")

    def test_opaque_directory_hides_lower_entries(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        self._layer(driver, "child", "base", [("dir", "data", None), ("file", "data/c", b"c"),
                                                ("opaque", "data", None)])
        child = self._tree(driver, "child")
        assert sorted(k for k in child if k.startswith("data/")) == ["data/c"]

    def test_diff_round_trip_gives_the_same_tree(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        self._layer(driver, "child", "base", [("file", "data/a", b"new a"), ("whiteout", "data/b", None),
                                                ("dir", "opt", None), ("file", "opt/tool", b"#!/bin/sh\n"),
                                                ("symlink", "opt/l", "tool")])
        stream = driver.diff("child", "base")
        driver.create("copy", "base")
        driver.apply_diff("copy", "base", stream)
        assert self._tree(driver, "copy") == self._tree(driver, "child")

    def test_changes_lists_added_changed_deleted(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        self._layer(driver, "child", "base", [("file", "data/a", b"new a"), ("whiteout", "data/b", None),
                                                ("file", "added", b"+")])
        found = dict((path, kind) for kind, path in driver.changes("child", "base"))
        assert found["/added"] == "A"
        assert found["/data/a"] == "C"
        assert found["/data/b"] == "D"

    def test_diff_size_counts_added_bytes(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        self._layer(driver, "child", "base", [("file", "one", b"1" * 1000), ("file", "two", b"2" * 24)])
        assert driver.diff_size("child", "base") == 1024

    def test_remove_of_layer_in_use_is_refused(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        driver.create_read_write("rw", "base")
        driver.get("rw")
        with pytest.raises(Conflict):
            driver.remove("rw")
        driver.put("rw")
        with pytest.raises(Conflict):
            driver.remove("base")  # rw is its child
        driver.remove("rw")
        driver.remove("base")
        assert not driver.exists("base")

    def test_many_layers_stack(self, driver: Any) -> None:
        parent = None
        for n in range(64):
            layer = f"layer{n}"
            self._layer(driver, layer, parent, [("file", f"f{n:02d}", str(n).encode())])
            parent = layer
        tree = self._tree(driver, "layer63")
        assert sorted(tree) == [f"f{n:02d}" for n in range(64)]
        assert tree["f00"][1] == hashlib.sha256(b"0").hexdigest()

    def test_concurrent_create_and_remove(self, driver: Any) -> None:
        self._layer(driver, "base", None, BASE)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for round_ in range(3):
                    layer = f"c{n}-{round_}"
                    driver.create_read_write(layer, "base")
                    path = Path(driver.get(layer))
                    (path / "mine").write_text(layer)
                    assert (path / "mine").read_text() == layer
                    driver.put(layer)
                    driver.remove(layer)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert not any(driver.exists(f"c{n}-{r}") for n in range(8) for r in range(3))

    def test_status_is_key_value_pairs(self, driver: Any) -> None:
        pairs = driver.status()
        assert pairs and all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)
