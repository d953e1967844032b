"""The layer extractor against real and malicious layers.

Each malicious layer is applied to a rootfs inside a sandbox directory that also holds a
sentinel file and a sentinel directory *outside* the rootfs; after the attempt, the sandbox
outside the rootfs must be byte for byte as before, and the attempt must either be refused
with InvalidArchive (one line naming the entry) or be contained inside the rootfs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pyengine.errors import InvalidArchive
from pyengine.layers.diff import changes, export_diff
from pyengine.layers.extract import apply_layer, open_layer


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    buffer.seek(0)
    return buffer


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


def _snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            if full == skip:
                continue
            st = os.lstat(full)
            content = full.read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[str(full)] = (st.st_mode, st.st_uid, content, os.readlink(full) if full.is_symlink() else None)
    return out


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "sentinel").write_text("outside, must not change\n")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "keep").write_text("keep\n")
    return tmp_path, rootfs


MALICIOUS = {
    "dotdot_traversal": lambda: _tar((_info("../sentinel"), b"pwned")),
    "dotdot_inside_path": lambda: _tar((_info("etc/../../sentinel"), b"pwned")),
    "absolute_name": lambda: _tar((_info("/sentinel"), b"contained")),
    "symlink_to_root_then_write": lambda: _tar(
        (_info("escape", tarfile.SYMTYPE, "/"), None), (_info("escape/sentinel"), b"pwned")),
    "symlink_to_dotdot_then_write": lambda: _tar(
        (_info("up", tarfile.SYMTYPE, "../.."), None), (_info("up/sentinel"), b"pwned")),
    "symlink_dir_outside_then_write": lambda: _tar(
        (_info("od", tarfile.SYMTYPE, "../outside-dir"), None), (_info("od/keep"), b"pwned")),
    "hardlink_to_file_outside": lambda: _tar((_info("hl", tarfile.LNKTYPE, "../sentinel"), None)),
    "hardlink_absolute_outside": lambda: _tar((_info("hl", tarfile.LNKTYPE, "/../sentinel"), None)),
    "whiteout_escaping": lambda: _tar((_info(".wh..."), None)),
    "whiteout_of_parent_path": lambda: _tar((_info("etc/../../.wh.sentinel"), None)),
    "whiteout_through_symlink": lambda: _tar(
        (_info("esc", tarfile.SYMTYPE, "/"), None), (_info("esc/.wh.sentinel"), None)),
    "symlink_loop": lambda: _tar((_info("a", tarfile.SYMTYPE, "b"), None), (_info("b", tarfile.SYMTYPE, "a"), None),
                                 (_info("a/file"), b"x")),
    "very_long_name": lambda: _tar((_info("d/" + "x" * 300), b"long")),
    "device_node_outside": lambda: _tar((_info("../null", tarfile.CHRTYPE), None)),
    "fifo_through_symlink": lambda: _tar((_info("esc", tarfile.SYMTYPE, "/"), None),
                                         (_info("esc/fifo", tarfile.FIFOTYPE), None)),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layer_is_refused_or_contained(case: str, sandbox: tuple[Path, Path]) -> None:
    if os.geteuid() != 0 and "device" in case:
        pytest.skip("mknod needs root")
    base, rootfs = sandbox
    before = _snapshot(base, rootfs)
    try:
        apply_layer(rootfs, MALICIOUS[case](), whiteouts="delete")
    except InvalidArchive as exc:
        assert "\n" not in str(exc)
    assert _snapshot(base, rootfs) == before, "something outside the rootfs changed"
    for dirpath, _, filenames in os.walk(rootfs):
        for name in filenames:
            full = Path(dirpath, name)
            assert full.is_symlink() or full.resolve().is_relative_to(rootfs.resolve())


def test_absolute_symlinks_are_kept_and_followed_inside_the_root(sandbox: tuple[Path, Path]) -> None:
    _, rootfs = sandbox
    layer = _tar((_info("usr", tarfile.DIRTYPE, mode=0o755), None),
                 (_info("usr/lib", tarfile.DIRTYPE, mode=0o755), None),
                 (_info("lib", tarfile.SYMTYPE, "/usr/lib"), None), (_info("lib/libc.so"), b"ELF"))
    apply_layer(rootfs, layer)
    assert os.readlink(rootfs / "lib") == "/usr/lib"
    assert (rootfs / "usr" / "lib" / "libc.so").read_bytes() == b"ELF"


def test_whiteouts_and_opaque_dirs_in_delete_mode(sandbox: tuple[Path, Path]) -> None:
    _, rootfs = sandbox
    (rootfs / "data").mkdir()
    (rootfs / "data" / "old1").write_text("1")
    (rootfs / "data" / "old2").write_text("2")
    layer = _tar((_info("etc/.wh.passwd"), None), (_info("data", tarfile.DIRTYPE, mode=0o755), None),
                 (_info("data/new"), b"n"), (_info("data/.wh..wh..opq"), None))
    apply_layer(rootfs, layer, whiteouts="delete")
    assert not (rootfs / "etc" / "passwd").exists()
    assert sorted(os.listdir(rootfs / "data")) == ["new"]


def test_overlay_mode_writes_char_device_whiteouts_and_opaque_xattr(sandbox: tuple[Path, Path]) -> None:
    if os.geteuid() != 0:
        pytest.skip("overlay whiteouts need root (mknod, trusted.* xattrs)")
    _, rootfs = sandbox
    layer = _tar((_info("etc/.wh.passwd"), None), (_info("data", tarfile.DIRTYPE, mode=0o755), None),
                 (_info("data/.wh..wh..opq"), None))
    apply_layer(rootfs, layer, whiteouts="overlay")
    st = os.lstat(rootfs / "etc" / "passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(rootfs / "data", "trusted.overlay.opaque") == b"y"


def test_metadata_setuid_ownership_mtime_hardlinks_and_xattrs(sandbox: tuple[Path, Path]) -> None:
    _, rootfs = sandbox
    suid = _info("bin/su", mode=0o4755)
    suid.uid, suid.gid, suid.mtime = 0, 0, 1_600_000_000
    owned = _info("home/app/file", mode=0o600)
    owned.uid, owned.gid = 1000, 1001
    xattr = _info("cap")
    xattr.pax_headers = {"SCHILY.xattr.user.note": "hello"}
    layer = _tar((_info("bin", tarfile.DIRTYPE, mode=0o755), None), (suid, b"su"),
                 (_info("home/app", tarfile.DIRTYPE, mode=0o750), None), (owned, b"mine"),
                 (_info("bin/su-link", tarfile.LNKTYPE, "bin/su"), None), (xattr, b"x"))
    apply_layer(rootfs, layer)
    st = os.stat(rootfs / "bin" / "su")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and int(st.st_mtime) == 1_600_000_000
    assert os.stat(rootfs / "bin" / "su-link").st_ino == st.st_ino
    if os.geteuid() == 0:
        fst = os.stat(rootfs / "home" / "app" / "file")
        assert (fst.st_uid, fst.st_gid) == (1000, 1001)
    assert os.getxattr(rootfs / "cap", "user.note") == b"hello"


def test_gzip_and_zstd_layers_are_detected(sandbox: tuple[Path, Path], tmp_path: Path) -> None:
    _, rootfs = sandbox
    raw = _tar((_info("gz"), b"gzip")).getvalue()
    apply_layer(rootfs, open_layer(io.BytesIO(gzip.compress(raw))))
    assert (rootfs / "gz").read_bytes() == b"gzip"
    raw = _tar((_info("zst"), b"zstd")).getvalue()
    zst = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    apply_layer(rootfs, open_layer(io.BytesIO(zst)))
    assert (rootfs / "zst").read_bytes() == b"zstd"


def test_corrupt_gzip_is_a_clear_error(sandbox: tuple[Path, Path]) -> None:
    _, rootfs = sandbox
    broken = gzip.compress(_tar((_info("f"), b"x" * 10000)).getvalue())
    broken = broken[:40] + bytes([broken[40] ^ 0xFF]) + broken[41:]
    with pytest.raises(InvalidArchive):
        apply_layer(rootfs, open_layer(io.BytesIO(broken)))


def test_naive_diff_round_trip(tmp_path: Path) -> None:
    lower, upper, copy = tmp_path / "lower", tmp_path / "upper", tmp_path / "copy"
    for d in (lower, copy):
        d.mkdir()
        (d / "keep").write_text("k")
        (d / "gone").write_text("g")
        (d / "dir").mkdir()
        (d / "dir" / "f").write_text("f")
    subprocess.run(["cp", "-a", f"{lower}/.", str(upper)], check=True)
    (upper / "gone").unlink()
    (upper / "new").write_text("n")
    (upper / "dir" / "f").write_text("changed!")
    found = dict((p, k) for k, p in changes(upper, lower))
    # /dir itself may show as changed (its mtime moved); the files are what must be exact.
    assert {k: v for k, v in found.items() if k != "/dir"} == {"/gone": "D", "/new": "A", "/dir/f": "C"}
    apply_layer(copy, export_diff(upper, lower))
    digest = lambda root: sorted((str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest())  # noqa: E731
                                 for p in root.rglob("*") if p.is_file())
    assert digest(copy) == digest(upper)
