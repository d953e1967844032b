"""The image and distribution endpoints through the real clients: the docker CLI (load, save,
images --format, image inspect -f, history, tag, rmi and its refusals, pull and push against a
loopback docker-registry, push with credentials to an htpasswd registry) and docker-py
(images.load/list/get/tag/save/remove/pull/push/prune, registry data); plus Docker-style
errors for bad requests."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest
import registry_fixtures as rf
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_support import start_daemon

from conftest import EngineEnv, need_root, need_tool

pytestmark = [pytest.mark.root]


@pytest.fixture
def busybox_archive(engine_env: EngineEnv, tmp_path: Path) -> Path:
    """A docker-archive of busybox:latest, made daemonless in a scratch engine of this test."""
    need_root()
    scratch = EngineEnv(engine_env.root / "scratch", engine_env.root / "scratch" / "data",
                        engine_env.root / "scratch" / "run", engine_env.root / "scratch" / "config.toml",
                        dict(engine_env.env))
    scratch.data_root.mkdir(parents=True)
    scratch.run_root.mkdir(parents=True)
    scratch.config_path.write_text("")
    scratch.env.update({"PYENGINE_DATA_ROOT": str(scratch.data_root), "PYENGINE_RUN_ROOT": str(scratch.run_root),
                        "PYENGINE_CONFIG": str(scratch.config_path)})
    scratch.run("import", "--change", "LABEL origin=test", str(busybox_rootfs_tar(tmp_path)), "busybox:latest",
                check=True)
    archive = tmp_path / "busybox.tar"
    scratch.run("save", "-o", str(archive), "busybox:latest", check=True)
    scratch.run("rmi", "busybox:latest", check=True)
    return archive


@pytest.fixture
def daemon(engine_env: EngineEnv):
    need_root()
    d = start_daemon(engine_env)
    yield d
    remove_all_containers(engine_env.run)
    assert d.stop() == 0


@pytest.fixture
def registry(tmp_path: Path):
    need_tool("docker-registry", "skopeo")
    reg = rf.start_registry(tmp_path / "registry")
    yield reg
    reg.stop()


def _request(daemon, method: str, path: str, body: bytes = b"",  # noqa: ANN001 - a Daemon
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"{method} {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket_path))
        s.sendall(head + body)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    reply = b"".join(chunks)
    status = int(reply.split(b" ", 2)[1])
    payload = reply.partition(b"\r\n\r\n")[2]
    if b"transfer-encoding: chunked" in reply.partition(b"\r\n\r\n")[0].lower():
        payload = _unchunk(payload)
    return status, payload


def _unchunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2:]
    return b"".join(out)


def test_docker_load_images_inspect_history_tag_save_rmi(daemon, busybox_archive, tmp_path) -> None:
    loaded = daemon.docker("load", "-i", str(busybox_archive), check=True)
    assert loaded.stdout.strip() == "Loaded image: busybox:latest"
    listed = daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", check=True).stdout.split()
    assert listed[0] == "busybox:latest" and len(listed[1]) == 12
    inspected = daemon.docker("image", "inspect", "-f", "{{.Id}} {{.Os}} {{json .RepoTags}} {{.Config.Labels.origin}}",
                              "busybox", check=True).stdout.split()
    assert inspected[0].startswith("sha256:") and inspected[0][7:19] == listed[1]
    assert inspected[1:] == ["linux", '["busybox:latest"]', "test"]
    layers = json.loads(daemon.docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", "busybox",
                                      check=True).stdout)
    assert len(layers) == 1 and layers[0].startswith("sha256:")
    history = daemon.docker("history", "busybox", check=True).stdout
    assert "pyengine import" in history and listed[1] in history

    daemon.docker("tag", "busybox", "example.com/team/bb:v1", check=True)
    names = daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()
    assert sorted(names) == ["busybox:latest", "example.com/team/bb:v1"]
    filtered = daemon.docker("images", "--filter", "reference=example.com/*/*", "--format", "{{.Repository}}",
                             check=True).stdout.split()
    assert filtered == ["example.com/team/bb"]
    labelled = daemon.docker("images", "-q", "--filter", "label=origin=test", check=True).stdout.split()
    assert set(labelled) == {listed[1]}  # one row per name, as the docker CLI lists them
    assert daemon.docker("images", "-q", "--filter", "label=origin=other", check=True).stdout.strip() == ""

    saved = tmp_path / "saved.tar"
    daemon.docker("save", "-o", str(saved), "example.com/team/bb:v1", check=True)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["example.com/team/bb:v1"]

    untagged = daemon.docker("rmi", "example.com/team/bb:v1", check=True).stdout
    assert untagged.strip() == "Untagged: example.com/team/bb:v1"
    missing = daemon.docker("image", "inspect", "example.com/team/bb:v1")
    assert missing.returncode == 1 and "No such image: example.com/team/bb:v1" in missing.stderr
    removed = daemon.docker("rmi", "busybox", check=True).stdout
    assert "Untagged: busybox:latest" in removed and f"Deleted: {inspected[0]}" in removed
    assert daemon.docker("images", "-q", check=True).stdout.strip() == ""
    # The saved archive loads back with the name it was saved under.
    again = daemon.docker("load", "-i", str(saved), check=True)
    assert again.stdout.strip() == "Loaded image: example.com/team/bb:v1"


def test_rmi_of_an_image_a_container_uses_is_refused_as_dockerd_refuses(daemon, busybox_archive, engine_env) -> None:
    daemon.docker("load", "-i", str(busybox_archive), check=True)
    image_id = daemon.docker("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    container = engine_env.run("create", "busybox", "true", check=True).stdout.strip()
    refused = daemon.docker("rmi", "busybox")
    assert refused.returncode == 1
    assert (f'conflict: unable to remove repository reference "busybox" (must force) - container '
            f"{container[:12]} is using its referenced image {image_id[7:19]}") in refused.stderr
    assert daemon.docker("images", "-q", check=True).stdout.split() == [image_id[7:19]]
    by_id = daemon.docker("rmi", image_id[7:19])
    assert by_id.returncode == 1 and "(must be forced) - image is being used by stopped container" in by_id.stderr
    # Forced, the name goes and the image stays for its container, as in Docker.
    forced = daemon.docker("rmi", "-f", "busybox", check=True)
    assert forced.stdout.strip() == "Untagged: busybox:latest"
    dangling = daemon.docker("images", "-q", "--filter", "dangling=true", check=True).stdout.split()
    assert dangling == [image_id[7:19]]
    engine_env.run("rm", container, check=True)
    pruned = daemon.client().images.prune()
    assert {"Deleted": image_id} in pruned["ImagesDeleted"] and pruned["SpaceReclaimed"] > 0
    assert daemon.docker("images", "-qa", check=True).stdout.strip() == ""


def _registry_digest(ref: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_docker_push_and_pull_with_a_loopback_registry(daemon, busybox_archive, registry) -> None:
    # 127.0.0.1:PORT needs no insecure-registries entry: plain HTTP on loopback, as dockerd allows.
    name = f"{registry.host}/test/bb:v1"
    daemon.docker("load", "-i", str(busybox_archive), check=True)
    daemon.docker("tag", "busybox", name, check=True)
    pushed = daemon.docker("push", name, check=True)
    lines = pushed.stdout.strip().splitlines()
    assert lines[0] == f"The push refers to repository [{registry.host}/test/bb]"
    assert any(line.endswith(": Pushed") for line in lines), pushed.stdout
    digest = _registry_digest(name)
    assert lines[-1].startswith(f"v1: digest: {digest} size: ")
    again = daemon.docker("push", name, check=True).stdout
    assert "Layer already exists" in again and "Pushed" not in again

    daemon.docker("rmi", name, "busybox", check=True)
    pulled = daemon.docker("pull", name, check=True).stdout
    assert "v1: Pulling from test/bb" in pulled and "Pull complete" in pulled
    assert f"Digest: {digest}" in pulled and f"Status: Downloaded newer image for {name}" in pulled
    up_to_date = daemon.docker("pull", name, check=True).stdout
    assert "Already exists" in up_to_date and f"Status: Image is up to date for {name}" in up_to_date
    missing = daemon.docker("pull", f"{registry.host}/test/nosuch:v1")
    assert missing.returncode == 1
    assert f"manifest for {registry.host}/test/nosuch:v1 not found" in missing.stderr


def test_docker_push_sends_the_logged_in_credentials(engine_env, busybox_archive, tmp_path) -> None:
    need_tool("docker-registry", "htpasswd")
    reg = rf.start_registry(tmp_path / "private", auth="htpasswd", users={"alice": "s3cret-pass"})
    try:
        # The daemon trusts the registry's CA (its config) and keeps no credentials: `docker
        # login` checks them through the daemon (POST /auth) and the CLI stores them; push
        # sends them in X-Registry-Auth.
        engine_env.write_config(f'[registries."{reg.host}"]\nca-file = "{reg.ca}"\n')
        d = start_daemon(engine_env)
        try:
            name = f"{reg.host}/private/bb:v1"
            wrong = d.docker("login", "-u", "alice", "--password-stdin", reg.host, input="wrong\n")
            assert wrong.returncode == 1
            login = d.docker("login", "-u", "alice", "--password-stdin", reg.host, input="s3cret-pass\n")
            assert login.returncode == 0 and "Login Succeeded" in login.stdout, login.stderr
            assert reg.host in json.loads((d.docker_config / "config.json").read_text())["auths"]
            d.docker("load", "-i", str(busybox_archive), check=True)
            d.docker("tag", "busybox", name, check=True)
            pushed = d.docker("push", name, check=True).stdout
            assert "v1: digest: sha256:" in pushed
            d.docker("logout", reg.host, check=True)
            refused = d.docker("push", name)
            assert refused.returncode == 1 and "requires authentication" in refused.stderr, refused.stderr
            client = d.client()
            d.docker("rmi", name, check=True)
            import docker.errors

            with pytest.raises(docker.errors.APIError, match="requires authentication"):
                client.images.pull(f"{reg.host}/private/bb", tag="v1")
            image = client.images.pull(f"{reg.host}/private/bb", tag="v1",
                                       auth_config={"username": "alice", "password": "s3cret-pass"})
            assert name in image.tags
        finally:
            assert d.stop() == 0
    finally:
        reg.stop()


def test_docker_py_images(daemon, busybox_archive, registry) -> None:
    client = daemon.client()
    loaded = client.images.load(busybox_archive.read_bytes())
    assert [i.tags for i in loaded] == [["busybox:latest"]]
    image = client.images.get("busybox")
    assert image.labels == {"origin": "test"} and image.id.startswith("sha256:")
    assert image.tag("mine/bb", "t1") is True
    assert {t for i in client.images.list() for t in i.tags} == {"busybox:latest", "mine/bb:t1"}
    assert [i.tags for i in client.images.list(name="mine/bb")] == [["busybox:latest", "mine/bb:t1"]]
    archive = b"".join(image.save(named=True))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert "manifest.json" in tar.getnames()
    client.images.remove("mine/bb:t1")
    assert client.images.get("busybox").tags == ["busybox:latest"]

    name = f"{registry.host}/py/bb"
    image.tag(name, "v2")
    events = list(client.images.push(name, tag="v2", stream=True, decode=True))
    assert events[0] == {"status": f"The push refers to repository [{name}]"}
    aux = [e["aux"] for e in events if "aux" in e]
    assert aux and aux[0]["Tag"] == "v2" and aux[0]["Digest"] == _registry_digest(f"{name}:v2")
    data = client.images.get_registry_data(f"{name}:v2")
    assert data.id == aux[0]["Digest"] and data.has_platform("linux/amd64")
    client.images.remove(f"{name}:v2")
    client.images.remove("busybox", force=True)
    pulled = client.images.pull(name, tag="v2")
    assert pulled.tags == [f"{name}:v2"] and pulled.id == image.id
    import docker.errors

    with pytest.raises(docker.errors.NotFound):
        client.images.get("nosuch:1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.remove("nosuch:1")


def test_bad_image_requests_are_docker_errors(daemon, busybox_archive) -> None:
    status, body = _request(daemon, "POST", "/v1.45/images/create")
    assert status == 400 and "fromImage" in json.loads(body)["message"]
    status, body = _request(daemon, "POST", "/v1.45/images/create?fromImage=Bad:Name!")
    assert status == 400 and "invalid reference format" in json.loads(body)["message"]
    status, body = _request(daemon, "GET", "/v1.45/images/nosuch/json")
    assert status == 404 and json.loads(body) == {"message": "No such image: nosuch"}
    status, body = _request(daemon, "GET", '/v1.45/images/json?filters={"bogus":["x"]}')
    assert status == 400 and json.loads(body) == {"message": "invalid filter 'bogus'"}
    status, body = _request(daemon, "POST", "/v1.45/images/load", b"this is not a tar archive")
    assert status == 400, body
    status, body = _request(daemon, "POST", "/v1.45/images/create?fromImage=127.0.0.1:1/x&tag=v1",
                            headers={"X-Registry-Auth": "%%%not-base64"})
    assert status == 400 and "X-Registry-Auth" in json.loads(body)["message"]
    # Import from the body: a rootfs tarball becomes an image, its id the stream's status.
    rootfs = busybox_archive.parent / "busybox-rootfs.tar"
    status, body = _request(daemon, "POST", "/v1.45/images/create?fromSrc=-&repo=imported&tag=v1&changes=CMD%20sh",
                            rootfs.read_bytes())
    assert status == 200, body
    image_id = json.loads(body.splitlines()[-1])["status"]
    inspected = json.loads(_request(daemon, "GET", "/v1.45/images/imported:v1/json")[1])
    assert inspected["Id"] == image_id and inspected["Config"]["Cmd"] == ["/bin/sh", "-c", "sh"]
    assert _request(daemon, "GET", "/_ping")[0] == 200


def test_docker_build_and_docker_py_build(daemon, busybox_archive, engine_env, tmp_path) -> None:
    daemon.docker("load", "-i", str(busybox_archive), check=True)
    context = tmp_path / "context"
    context.mkdir()
    (context / "file.txt").write_text("from the context\n")
    (context / "Dockerfile").write_text('FROM busybox\nARG WHO=nobody\nRUN echo "hello $WHO" > /greeting\n'
                                        'COPY file.txt /file.txt\nLABEL stage=test\nCMD ["cat", "/greeting"]\n')
    built = daemon.docker("build", "-t", "built:v1", "--build-arg", "WHO=docker", str(context), check=True)
    lines = built.stdout.splitlines()
    assert "Step 1/6 : FROM busybox" in lines and "Step 3/6 : RUN echo \"hello $WHO\" > /greeting" in lines
    short = lines[-2].removeprefix("Successfully built ")
    assert lines[-1] == "Successfully tagged built:v1" and len(short) == 12
    image_id = daemon.docker("image", "inspect", "-f", "{{.Id}} {{.Config.Labels.stage}}", "built:v1",
                             check=True).stdout.split()
    assert image_id[0][7:19] == short and image_id[1] == "test"
    # The intermediate images of the build show only with -a.
    assert daemon.docker("images", "-q", "--filter", "dangling=true", check=True).stdout.strip() == ""
    cached = daemon.docker("build", "-q", "-t", "built:v1", "--build-arg", "WHO=docker", str(context), check=True)
    assert cached.stdout.strip() == image_id[0]

    (context / "Dockerfile.bad").write_text("FROM busybox\nRUN exit 3\n")
    failed = daemon.docker("build", "-f", str(context / "Dockerfile.bad"), str(context))
    assert failed.returncode == 3
    assert "The command '/bin/sh -c exit 3' returned a non-zero code: 3" in failed.stderr

    client = daemon.client()
    image, log = client.images.build(path=str(context), tag="py-built:v2", buildargs={"WHO": "py"}, rm=True)
    assert "py-built:v2" in image.tags and image.labels == {"origin": "test", "stage": "test"}  # base + own
    assert any("Successfully tagged py-built:v2" in entry.get("stream", "") for entry in log)
    import docker.errors

    with pytest.raises(docker.errors.BuildError, match="returned a non-zero code: 3"):
        client.images.build(path=str(context), dockerfile="Dockerfile.bad")
    assert engine_env.run("ps", "-aq", check=True).stdout.strip() == ""  # no build container is left
    intermediate = set(daemon.docker("images", "-aq", check=True).stdout.split()) - \
        set(daemon.docker("images", "-q", check=True).stdout.split())
    assert intermediate  # the step cache's images, hidden without -a
    pruned = daemon.docker("builder", "prune", "-f", check=True).stdout
    assert "Deleted build cache objects:" in pruned and "Total reclaimed space:" in pruned
    assert set(daemon.docker("images", "-aq", check=True).stdout.split()) == \
        set(daemon.docker("images", "-q", check=True).stdout.split())


def test_docker_commit_makes_an_image_of_a_container(daemon, busybox_archive, engine_env) -> None:
    daemon.docker("load", "-i", str(busybox_archive), check=True)
    container = engine_env.run("create", "--name", "src", "busybox", "true", check=True).stdout.strip()
    committed = daemon.docker("commit", "-c", 'CMD ["echo", "committed"]', "-m", "a message", "-a", "Jane <j@x>",
                              "src", "committed:v1", check=True)
    image_id = committed.stdout.strip()
    assert image_id.startswith("sha256:")
    shown = json.loads(daemon.docker("image", "inspect", "committed:v1", check=True).stdout)[0]
    assert shown["Id"] == image_id and shown["Config"]["Cmd"] == ["echo", "committed"]
    assert shown["Author"] == "Jane <j@x>" and shown["Comment"] == "a message"
    missing = daemon.docker("commit", "nosuch", "x:1")
    assert missing.returncode == 1 and "nosuch" in missing.stderr
    engine_env.run("rm", container, check=True)
