"""Test helper: build OCI images with umoci (and docker-archives with skopeo), independently of
pyengine's own writer, and unpack them with umoci as the reference rootfs.

The test image: layer 1 is a busybox-static rootfs made by ``umoci repack``; layer 2 is a
hand-written tar added with ``umoci raw add-layer`` holding the awkward cases (an opaque
directory, whiteouts, hard links, absolute symlinks, setuid, a fifo, odd owners); layer 3 is
``umoci repack`` of deletions, a replaced file and new files, so umoci writes its whiteouts.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = "/usr/bin/busybox"


def run(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _umoci_layer(layout: Path, tag: str, work: Path, change) -> None:  # noqa: ANN001 - a callable
    """Unpack ``layout:tag``, let ``change(rootfs)`` edit it, repack it as a new layer on ``tag``."""
    bundle = work / f"bundle-{tag}-{len(list(work.iterdir()))}"
    run("umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle))
    change(bundle / "rootfs")
    run("umoci", "repack", "--image", f"{layout}:{tag}", str(bundle))
    shutil.rmtree(bundle)


def _busybox_rootfs(rootfs: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "var/log", "home/user", "opt/app/old", "data"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        target = rootfs / applet
        if applet == "bin/busybox" or target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        depth = applet.count("/")
        os.symlink("../" * (depth - 1) + "bin/busybox" if depth > 1 else "busybox", target)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")
    (rootfs / "etc/hostname").write_text("base\n")
    (rootfs / "etc/motd").write_text("replace me\n")
    (rootfs / "etc/to-delete").write_text("gone in layer 3\n")
    os.chown(rootfs / "home/user", 1000, 1000)
    for i in range(5):
        (rootfs / f"opt/app/old/file{i}").write_text(f"old {i}\n")
    (rootfs / "data/keep").write_text("kept\n")
    (rootfs / "data/drop").write_text("dropped by a layer-2 whiteout\n")


def _tricky_layer() -> bytes:
    """Layer 2: an opaque dir, whiteouts, hard links, absolute symlinks, setuid, a fifo, owners."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
                uid: int = 0, gid: int = 0, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 1_700_000_000
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("opt/", tarfile.DIRTYPE, mode=0o755)
        add("opt/app/", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000)
        add("opt/app/.wh..wh..opq")
        add("opt/app/new.conf", data=b"fresh after the opaque marker\n", mode=0o600, uid=1000, gid=1000)
        add("opt/app/bin/", tarfile.DIRTYPE, mode=0o755)
        add("opt/app/bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o4755)
        # Real tar writers give a hard link its target's mode; extractors differ on a mismatch.
        add("opt/app/bin/tool-link", tarfile.LNKTYPE, mode=0o4755, link="opt/app/bin/tool")
        add("data/", tarfile.DIRTYPE, mode=0o755)
        add("data/.wh.drop")
        add("data/fifo", tarfile.FIFOTYPE, mode=0o620)
        add("etc/", tarfile.DIRTYPE, mode=0o755)
        add("etc/localtime", tarfile.SYMTYPE, link="/usr/share/zoneinfo/UTC")
        add("etc/hostname", data=b"layer2\n", mode=0o644)
        add("usr/", tarfile.DIRTYPE, mode=0o755)
        add("usr/share/", tarfile.DIRTYPE, mode=0o755)
        add("usr/share/zoneinfo/", tarfile.DIRTYPE, mode=0o755)
        add("usr/share/zoneinfo/UTC", data=b"TZif2 fake\n", mode=0o644)
        add("home/user/.profile", data=b"export PS1='$ '\n", mode=0o640, uid=1000, gid=1000)
        add("home/user/sticky/", tarfile.DIRTYPE, mode=0o1777, uid=1000, gid=1000)
    return buf.getvalue()


def _third_layer(rootfs: Path) -> None:
    (rootfs / "etc/to-delete").unlink()
    (rootfs / "etc/motd").write_text("replaced in layer 3\n")
    shutil.rmtree(rootfs / "home/user/sticky")
    (rootfs / "srv/www").mkdir(parents=True)
    (rootfs / "srv/www/index.html").write_text("<h1>hello</h1>\n")
    os.chown(rootfs / "srv/www/index.html", 33, 33)
    (rootfs / "bin/hello").symlink_to("/bin/busybox")


def build_test_image(work: Path, tag: str = "test") -> Path:
    """Build the three-layer test image as an OCI layout under ``work``; return the layout path."""
    work.mkdir(parents=True, exist_ok=True)
    layout = work / "layout"
    scratch = work / "scratch"
    scratch.mkdir()
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:{tag}")
    run("umoci", "config", "--image", f"{layout}:{tag}", "--config.cmd", "/bin/sh", "--config.env", "A=1",
        "--os", "linux", "--architecture", "amd64")
    _umoci_layer(layout, tag, scratch, _busybox_rootfs)
    tricky = scratch / "tricky.tar"
    tricky.write_bytes(_tricky_layer())
    run("umoci", "raw", "add-layer", "--image", f"{layout}:{tag}", "--history.created_by", "tricky layer", str(tricky))
    _umoci_layer(layout, tag, scratch, _third_layer)
    run("umoci", "gc", "--layout", str(layout))
    shutil.rmtree(scratch)
    return layout


def oci_archive(layout: Path, out: Path) -> Path:
    """The OCI layout directory as a tarball (what ``load -i`` takes)."""
    with tarfile.open(out, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    return out


def docker_archive(layout: Path, tag: str, out: Path, name: str) -> Path:
    """``skopeo copy oci:LAYOUT:TAG docker-archive:OUT:NAME``."""
    run("skopeo", "--insecure-policy", "copy", "-q", f"oci:{layout}:{tag}", f"docker-archive:{out}:{name}")
    return out


def umoci_rootfs(layout: Path, tag: str, bundle: Path) -> Path:
    """The reference: ``umoci unpack`` of the image; returns the rootfs path."""
    run("umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle))
    return bundle / "rootfs"


def synthetic_image(work: Path, tag: str = "big", total_mb: int = 200, files: int = 14000, seed: int = 7) -> Path:
    """A ~``total_mb`` MB image of ``files`` files in two layers, for benchmarks (umoci-built)."""
    import random

    work.mkdir(parents=True, exist_ok=True)
    layout = work / "layout"
    scratch = work / "scratch"
    scratch.mkdir()
    rng = random.Random(seed)
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:{tag}")
    run("umoci", "config", "--image", f"{layout}:{tag}", "--config.cmd", "/bin/sh")
    average = total_mb * 1_000_000 // files

    def fill(part: int, count: int) -> None:
        def change(rootfs: Path) -> None:
            if part == 0:
                _busybox_rootfs(rootfs)
            for i in range(count):
                d = rootfs / f"usr/lib/pkg{part}-{i // 200}"
                d.mkdir(parents=True, exist_ok=True)
                size = max(16, int(rng.expovariate(1 / average)))
                # Half random (incompressible), half text: a realistic compression ratio.
                text = b"lorem ipsum dolor sit amet " * (size // 54 + 1)
                data = rng.randbytes(size // 2) + text[: size - size // 2]
                (d / f"f{i}.so").write_bytes(data)
        return change

    _umoci_layer(layout, tag, scratch, fill(0, files // 2))
    _umoci_layer(layout, tag, scratch, fill(1, files - files // 2))
    run("umoci", "gc", "--layout", str(layout))
    shutil.rmtree(scratch)
    return layout


def drivers_under_test() -> list[str]:
    """Storage drivers the image tests run on; the VM runner sets PYENGINE_TEST_DRIVERS=devicemapper."""
    return [d for d in os.environ.get("PYENGINE_TEST_DRIVERS", "vfs,overlay").split(",") if d]


def open_engine(env, driver: str | None = None):  # noqa: ANN001, ANN201 - EngineEnv -> Engine
    """An in-process engine on a test's data root (to look at the driver's layers directly)."""
    from pyengine import config, log
    from pyengine.engine import Engine

    log.configure("warning")

    flags = {"data-root": str(env.data_root), "run-root": str(env.run_root), "storage-driver": driver,
             "log-level": None, "log-format": None, "host": None}
    return Engine(config.load(str(env.config_path), flags, environ={}))


def sibling_env(env, name: str):  # noqa: ANN001, ANN201 - EngineEnv -> EngineEnv
    """Another isolated engine beside ``env`` (its own data root and run root)."""
    from dataclasses import replace

    data_root, run_root = env.root / f"{name}-data", env.root / f"{name}-run"
    data_root.mkdir()
    run_root.mkdir()
    return replace(env, data_root=data_root, run_root=run_root,
                   env={**env.env, "PYENGINE_DATA_ROOT": str(data_root), "PYENGINE_RUN_ROOT": str(run_root)})


def store_snapshot(data_root: Path) -> dict[str, tuple[str, int]]:
    """Every path under a data root with its type and size: to show that a refused load changed nothing."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(data_root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.name == "lock":
                continue
            st = path.lstat()
            out[str(path.relative_to(data_root))] = ("d" if path.is_dir() else "f", 0 if path.is_dir() else st.st_size)
    return out


def loaded_image_id(stdout: str) -> str:
    """The image id from ``load`` output (``Loaded image ID: sha256:...``) or the first loaded name."""
    for line in stdout.splitlines():
        if line.startswith("Loaded image ID: "):
            return line.split(": ", 1)[1].strip()
        if line.startswith("Loaded image: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(f"no image in load output: {stdout!r}")
