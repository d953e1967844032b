"""The image verbs as a user runs them: import, images, tag, history, inspect, rmi, prune,
system df/check, and the errors (one line, non-zero exit, store unchanged). Each test runs
daemonless and again through ``pyengine daemon`` (tests/daemon_mode.py); ``system check``,
which only works on this machine's engine, then runs daemonless beside the daemon."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import imagebuild as ib
import pytest
from daemon_mode import VIAS, serve

from conftest import need_root, need_tool

pytestmark = [pytest.mark.root]

DRIVER = ib.drivers_under_test()[0]


def rootfs_tar(tmp_path: Path, extra: bytes = b"") -> Path:
    """A small rootfs tarball: busybox plus one file whose content makes the layer unique."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(ib.BUSYBOX, "bin/busybox")
        info = tarfile.TarInfo("bin/sh")
        info.type, info.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(info)
        data = b"hello " + extra + b"\n"
        info = tarfile.TarInfo("etc/greeting")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path = tmp_path / f"rootfs-{extra.hex() or 'base'}.tar"
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(params=VIAS, autouse=True)
def via(request: pytest.FixtureRequest, engine_env):  # noqa: ANN001, ANN201
    """Daemonless, then through a daemon on the same roots and driver."""
    if request.param == "daemon":
        need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = DRIVER
    served = serve(engine_env, request.param)
    try:
        yield request.param
    finally:
        if served is not None:
            served.stop()


def run(env, *args: str, **kwargs):  # noqa: ANN001, ANN201
    if args[:2] == ("system", "check"):
        # this machine's engine only: beside the daemon, on the stores they share
        kwargs["env"] = {**kwargs.get("env", {}), "PYENGINE_HOST": ""}
    return env.run("--storage-driver", DRIVER, *args, **kwargs)


def driver_has(env, layer_id: str) -> bool:  # noqa: ANN001
    engine = ib.open_engine(env, DRIVER)
    try:
        return engine.storage.exists(layer_id)
    finally:
        engine.close()


