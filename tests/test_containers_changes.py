"""commit, diff, export and cp end to end through the CLI, on real containers and both drivers.

Every test runs as root: containers are started for real, the image store and the storage
driver write real layers, and cp goes through the container's own root filesystem.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv

DRIVERS = ["vfs", "overlay"]

SETUP = ("echo hi > /tmp/new; rm /etc/group; mkdir /root/d; echo inner > /root/d/f; "
         "ln -s /etc/passwd /root/d/lnk; ln -s / /root/up; ln -s ../../.. /root/d/rel; chmod 4751 /root/d/f")


@pytest.fixture(params=DRIVERS)
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory, driver=request.param)


@pytest.fixture
def changed(engine: EngineEnv) -> str:
    """A stopped container with additions, a deletion, symlinks (one to /) and a setuid file."""
    engine.run("run", "--name", "box", "busybox", "sh", "-c", SETUP, check=True)
    return "box"


def _inspect(engine: EngineEnv, ref: str) -> dict:
    return json.loads(engine.run("image", "inspect", ref, check=True).stdout)[0]


def test_diff_lists_added_changed_deleted_like_docker(engine: EngineEnv, changed: str) -> None:
    lines = engine.run("diff", changed, check=True).stdout.splitlines()
    # Parent directories of changes are C; the runtime's own mount points are not listed.
    assert lines == ["C /etc", "D /etc/group", "C /root", "A /root/d", "A /root/d/f", "A /root/d/lnk",
                     "A /root/d/rel", "A /root/up", "C /tmp", "A /tmp/new"]


def test_diff_of_unknown_container_is_one_line(engine: EngineEnv) -> None:
    result = engine.run("diff", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == "pyengine: error: no such container: nope"


def test_commit_makes_image_with_changes_and_config(engine: EngineEnv, changed: str) -> None:
    result = engine.run("commit", "-c", 'CMD ["cat", "/tmp/new"]', "-c", "ENV A=b C=d", "-c", "EXPOSE 80 53/udp",
                        "-c", "LABEL k=v", "-c", "WORKDIR /root", "-c", "USER app", "-m", "the message",
                        "-a", "Jane <j@example.com>", changed, "snap:1", check=True)
    image_id = result.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    data = _inspect(engine, "snap:1")
    assert data["Id"] == image_id
    assert data["Author"] == "Jane <j@example.com>"
    config = data["Config"]
    assert config["Cmd"] == ["cat", "/tmp/new"]
    assert "A=b" in config["Env"] and "C=d" in config["Env"]
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert config["Labels"] == {"k": "v"}
    assert config["WorkingDir"] == "/root" and config["User"] == "app"
    base = _inspect(engine, "busybox")
    assert data["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
    assert len(data["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
    assert engine.run("run", "--rm", "--user", "root", "snap:1", check=True).stdout == "hi\n"
    out = engine.run("run", "--rm", "--user", "root", "snap:1", "sh", "-c",
                     "ls /etc/group; stat -c '%a %U' /root/d/f; readlink /root/d/lnk; pwd; id -u").stdout
    assert out.splitlines() == ["4751 root", "/etc/passwd", "/root", "0"]
    history = engine.run("history", "--no-trunc", "snap:1", check=True).stdout.splitlines()
    assert "sh -c " + SETUP in history[1] and "the message" in history[1]


def test_commit_without_changes_adds_no_layer(engine: EngineEnv) -> None:
    engine.run("create", "--name", "idle", "busybox", "true", check=True)
    engine.run("commit", "idle", "same:1", check=True)
    assert _inspect(engine, "same:1")["RootFS"] == _inspect(engine, "busybox")["RootFS"]


def test_commit_running_container_pauses_it_and_keeps_it_running(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "busybox", "sh", "-c", "echo live > /live; sleep 60", check=True).stdout.strip()
    for _ in range(100):
        if "A /live" in engine.run("diff", cid).stdout:
            break
    engine.run("commit", cid, "live:1", check=True)
    assert engine.run("run", "--rm", "live:1", "cat", "/live", check=True).stdout == "live\n"
    state = json.loads(engine.run("inspect", cid, check=True).stdout)[0]["State"]
    assert state["Status"] == "running"


def test_commit_bad_change_is_one_line_and_makes_nothing(engine: EngineEnv, changed: str) -> None:
    before = engine.run("images", "-q").stdout
    result = engine.run("commit", "-c", "RUN echo no", changed, "bad:1")
    assert result.returncode == 2
    assert result.stderr.strip() == "pyengine: error: RUN is not a valid change command"
    assert engine.run("images", "-q").stdout == before


def test_export_is_whole_filesystem(engine: EngineEnv, changed: str) -> None:
    data = engine.run("export", changed, input=b"", check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
    assert {"bin/busybox", "etc/passwd", "tmp/new", "root/d/f", "root/d/lnk"} <= names
    assert "etc/group" not in names


def test_export_to_file(engine: EngineEnv, changed: str, tmp_path: Path) -> None:
    out = tmp_path / "fs.tar"
    engine.run("export", "-o", str(out), changed, check=True)
    with tarfile.open(out) as tar:
        member = tar.getmember("root/d/f")
        assert member.mode == 0o4751 and tar.extractfile(member).read() == b"inner\n"
        link = tar.getmember("root/up")
        assert link.issym() and link.linkname == "/"


def test_cp_out_file_dir_and_contents(engine: EngineEnv, changed: str, tmp_path: Path) -> None:
    engine.run("cp", f"{changed}:/tmp/new", str(tmp_path), check=True)
    assert (tmp_path / "new").read_text() == "hi\n"
    engine.run("cp", f"{changed}:/root/d", str(tmp_path / "copy"), check=True)
    assert (tmp_path / "copy" / "f").read_text() == "inner\n"
    assert os.readlink(tmp_path / "copy" / "lnk") == "/etc/passwd"  # kept as a link, not followed
    engine.run("cp", f"{changed}:/root/d/.", str(tmp_path / "contents"), check=True)
    assert sorted(os.listdir(tmp_path / "contents")) == ["f", "lnk", "rel"]


def test_cp_through_symlink_to_root_stays_inside_container(engine: EngineEnv, changed: str, tmp_path: Path) -> None:
    host_marker = Path("/etc/passwd").read_text()
    engine.run("cp", f"{changed}:/root/up/etc/passwd", str(tmp_path / "pw"), check=True)
    inside = (tmp_path / "pw").read_text()
    assert inside.startswith("root:x:0:0:root:/root:/bin/sh\nnobody:") and inside != host_marker
    engine.run("cp", f"{changed}:/root/d/rel/etc/passwd", str(tmp_path / "pw2"), check=True)
    assert (tmp_path / "pw2").read_text() == inside
    engine.run("cp", "-L", f"{changed}:/root/d/lnk", str(tmp_path / "pw3"), check=True)
    assert (tmp_path / "pw3").read_text() == inside


def test_cp_in_through_symlink_to_root_writes_inside_container(engine: EngineEnv, changed: str,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "probe-7f3a.txt"
    src.write_text("from host\n")
    os.chown(src, 1234, 1234)
    engine.run("cp", str(src), f"{changed}:/root/up/tmp/", check=True)
    engine.run("cp", str(src), f"{changed}:/root/d/rel/renamed.txt", check=True)
    assert not Path("/tmp/probe-7f3a.txt").exists() and not Path("/renamed.txt").exists()
    engine.run("cp", "-a", str(src), f"{changed}:/kept-owner.txt", check=True)
    data = engine.run("export", changed, input=b"", check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        plain = tar.getmember("tmp/probe-7f3a.txt")
        assert (plain.uid, plain.gid) == (0, 0)
        assert tar.extractfile(plain).read() == b"from host\n"
        assert tar.getmember("renamed.txt").isreg()
        kept = tar.getmember("kept-owner.txt")
        assert (kept.uid, kept.gid) == (1234, 1234)


def test_cp_tar_streams_both_ways(engine: EngineEnv, changed: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("streamed/a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    engine.run("cp", "-", f"{changed}:/tmp", input=buf.getvalue(), check=True)
    result = engine.run("cp", f"{changed}:/tmp/streamed", "-", input=b"", check=True)
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert tar.getnames() == ["streamed", "streamed/a.txt"]
        assert tar.extractfile("streamed/a.txt").read() == b"abc"


def test_cp_errors_are_one_line(engine: EngineEnv, changed: str, tmp_path: Path) -> None:
    missing = engine.run("cp", f"{changed}:/nope", str(tmp_path))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"pyengine: error: Could not find the file /nope in container {changed}"
    both = engine.run("cp", "a:/x", "b:/y")
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    neither = engine.run("cp", str(tmp_path), str(tmp_path / "x"))
    assert neither.returncode == 2 and "at least one container" in neither.stderr
