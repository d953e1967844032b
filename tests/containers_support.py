"""Test support for containers: a busybox image made from Debian's busybox-static."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = "/bin/busybox"


def busybox_rootfs_tar(dest: Path) -> Path:
    """A rootfs tarball: busybox and its applet links, /etc/passwd and /etc/group."""
    tar_path = dest / "busybox-rootfs.tar"
    if tar_path.exists():
        return tar_path
    root = dest / "busybox-rootfs"
    (root / "bin").mkdir(parents=True)
    for d in ("etc", "tmp", "proc", "sys", "dev", "root", "mnt"):
        (root / d).mkdir()
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
                                         "app:x:1000:1000:app:/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n")
    with tarfile.open(tar_path, "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    return tar_path


def remove_all_containers(cli) -> None:  # noqa: ANN001 - cli(*args) -> CompletedProcess
    """Force-remove every container of an engine and assert none is left (fixture teardown)."""
    ids = cli("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        cli("rm", "-f", *ids)
    leftover = cli("ps", "-aq").stdout.split()
    assert not leftover, f"containers left: {leftover}"


def busybox_engine(engine_env, tmp_path_factory, via: str = "local", driver: str = "overlay"):  # noqa: ANN001, ANN201 - fixture body
    """The body of an ``engine`` fixture (``yield from busybox_engine(...)``): root required, the
    storage ``driver`` (overlay by default), ``busybox:latest`` imported, served through a daemon
    when ``via`` is ``"daemon"`` (daemon_mode.serve); every container removed (and asserted gone)
    afterwards."""
    from daemon_mode import serve

    from conftest import need_root

    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = driver
    served = serve(engine_env, via)
    try:
        engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest",
                       check=True)
        yield engine_env
        remove_all_containers(engine_env.run)
    finally:
        if served is not None:
            served.stop()