def one_line_error(result, status: int) -> str:  # noqa: ANN001
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if status == 2 and lines and lines[0].startswith("Usage:"):
        # click's own usage errors: the usage line and a hint, then the one line that says what's wrong
        lines = [line for line in lines if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_import_plain_gzip_and_stdin_then_images_lists_them(engine_env, tmp_path) -> None:
    need_root()
    plain = rootfs_tar(tmp_path)
    gz = tmp_path / "rootfs.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    id_plain = run(engine_env, "import", str(plain), "plain", check=True).stdout.strip()
    id_gz = run(engine_env, "import", "-c", "CMD [\"/bin/sh\"]", "-m", "from gzip", str(gz), "gz:v1",
                check=True).stdout.strip()
    id_stdin = run(engine_env, "import", "-", "localhost:5000/stdin/img:t", input=plain.read_bytes(),
                   check=True).stdout
    assert id_plain.startswith("sha256:") and id_gz.startswith("sha256:") and b"sha256:" in id_stdin
    need_tool("zstd")
    zst = tmp_path / "rootfs.tar.zst"
    subprocess.run(["zstd", "-q", "-o", str(zst), str(plain)], check=True)
    id_zst = run(engine_env, "import", str(zst), "zst", check=True).stdout.strip()
    zst_layers = json.loads(run(engine_env, "image", "inspect", id_zst, check=True).stdout)[0]["RootFS"]["Layers"]
    run(engine_env, "rmi", "zst", check=True)
    listing = run(engine_env, "images", check=True).stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = {tuple(line.split()[:3]) for line in listing[1:]}
    assert ("plain", "latest", id_plain[7:19]) in rows
    assert ("gz", "v1", id_gz[7:19]) in rows
    assert any(r[:2] == ("localhost:5000/stdin/img", "t") for r in rows)
    names = run(engine_env, "images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()
    assert sorted(names) == ["gz:v1", "localhost:5000/stdin/img:t", "plain:latest"]
    quiet = run(engine_env, "images", "-q", check=True).stdout.split()
    assert len(quiet) == 3 and id_gz[7:19] in quiet
    digests = run(engine_env, "images", "--digests", check=True).stdout
    assert "DIGEST" in digests and "sha256:" in digests
    # The gzip and the plain import carry the same tar, so they share one layer (one diff ID).
    inspected = json.loads(run(engine_env, "image", "inspect", "plain", "gz:v1", check=True).stdout)
    assert inspected[0]["RootFS"]["Layers"] == inspected[1]["RootFS"]["Layers"] == zst_layers
    assert inspected[1]["Config"]["Cmd"] == ["/bin/sh"]
    history = run(engine_env, "history", "gz:v1", check=True).stdout
    assert "pyengine import" in history and "from gzip" in history
    # The imported rootfs is what the tar held, as seen through the driver.
    engine = ib.open_engine(engine_env, DRIVER)
    try:
        image = engine.images.resolve_image("gz:v1")
        root = engine.storage.get(image.top_layer)
        try:
            assert (root / "etc/greeting").read_bytes() == b"hello \n"
            assert (root / "bin/sh").readlink() == Path("busybox")
        finally:
            engine.storage.put(image.top_layer)
    finally:
        engine.close()


def test_shared_layer_is_removed_only_with_the_last_image(engine_env, tmp_path) -> None:
    need_root()
    base = rootfs_tar(tmp_path)
    run(engine_env, "import", str(base), "one", check=True)
    run(engine_env, "import", "-m", "another config", str(base), "two", check=True)
    inspected = json.loads(run(engine_env, "image", "inspect", "one", check=True).stdout)[0]
    top = inspected["GraphDriver"]["Data"]["TopLayer"]
    assert driver_has(engine_env, top)
    out = run(engine_env, "rmi", "one", check=True).stdout
    assert "Untagged: one:latest" in out and "Deleted: sha256:" in out
    assert driver_has(engine_env, top), "layer still used by image two was removed"
    run(engine_env, "tag", "two", "two:extra", check=True)
    assert run(engine_env, "rmi", "two", check=True).stdout.strip() == "Untagged: two:latest"
    assert driver_has(engine_env, top)
    run(engine_env, "rmi", "two:extra", check=True)
    assert not driver_has(engine_env, top)
    assert run(engine_env, "images", "-q", check=True).stdout.strip() == ""
    assert not list((engine_env.data_root / "blobs" / "sha256").iterdir())
    assert run(engine_env, "system", "check", check=True).stdout.strip() == "ok"


def test_rmi_by_id_with_several_repositories_needs_force(engine_env, tmp_path) -> None:
    need_root()
    image_id = run(engine_env, "import", str(rootfs_tar(tmp_path)), "a", check=True).stdout.strip()
    run(engine_env, "tag", "a", "b:1", check=True)
    refused = run(engine_env, "rmi", image_id[7:19])
    assert "must be forced" in one_line_error(refused, 1)
    assert len(run(engine_env, "images", "-q", check=True).stdout.split()) == 1
    out = run(engine_env, "rmi", "-f", image_id[7:19], check=True).stdout
    assert "Untagged: a:latest" in out and "Untagged: b:1" in out and f"Deleted: {image_id}" in out


def test_prune_removes_dangling_images_only_unless_all(engine_env, tmp_path) -> None:
    need_root()
    run(engine_env, "import", str(rootfs_tar(tmp_path, b"x")), "keep", check=True)
    dangling = run(engine_env, "import", str(rootfs_tar(tmp_path, b"y")), check=True).stdout.strip()
    listing = run(engine_env, "images", check=True).stdout
    assert "<none>" in listing
    pruned = run(engine_env, "image", "prune", "-f", check=True).stdout
    assert f"deleted: {dangling}" in pruned and "Total reclaimed space:" in pruned
    assert run(engine_env, "images", "--format", "{{.Repository}}", check=True).stdout.split() == ["keep"]
    run(engine_env, "image", "prune", "-a", "-f", check=True)
    assert run(engine_env, "images", "-q", check=True).stdout.strip() == ""


def test_system_df_counts_images_and_sizes(engine_env, tmp_path) -> None:
    need_root()
    run(engine_env, "import", str(rootfs_tar(tmp_path)), "x", check=True)
    out = run(engine_env, "system", "df", check=True).stdout.splitlines()
    assert out[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    images_row = out[1].split()
    assert images_row[:3] == ["Images", "1", "0"] and images_row[3].endswith("MB")


def test_system_check_finds_a_corrupt_blob_and_repair_makes_it_pass(engine_env, tmp_path) -> None:
    need_root()
    run(engine_env, "import", str(rootfs_tar(tmp_path, b"a")), "good", check=True)
    bad_id = run(engine_env, "import", str(rootfs_tar(tmp_path, b"b")), "bad", check=True).stdout.strip()
    assert run(engine_env, "system", "check", check=True).stdout.strip() == "ok"
    config_blob = engine_env.data_root / "blobs" / "sha256" / bad_id[7:]
    config_blob.write_bytes(config_blob.read_bytes().replace(b"linux", b"linuz"))
    check = run(engine_env, "system", "check")
    assert check.returncode == 1
    assert f"blob {bad_id} is corrupt" in check.stdout and "tag docker.io/library/bad:latest" in check.stdout
    repaired = run(engine_env, "system", "check", "--repair", check=True)
    assert "repaired" in repaired.stdout
    assert run(engine_env, "system", "check", check=True).stdout.strip() == "ok"
    assert run(engine_env, "images", "--format", "{{.Repository}}", check=True).stdout.split() == ["good"]


def test_missing_image_wrong_flag_and_bad_reference_are_one_line_errors(engine_env, tmp_path) -> None:
    need_root()
    run(engine_env, "import", str(rootfs_tar(tmp_path)), "present", check=True)
    before = ib.store_snapshot(engine_env.data_root)
    for args, status, words in (
            (("image", "inspect", "absent"), 1, "No such image: absent"),
            (("rmi", "absent:1.0"), 1, "No such image"),
            (("history", "sha256:" + "0" * 64), 1, "No such image"),
            (("save", "-o", str(tmp_path / "x.tar"), "absent"), 1, "No such image"),
            (("tag", "present", "Bad/Name"), 2, "invalid reference format"),
            (("images", "--bogus"), 2, "No such option"),
            (("load", "-i", str(tmp_path / "nope.tar")), 1, "no such file"),
            (("import", str(tmp_path / "nope.tar"), "x"), 2, "cannot read"),
            (("save", "--format", "zip", "-o", str(tmp_path / "x.tar"), "present"), 2, "Invalid value")):
        result = run(engine_env, *args)
        assert words in one_line_error(result, status), (args, result.stderr)
    assert not (tmp_path / "x.tar").exists()
    assert ib.store_snapshot(engine_env.data_root) == before


@pytest.mark.tools
def test_corrupt_blob_in_a_load_archive_is_refused_and_changes_nothing(engine_env, tmp_path, via) -> None:
    need_root()
    need_tool("umoci", "skopeo")
    run(engine_env, "import", str(rootfs_tar(tmp_path)), "present", check=True)
    layout = ib.build_test_image(tmp_path / "build")
    before = ib.store_snapshot(engine_env.data_root)
    # OCI layout: a layer blob whose bytes no longer match its digest (the name).
    broken = tmp_path / "broken-layout"
    shutil.copytree(layout, broken)
    index = json.loads((broken / "index.json").read_text())
    manifest = json.loads((broken / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer = broken / "blobs/sha256" / manifest["layers"][-1]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    # the daemon answers a bad archive with a 400, which the client exits 2 for
    refused = 2 if via == "daemon" else 1
    result = run(engine_env, "load", "-i", str(ib.oci_archive(broken, tmp_path / "broken-oci.tar")))
    assert "corrupt" in one_line_error(result, refused)
    assert ib.store_snapshot(engine_env.data_root) == before
    # docker-archive: a layer tar with one byte changed, so its diff ID no longer matches the config.
    archive = ib.docker_archive(layout, "test", tmp_path / "docker.tar", "example.com/broken:1")
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    biggest = max((m for m, d in members if d is not None and m.name.endswith(".tar")), key=lambda m: m.size)
    with tarfile.open(tmp_path / "broken-docker.tar", "w") as out:
        for member, content in members:
            if member is biggest:
                content = bytearray(content)
                content[1000] ^= 0x01
                content = bytes(content)
            out.addfile(member, io.BytesIO(content) if content is not None else None)
    result = run(engine_env, "load", "-i", str(tmp_path / "broken-docker.tar"))
    assert "diff ID" in one_line_error(result, refused)
    assert ib.store_snapshot(engine_env.data_root) == before
    assert run(engine_env, "system", "check", check=True).stdout.strip() == "ok"


def test_system_check_finds_a_layer_missing_in_the_driver_and_repair_drops_its_image(engine_env, tmp_path) -> None:
    need_root()
    run(engine_env, "import", str(rootfs_tar(tmp_path, b"a")), "good", check=True)
    run(engine_env, "import", str(rootfs_tar(tmp_path, b"b")), "lost", check=True)
    engine = ib.open_engine(engine_env, DRIVER)
    try:
        engine.storage.remove(engine.images.resolve_image("lost").top_layer)
    finally:
        engine.close()
    check = run(engine_env, "system", "check")
    assert check.returncode == 1 and "missing in the storage driver" in check.stdout
    assert "tag docker.io/library/lost:latest" in check.stdout
    run(engine_env, "system", "check", "--repair", check=True)
    assert run(engine_env, "system", "check", check=True).stdout.strip() == "ok"
    assert run(engine_env, "images", "--format", "{{.Repository}}", check=True).stdout.split() == ["good"]
    missing = run(engine_env, "image", "inspect", "lost")
    assert missing.returncode == 1 and "No such image" in missing.stderr


@pytest.mark.parametrize("case", ["hardlink_out", "dotdot", "write_through_symlink_to_root"])
def test_malicious_layer_through_import_is_refused_and_store_unchanged(engine_env, tmp_path, case: str) -> None:
    need_root()
    run(engine_env, "import", str(rootfs_tar(tmp_path)), "present", check=True)
    before = ib.store_snapshot(engine_env.data_root)
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("outside\n")
    evil = tmp_path / f"{case}.tar"
    with tarfile.open(evil, "w") as tar:
        ok = tarfile.TarInfo("ok")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if case == "hardlink_out":
            link = tarfile.TarInfo("evil")
            link.type, link.linkname = tarfile.LNKTYPE, "../../../../../../" + str(sentinel)
            tar.addfile(link)
        elif case == "dotdot":
            bad = tarfile.TarInfo("../../../../../../" + str(sentinel))
            bad.size = 5
            tar.addfile(bad, io.BytesIO(b"pwned"))
        else:
            root_link = tarfile.TarInfo("esc")
            root_link.type, root_link.linkname = tarfile.SYMTYPE, "/"
            tar.addfile(root_link)
            through = tarfile.TarInfo("esc" + str(sentinel))
            through.size = 5
            tar.addfile(through, io.BytesIO(b"pwned"))
    result = run(engine_env, "import", str(evil), "evil:1")
    if result.returncode != 0:
        one_line_error(result, result.returncode)
        assert ib.store_snapshot(engine_env.data_root) == before
    assert sentinel.read_text() == "outside\n", "the layer wrote outside its rootfs"
    assert run(engine_env, "system", "check", check=True).stdout.strip() == "ok"
