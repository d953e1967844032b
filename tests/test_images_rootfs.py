"""An image built by umoci, loaded by pyengine, gives the same rootfs as `umoci unpack`; and
`save` writes archives that pyengine, skopeo and umoci read back unchanged.

Parametrised by storage driver name (PYENGINE_TEST_DRIVERS; the VM runner passes devicemapper).
"""

from __future__ import annotations

import json
from pathlib import Path

import imagebuild as ib
import pytest

from conftest import need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.tools]

DOCKER_NAME = "example.com/test:v1"


@pytest.fixture(scope="module")
def test_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need_root()
    need_tool("umoci", "skopeo")
    work = tmp_path_factory.mktemp("image")
    layout = ib.build_test_image(work / "build")
    return {"layout": layout,
            "oci": ib.oci_archive(layout, work / "oci.tar"),
            "docker": ib.docker_archive(layout, "test", work / "docker.tar", DOCKER_NAME),
            "reference": ib.umoci_rootfs(layout, "test", work / "reference")}


def rootfs_manifest(env, driver: str, image_ref: str) -> dict:  # noqa: ANN001
    """tree_manifest of a fresh read-write layer on the image, through the storage driver."""
    from pyengine.testing.storage_conformance import tree_manifest

    engine = ib.open_engine(env, driver)
    try:
        image = engine.images.resolve_image(image_ref)
        storage = engine.storage
        storage.create_read_write("rootfs-check", image.top_layer)
        try:
            root = storage.get("rootfs-check")
            try:
                return tree_manifest(root)
            finally:
                storage.put("rootfs-check")
        finally:
            storage.remove("rootfs-check")
    finally:
        engine.close()


def assert_same_tree(got: dict, want: dict) -> None:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    differ = {p: (got[p], want[p]) for p in set(got) & set(want) if got[p] != want[p]}
    assert not missing and not extra and not differ, f"missing={missing[:20]} extra={extra[:20]} differ={differ}"


@pytest.mark.parametrize("driver", ib.drivers_under_test())
@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_loaded_rootfs_matches_umoci_unpack(engine_env, test_image, driver: str, kind: str) -> None:
    from pyengine.testing.storage_conformance import tree_manifest

    result = engine_env.run("--storage-driver", driver, "load", "-i", str(test_image[kind]), check=True)
    image_ref = ib.loaded_image_id(result.stdout)
    if kind == "docker":
        assert image_ref == DOCKER_NAME
    got = rootfs_manifest(engine_env, driver, image_ref)
    assert_same_tree(got, tree_manifest(test_image["reference"]))
    # The things the tricky layer is there for, spelled out.
    assert "opt/app/old" not in got and "data/drop" not in got and "etc/to-delete" not in got
    assert got["etc/localtime"][0] == "symlink" or got["etc/localtime"][-1] == "/usr/share/zoneinfo/UTC"
    check = engine_env.run("--storage-driver", driver, "system", "check", check=True)
    assert check.stdout.strip() == "ok"


@pytest.mark.parametrize("driver", ib.drivers_under_test()[:1])
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_then_load_keeps_image_id_and_manifest_digest(engine_env, test_image, tmp_path, driver: str,
                                                           fmt: str) -> None:
    from pyengine.testing.storage_conformance import tree_manifest

    # The umoci image has gzip layers: a docker-archive save must write them uncompressed.
    loaded = engine_env.run("--storage-driver", driver, "load", "-i", str(test_image["oci"]), check=True)
    engine_env.run("tag", ib.loaded_image_id(loaded.stdout), DOCKER_NAME, check=True)
    fmt_inspect = "{{.Id}} {{json .Manifests}}"
    before = engine_env.run("image", "inspect", "-f", fmt_inspect, DOCKER_NAME, check=True).stdout
    saved = tmp_path / f"saved-{fmt}.tar"
    engine_env.run("save", "--format", fmt, "-o", str(saved), DOCKER_NAME, check=True)

    other = ib.sibling_env(engine_env, "other")
    loaded = other.run("--storage-driver", driver, "load", "-i", str(saved), check=True)
    assert ib.loaded_image_id(loaded.stdout) == DOCKER_NAME
    after = other.run("image", "inspect", "-f", fmt_inspect, DOCKER_NAME, check=True).stdout
    assert after == before
    assert_same_tree(rootfs_manifest(other, driver, DOCKER_NAME), tree_manifest(test_image["reference"]))

    # skopeo reads the archive as the format it claims to be, and umoci unpacks the copy to
    # the same tree as the original image.
    transport = "docker-archive" if fmt == "docker-archive" else "oci-archive"
    copy = tmp_path / "copy"
    ib.run("skopeo", "--insecure-policy", "copy", "-q", f"{transport}:{saved}", f"oci:{copy}:copied")
    assert_same_tree(tree_manifest(ib.umoci_rootfs(copy, "copied", tmp_path / "bundle")),
                     tree_manifest(test_image["reference"]))
    config = json.loads(engine_env.run("image", "inspect", DOCKER_NAME, check=True).stdout)[0]
    assert config["RepoTags"] == [DOCKER_NAME]


@pytest.mark.vm
@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_loaded_rootfs_matches_umoci_unpack_on_devicemapper(engine_env, test_image, kind: str) -> None:
    """The same check on devicemapper, in the VM (the host kernel has no device-mapper)."""
    import os

    if not os.path.exists("/dev/mapper/control"):
        pytest.skip("needs device-mapper: run in the VM (.ci/vm-run)")
    engine_env.write_config('[storage.devicemapper]\ndata-size = "2G"\nmetadata-size = "64M"\nbase-size = "256M"\n')
    test_loaded_rootfs_matches_umoci_unpack(engine_env, test_image, "devicemapper", kind)
