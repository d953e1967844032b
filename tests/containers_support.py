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
