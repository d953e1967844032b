"""pull/push/login/logout/search against Debian's docker-registry on 127.0.0.1 (see
registry_fixtures): images pushed by skopeo pull into pyengine with the rootfs umoci unpacks;
pyengine's pushes read back by skopeo with the same digest; platform selection from an index;
corrupt and cut downloads; basic auth over TLS and bearer tokens."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import imagebuild as ib
import pytest
import registry_fixtures as rf

from conftest import need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.tools, pytest.mark.registry]

REPO = "test/img"


def _skopeo(*args: str) -> str:
    return ib.run("skopeo", "--insecure-policy", *args)


def small_image(work: Path, arch: str, tag: str) -> Path:
    """A one-layer busybox-less image for ``arch`` in an OCI layout (layer content names the arch)."""
    layout = work / "layout"
    if not layout.exists():
        ib.run("umoci", "init", "--layout", str(layout))
    ib.run("umoci", "new", "--image", f"{layout}:{tag}")
    ib.run("umoci", "config", "--image", f"{layout}:{tag}", "--os", "linux", "--architecture", arch)
    bundle = work / f"bundle-{tag}"
    ib.run("umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle))
    (bundle / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "etc" / "arch").write_text(f"{arch}\n")
    ib.run("umoci", "repack", "--image", f"{layout}:{tag}", str(bundle))
    shutil.rmtree(bundle)
    return layout


@pytest.fixture(scope="module")
def test_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need_root()
    need_tool("umoci", "skopeo", "docker-registry")
    work = tmp_path_factory.mktemp("regimage")
    layout = ib.build_test_image(work / "build")
    return {"layout": layout, "oci": ib.oci_archive(layout, work / "oci.tar"),
            "reference": ib.umoci_rootfs(layout, "test", work / "reference")}


@pytest.fixture
def registry(tmp_path: Path):
    need_tool("docker-registry")
    reg = rf.start_registry(tmp_path / "registry")
    yield reg
    reg.stop()


def insecure(env, *hosts: str) -> None:  # noqa: ANN001 - EngineEnv
    env.write_config("".join(f'[registries."{h}"]\ninsecure = true\n' for h in hosts))


def tree_manifest(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: type, mode, owner, size, content hash or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            else:
                extra = ""
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                                st.st_gid, size, extra)
    return out


def stored_rootfs(env, image_ref: str) -> dict[str, tuple]:  # noqa: ANN001 - EngineEnv
    """tree_manifest of a fresh read-write layer on the pulled image, through the storage driver."""
    # The driver that holds the pulled layers: automatic selection finds it by its state.
    engine = ib.open_engine(env, None)
    try:
        image = engine.images.resolve_image(image_ref)
        storage = engine.storage
        storage.create_read_write("rootfs-check", image.top_layer)
        try:
            return tree_manifest(Path(storage.get("rootfs-check")))
        finally:
            storage.put("rootfs-check")
            storage.remove("rootfs-check")
    finally:
        engine.close()


def manifest_digest(ref: str, tls_verify: bool = False, creds: str | None = None) -> str:
    args = ["inspect", "--raw", f"--tls-verify={str(tls_verify).lower()}"]
    if creds:
        args += ["--creds", creds]
    raw = subprocess.run(["skopeo", *args, f"docker://{ref}"], capture_output=True, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_pull_of_skopeo_push_gives_umoci_rootfs(engine_env, test_image, registry) -> None:
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{test_image['layout']}:test", f"docker://{registry.host}/{REPO}:v1")
    insecure(engine_env, registry.host)
    result = engine_env.run("pull", f"{registry.host}/{REPO}:v1", check=True)
    want = manifest_digest(f"{registry.host}/{REPO}:v1")
    assert f"Digest: {want}" in result.stdout
    assert "Pull complete" in result.stdout
    got, want_tree = stored_rootfs(engine_env, f"{registry.host}/{REPO}:v1"), tree_manifest(test_image["reference"])
    assert got == want_tree, {k: (got.get(k), want_tree.get(k)) for k in set(got) ^ set(want_tree) or
                              [k for k in got if got[k] != want_tree[k]]}
    # And it runs: a container from the pulled image.
    ran = engine_env.run("run", "--rm", f"{registry.host}/{REPO}:v1", "/bin/busybox", "echo", "pulled-and-running",
                         check=True)
    assert ran.stdout == "pulled-and-running\n"
    # Everything is in the store now: a second pull downloads nothing.
    again = engine_env.run("pull", f"{registry.host}/{REPO}:v1", check=True)
    assert "Pull complete" not in again.stdout and "Already exists" in again.stdout
    # -q prints the name only; by digest works too.
    quiet = engine_env.run("pull", "-q", f"{registry.host}/{REPO}@{want}", check=True)
    assert quiet.stdout.strip().splitlines()[-1] == f"{registry.host}/{REPO}@{want}"


def test_push_is_read_back_by_skopeo_with_same_digest(engine_env, test_image, registry, tmp_path) -> None:
    insecure(engine_env, registry.host)
    name = ib.loaded_image_id(engine_env.run("load", "-i", str(test_image["oci"]), check=True).stdout)
    pushed = engine_env.run("push", name, f"{registry.host}/{REPO}:pushed", check=True)
    digest = pushed.stdout.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    assert manifest_digest(f"{registry.host}/{REPO}:pushed") == digest
    # skopeo can copy it out whole (every blob is there and verifies).
    _skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/{REPO}:pushed", f"oci:{tmp_path / 'out'}:x")
    # Pushing again skips every blob (HEAD); chunked upload to another repo gives the same digest.
    again = engine_env.run("push", name, f"{registry.host}/{REPO}:pushed", check=True)
    assert "Pushing" not in again.stdout and "Layer already exists" in again.stdout
    chunked = engine_env.run("push", "--chunk-size", "4096", name, f"{registry.host}/other/img:c", check=True)
    assert "Pushing" in chunked.stdout
    assert manifest_digest(f"{registry.host}/other/img:c") == digest


def test_push_mounts_blobs_from_another_repository(engine_env, test_image, registry) -> None:
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{test_image['layout']}:test", f"docker://{registry.host}/{REPO}:v1")
    insecure(engine_env, registry.host)
    engine_env.run("pull", f"{registry.host}/{REPO}:v1", check=True)
    result = engine_env.run("push", f"{registry.host}/{REPO}:v1", f"{registry.host}/copy/img:v1", check=True)
    assert f"Mounted from {REPO}" in result.stdout and "Pushing" not in result.stdout
    assert manifest_digest(f"{registry.host}/copy/img:v1") == manifest_digest(f"{registry.host}/{REPO}:v1")


def _multi_arch_layout(work: Path) -> Path:
    """An OCI layout whose tag ``multi`` is an index of an amd64 and an arm64/v8 image."""
    layout = small_image(work, "amd64", "amd64")
    small_image(work, "arm64", "arm64")
    index = json.loads((layout / "index.json").read_text())
    manifests = []
    for desc in index["manifests"]:
        arch = desc["annotations"]["org.opencontainers.image.ref.name"]
        platform = {"architecture": arch, "os": "linux", **({"variant": "v8"} if arch == "arm64" else {})}
        manifests.append({k: desc[k] for k in ("mediaType", "digest", "size")} | {"platform": platform})
    blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": manifests}).encode()
    digest = hashlib.sha256(blob).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(blob)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{digest}",
                               "size": len(blob), "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def test_multi_platform_index_pulls_the_asked_platform(engine_env, registry, tmp_path) -> None:
    need_tool("umoci", "skopeo")
    layout = _multi_arch_layout(tmp_path / "multi")
    _skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi", f"docker://{registry.host}/multi:v1")
    insecure(engine_env, registry.host)
    for platform, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")):
        result = engine_env.run("pull", "--platform", platform, f"{registry.host}/multi:v1", check=True)
        assert f"Digest: {manifest_digest(f'{registry.host}/multi:v1')}" in result.stdout
        engine = ib.open_engine(engine_env, "vfs")
        try:
            assert engine.images.image_config(f"{registry.host}/multi:v1")["architecture"] == arch
        finally:
            engine.close()
        assert stored_rootfs(engine_env, f"{registry.host}/multi:v1")["etc/arch"][5] == \
            hashlib.sha256(f"{arch}\n".encode()).hexdigest()
    missing = engine_env.run("pull", "--platform", "linux/s390x", f"{registry.host}/multi:v1")
    assert missing.returncode != 0 and "no image for platform linux/s390x" in missing.stderr


def test_corrupt_blob_fails_naming_digest_and_store_is_unchanged(engine_env, test_image, registry, tmp_path) -> None:
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{test_image['layout']}:test", f"docker://{registry.host}/{REPO}:v1")
    small_image(tmp_path / "small", "amd64", "small")
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'small' / 'layout'}:small",
            f"docker://{registry.host}/small:v1")
    manifest = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{REPO}:v1"))
    target = manifest["layers"][-1]["digest"]
    proxy = rf.BlobProxy(registry.port, target, "corrupt")
    try:
        insecure(engine_env, registry.host, proxy.host)
        engine_env.run("pull", f"{registry.host}/small:v1", check=True)  # a store that already holds something
        before = ib.store_snapshot(engine_env.data_root)
        result = engine_env.run("pull", f"{proxy.host}/{REPO}:v1")
        assert proxy.tripped
        assert result.returncode != 0
        assert target in result.stderr and "corrupt" in result.stderr, result.stderr
        assert ib.store_snapshot(engine_env.data_root) == before
    finally:
        proxy.stop()


def test_one_connection_streams_blob_after_blob(test_image, registry) -> None:
    # A download thread takes the next blob on its kept-alive connection; a stream read to its
    # Content-Length must leave that connection ready (it once failed with "Request-sent").
    from pyengine.registry.client import RegistryClient
    from pyengine.registry.options import RegistryOptions

    _skopeo("copy", "--dest-tls-verify=false", f"oci:{test_image['layout']}:test", f"docker://{registry.host}/{REPO}:v1")
    manifest = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{REPO}:v1"))
    client = RegistryClient(registry.host, RegistryOptions(insecure=True))
    try:
        for desc in [manifest["config"], *manifest["layers"]]:
            resp, _ = client.blob_stream(REPO, desc["digest"])
            data = b"".join(resp.iter_chunks())
            assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"]
    finally:
        client.close()


def test_a_layer_is_unpacked_while_a_later_one_still_downloads(engine_env, test_image, registry) -> None:
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{test_image['layout']}:test", f"docker://{registry.host}/{REPO}:v1")
    manifest = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{REPO}:v1"))
    first, last = manifest["layers"][0]["digest"], manifest["layers"][-1]["digest"]
    assert first != last
    proxy = rf.BlobProxy(registry.port, last, "hold")
    try:
        insecure(engine_env, proxy.host)
        pull = subprocess.Popen([sys.executable, "-m", "pyengine", "pull", f"{proxy.host}/{REPO}:v1"],
                                env=engine_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in pull.stdout),
                                  daemon=True)
        reader.start()
        done = f"{first[7:19]}: Pull complete"
        # Well within the client's 60 s read timeout on the held download.
        deadline = time.monotonic() + 30
        while done not in lines and time.monotonic() < deadline and pull.poll() is None:
            time.sleep(0.05)
        # The bottom layer was unpacked into the store while the top one had not come.
        assert proxy.held.is_set() and done in lines, lines
        assert not [line for line in lines if line.startswith(f"{last[7:19]}: ") and "complete" in line]
        proxy.release.set()
        assert pull.wait(120) == 0, pull.stderr.read()
        reader.join(10)
        assert stored_rootfs(engine_env, f"{proxy.host}/{REPO}:v1") == tree_manifest(test_image["reference"])
    finally:
        proxy.release.set()
        proxy.stop()


def test_cut_download_resumes_without_fetching_the_first_part_again(engine_env, test_image, registry) -> None:
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{test_image['layout']}:test", f"docker://{registry.host}/{REPO}:v1")
    manifest = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{REPO}:v1"))
    layer = max(manifest["layers"], key=lambda d: d["size"])
    cut = layer["size"] // 2
    proxy = rf.BlobProxy(registry.port, layer["digest"], "cut", cut_after=cut)
    try:
        insecure(engine_env, proxy.host)
        first = engine_env.run("pull", f"{proxy.host}/{REPO}:v1")
        assert first.returncode != 0 and "pull again to resume" in first.stderr, first.stderr
        assert proxy.sent[layer["digest"]] == cut
        second = engine_env.run("pull", f"{proxy.host}/{REPO}:v1", check=True)
        assert f"Resuming at {cut} bytes" in second.stdout
        # Every byte of the layer crossed the proxy exactly once over both pulls.
        assert proxy.sent[layer["digest"]] == layer["size"]
        assert f"bytes={cut}-" in proxy.ranges
        assert not (engine_env.data_root / "blobs" / "incoming").exists()
    finally:
        proxy.stop()


def test_mirrors_are_tried_in_order_before_the_registry(engine_env, test_image, registry) -> None:
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{test_image['layout']}:test", f"docker://{registry.host}/{REPO}:v1")
    dead = f"127.0.0.1:{rf.free_port()}"
    # The registry itself does not exist: the pull can only succeed through the live mirror.
    engine_env.write_config(f'[registries."nosuch.invalid:5000"]\nmirrors = ["http://{dead}", "{registry.host}"]\n'
                            f'[registries."{registry.host}"]\ninsecure = true\n')
    result = engine_env.run("pull", f"nosuch.invalid:5000/{REPO}:v1", check=True)
    assert f"Digest: {manifest_digest(f'{registry.host}/{REPO}:v1')}" in result.stdout
    engine = ib.open_engine(engine_env, "vfs")
    try:
        assert engine.images.resolve_image(f"nosuch.invalid:5000/{REPO}:v1")
    finally:
        engine.close()


def test_schema1_manifest_is_refused_clearly(engine_env, tmp_path) -> None:
    """distribution 2.8 no longer serves schema 1, so a tiny server stands in for an old registry."""
    import http.server
    import threading

    body = json.dumps({"schemaVersion": 1, "name": "old/img", "tag": "v1", "fsLayers": [], "history": []}).encode()

    class Old(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            if "/manifests/" in self.path:
                self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Old)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        insecure(engine_env, host)
        before = ib.store_snapshot(engine_env.data_root)
        result = engine_env.run("pull", f"{host}/old/img:v1")
        assert result.returncode != 0
        assert "schema 1" in result.stderr and "not support" in result.stderr, result.stderr
        assert ib.store_snapshot(engine_env.data_root) == before
    finally:
        server.shutdown()
        server.server_close()


def test_oci_layout_and_archives_as_references(engine_env, test_image, tmp_path) -> None:
    need_tool("umoci", "skopeo")
    want = json.loads((test_image["layout"] / "index.json").read_text())["manifests"][0]["digest"]
    pulled = engine_env.run("pull", f"oci:{test_image['layout']}:test", check=True)
    assert want in pulled.stdout and "localhost/layout:test" in pulled.stdout
    got = stored_rootfs(engine_env, "localhost/layout:test")
    assert got == tree_manifest(test_image["reference"])
    missing = engine_env.run("pull", f"oci:{test_image['layout']}:nosuch")
    assert missing.returncode != 0 and "no image tagged 'nosuch'" in missing.stderr
    # Out to a new layout: skopeo reads it back with the same manifest digest.
    out = tmp_path / "out-layout"
    pushed = engine_env.run("push", "localhost/layout:test", f"oci:{out}:copy", check=True)
    assert pushed.stdout.strip().splitlines()[-1] == want
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:copy"], capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == want
    # And a docker-archive written by push loads in skopeo.
    engine_env.run("push", "localhost/layout:test", f"docker-archive:{tmp_path / 'img.tar'}", check=True)
    _skopeo("copy", f"docker-archive:{tmp_path / 'img.tar'}", f"oci:{tmp_path / 'from-archive'}:x")
