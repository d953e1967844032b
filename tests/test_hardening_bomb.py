"""A decompression-bomb layer (issue 13, item 11): refused in one line, and nothing is left of it.

The layer is a gzip of a tar holding 64 MiB of zeros (about 64 KiB compressed), in a
docker-archive built here. With ``[images] max-layer-size`` below its size, `load` stops at
the limit while the layer streams; without a limit, on a data root too small for it, it stops
when the disk is full. Either way: one line, exit status non-zero, and the stores exactly as
before (no partial layer, no temp file, no blob).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar
from imagebuild import store_snapshot

from conftest import EngineEnv, need_root

pytestmark = [pytest.mark.root]

ZEROS = 64 << 20
DRIVERS = ["vfs", "overlay"]


class _HashingGzip(io.RawIOBase):
    """A file to write a tar into: hashes it (the layer's diff ID) and gzips it to ``out``."""

    def __init__(self, out: Path) -> None:
        self.hash = hashlib.sha256()
        self.gz = gzip.open(out, "wb", compresslevel=9)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.gz.write(data)
        return len(data)

    def close(self) -> None:
        self.gz.close()
        super().close()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def bomb_archive(dest: Path, name: str = "bomb:1", zeros: int = ZEROS) -> Path:
    """A docker-archive whose one layer is a gzip'd tar of ``zeros`` zero bytes."""
    work = dest / "bomb"
    work.mkdir()
    layer = work / "layer.tar.gz"
    sink = _HashingGzip(layer)
    with tarfile.open(fileobj=sink, mode="w|") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = zeros
        tar.addfile(info, _Zeros(zeros))
    sink.close()
    diff_id = "sha256:" + sink.hash.hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/zeros"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": ["layer/layer.tar"]}]).encode()
    out = dest / "bomb.tar"
    with tarfile.open(out, "w") as tar:
        for member, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, arcname="layer/layer.tar")
    assert layer.stat().st_size < ZEROS // 100, "the layer should be a bomb: tiny compressed, large inflated"
    return out


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def no_decompressor_left(data_root: Path) -> None:
    # the gzip -dc that inflated the layer must not outlive the command
    found = subprocess.run(["pgrep", "-f", "^gzip -dc$"], capture_output=True, text=True).stdout.split()
    for pid in found:
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert str(data_root).encode() not in f.read(), f"gzip -dc {pid} of this test is still running"


@pytest.mark.parametrize("driver", DRIVERS)
def test_layer_over_max_layer_size_is_refused_and_leaves_the_stores_unchanged(
        engine_env: EngineEnv, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, driver: str) -> None:
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = driver
    archive = bomb_archive(tmp_path)
    engine_env.write_config('[images]\nmax-layer-size = "16m"\n')
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox", check=True)
    before = store_snapshot(engine_env.data_root)
    result = engine_env.run("load", "-i", str(archive))
    line = one_line(result)
    assert result.returncode == 1
    assert line.startswith("pyengine: error: layer sha256:"), line
    assert "larger than 16 MiB uncompressed" in line and "max-layer-size" in line, line
    assert store_snapshot(engine_env.data_root) == before
    assert engine_env.run("images", "--format", "{{.Repository}}", check=True).stdout.split() == ["busybox"]
    assert engine_env.run("system", "check", check=True).stdout.strip() == "ok"
    no_decompressor_left(engine_env.data_root)
    # Under the limit the same archive loads: the limit is what refused it.
    engine_env.write_config('[images]\nmax-layer-size = "65m"\n')
    engine_env.run("load", "-i", str(archive), check=True)
    assert sorted(engine_env.run("images", "--format", "{{.Repository}}", check=True).stdout.split()) == [
        "bomb", "busybox"]


@pytest.mark.parametrize("value", ["0", '"ten gigs"', "-5", '"10x"', "true"])
def test_bad_max_layer_size_is_a_config_error(engine_env: EngineEnv, value: str) -> None:
    engine_env.write_config(f"[images]\nmax-layer-size = {value}\n")
    result = engine_env.run("images")
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith(f"pyengine: error: {engine_env.config_path}:2: images.max-layer-size: "), line


def test_unknown_key_of_images_table_is_a_config_error(engine_env: EngineEnv) -> None:
    engine_env.write_config('[images]\nmax-layer-sise = "1g"\n')
    line = one_line(engine_env.run("images"))
    assert "images.max-layer-sise: unknown key (allowed in [images]: max-layer-size)" in line, line


@pytest.mark.parametrize("driver", DRIVERS)
def test_bomb_on_a_small_data_root_is_one_line_and_leaves_nothing(
        engine_env: EngineEnv, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, driver: str) -> None:
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = driver
    archive = bomb_archive(tmp_path)
    data_root = engine_env.data_root
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(data_root)], check=True)
    try:
        engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox", check=True)
        before = store_snapshot(data_root)
        result = engine_env.run("load", "-i", str(archive))
        line = one_line(result)
        assert result.returncode == 125, result.stderr
        assert line.startswith(f"pyengine: error: no space left on device: {data_root}"), line
        assert store_snapshot(data_root) == before
        assert engine_env.run("system", "check", check=True).stdout.strip() == "ok"
        no_decompressor_left(data_root)
    finally:
        subprocess.run(["umount", str(data_root)], check=True)
