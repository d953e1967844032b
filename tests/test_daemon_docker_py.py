"""The daemon driven by docker-py, the Python SDK: what its calls return.

Containers: run (attached and detached), create, logs(stream=True), exec_run, put_archive and
get_archive, wait, stats(stream=False), list with filters, prune.
"""

from __future__ import annotations

import io
import tarfile

import pytest
from containers_support import busybox_rootfs_tar
from daemon_support import start_daemon

from conftest import EngineEnv, need_root


@pytest.fixture
def client(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory):
    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    d = start_daemon(engine_env)
    docker_client = d.client()
    yield docker_client
    for container in docker_client.containers.list(all=True):
        container.remove(force=True)
    assert docker_client.containers.list(all=True) == []
    docker_client.close()
    assert d.stop() == 0


def test_docker_py_run_attached_returns_output_and_detached_waits(client) -> None:
    import docker

    assert client.containers.run("busybox", ["sh", "-c", "echo hello"], remove=True) == b"hello\n"
    with pytest.raises(docker.errors.ContainerError) as failed:
        client.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 2"], remove=True, stderr=True)
    assert failed.value.exit_status == 2
    container = client.containers.run("busybox", ["sh", "-c", "echo one; echo two; exit 7"], detach=True,
                                      labels={"suite": "py"})
    assert container.wait(timeout=30) == {"StatusCode": 7, "Error": None}
    assert container.logs() == b"one\ntwo\n"
    container.reload()
    assert container.status == "exited" and container.attrs["State"]["ExitCode"] == 7
    assert container.attrs["Config"]["Image"] == "busybox"


def test_docker_py_create_logs_stream_exec_run_and_stats(client) -> None:
    container = client.containers.create("busybox", ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.2; done; "
                                                     "sleep 300"], name="streamer")
    assert client.containers.get("streamer").status == "created"
    container.start()
    stream = container.logs(stream=True, follow=True)
    lines = b""
    for chunk in stream:
        lines += chunk
        if lines.count(b"\n") >= 3:
            break
    stream.close()
    assert lines == b"line 1\nline 2\nline 3\n"
    code, output = container.exec_run(["sh", "-c", "echo from-exec; exit 3"])
    assert (code, output) == (3, b"from-exec\n")
    code, (out, err) = container.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
    assert (code, out, err) == (0, b"o\n", b"e\n")
    stats = container.stats(stream=False)
    assert stats["memory_stats"]["usage"] > 0
    assert stats["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert stats["pids_stats"]["current"] >= 1
    assert stats["name"] == "/streamer"


def test_docker_py_put_and_get_archive(client) -> None:
    container = client.containers.run("busybox", ["sleep", "300"], detach=True)
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        data = b"archived\n"
        info = tarfile.TarInfo("note.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert container.put_archive("/tmp", payload.getvalue()) is True
    assert container.exec_run(["cat", "/tmp/note.txt"]).output == b"archived\n"
    chunks, stat = container.get_archive("/tmp/note.txt")
    assert stat["name"] == "note.txt" and stat["size"] == len(b"archived\n")
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        assert tar.extractfile("note.txt").read() == b"archived\n"


def test_docker_py_list_filters_and_prune(client) -> None:
    running = client.containers.run("busybox", ["sleep", "300"], detach=True, labels={"role": "web"}, name="web")
    done = client.containers.run("busybox", ["true"], detach=True, labels={"role": "job"}, name="job")
    done.wait(timeout=30)
    assert [c.name for c in client.containers.list()] == ["web"]
    assert {c.name for c in client.containers.list(all=True)} == {"web", "job"}
    assert [c.name for c in client.containers.list(all=True, filters={"label": "role=job"})] == ["job"]
    assert [c.name for c in client.containers.list(filters={"status": "exited"})] == ["job"]
    assert [c.name for c in client.containers.list(all=True, filters={"name": "we"})] == ["web"]
    pruned = client.containers.prune()
    assert pruned["ContainersDeleted"] == [done.id]
    assert [c.id for c in client.containers.list(all=True)] == [running.id]
