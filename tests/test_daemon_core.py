"""The daemon's core: it answers the docker CLI's version negotiation, Docker-style errors,
and the versioned and unversioned paths."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_support import start_daemon

from conftest import EngineEnv, need_root


@pytest.fixture
def daemon(engine_env: EngineEnv):
    need_root()
    d = start_daemon(engine_env)
    yield d
    assert d.stop() == 0


def _raw(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def _get(daemon, path: str) -> tuple[int, dict[str, str], bytes]:
    reply = _raw(str(daemon.socket_path), f"GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_docker_version_names_the_server(daemon) -> None:
    result = daemon.docker("version", check=True)
    assert "Server: pyengine" in result.stdout
    assert "API version:      1.45 (minimum version 1.24)" in result.stdout
    fmt = daemon.docker("version", "--format", "{{.Server.APIVersion}}", check=True)
    assert fmt.stdout.strip() == "1.45"


def test_ping_headers_and_prefixes(daemon) -> None:
    status, headers, body = _get(daemon, "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["api-version"] == "1.45"
    assert headers["ostype"] == "linux"
    assert "builder-version" in headers
    for path in ("/version", "/v1.24/version", "/v1.45/version"):
        status, _, body = _get(daemon, path)
        assert status == 200, path
        assert json.loads(body)["ApiVersion"] == "1.45"


def test_old_and_unknown_api_versions_are_docker_errors(daemon) -> None:
    status, _, body = _get(daemon, "/v1.10/version")
    assert status == 400
    assert "Minimum supported API version is 1.24" in json.loads(body)["message"]
    status, _, body = _get(daemon, "/v1.45/no/such/thing")
    assert status == 404
    assert json.loads(body) == {"message": "page not found"}
    status, _, body = _get(daemon, "/v1.45/swarm")
    assert status == 503
    assert "This node is not a swarm manager." in json.loads(body)["message"]
    # The daemon keeps serving after bad requests.
    assert _get(daemon, "/_ping")[0] == 200


def test_daemon_table_is_shown_by_info_with_its_sources(engine_env: EngineEnv) -> None:
    engine_env.write_config('[daemon]\nhosts = ["unix:///tmp/pe-x.sock", "tcp://127.0.0.1:2376"]\n'
                            'tlsverify = true\ngroup = "docker"\n')
    daemon_info = json.loads(engine_env.run("info", "--format", "json", check=True).stdout)["daemon"]
    source = f"file:{engine_env.config_path}"
    assert daemon_info["hosts"] == {"value": ["unix:///tmp/pe-x.sock", "tcp://127.0.0.1:2376"], "source": source}
    assert daemon_info["tlsverify"] == {"value": True, "source": source}
    assert daemon_info["group"] == {"value": "docker", "source": source}
    assert daemon_info["insecure-tcp"] == {"value": False, "source": "default"}
    text = engine_env.run("info", check=True).stdout
    assert "group         docker" in text and source in text


def test_daemon_default_socket_is_in_the_run_root(engine_env: EngineEnv) -> None:
    daemon_info = json.loads(engine_env.run("info", "--format", "json", check=True).stdout)["daemon"]
    assert daemon_info["hosts"] == {"value": [f"unix://{engine_env.run_root}/pyengine.sock"], "source": "default"}


@pytest.mark.parametrize("text, message", [
    ('[daemon]\nhost = ["unix:///x"]\n', ":2: daemon.host: unknown key (allowed in [daemon]: hosts, group"),
    ('[daemon]\nhosts = "unix:///x"\n', ":2: daemon.hosts: expected list"),
    ('[daemon]\nhosts = ["http://x"]\n', ":2: daemon.hosts: expected unix:///path, tcp://ADDR:PORT or fd://"),
    ('[daemon]\ntlsverify = "yes"\n', ":2: daemon.tlsverify: expected boolean"),
    ('[daemon]\ninsecure-tcp = 1\n', ":2: daemon.insecure-tcp: expected boolean"),
])
def test_daemon_table_is_validated(engine_env: EngineEnv, text: str, message: str) -> None:
    engine_env.write_config(text)
    for command in ("info", "daemon"):
        result = engine_env.run(command)
        assert result.returncode == 2, result
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_daemon_refuses_plain_tcp_beyond_loopback_from_the_table(engine_env: EngineEnv) -> None:
    engine_env.write_config('[daemon]\nhosts = ["tcp://0.0.0.0:2375"]\n')
    result = engine_env.run("daemon")
    assert result.returncode == 2
    assert "refusing to serve tcp://0.0.0.0:2375 without TLS" in result.stderr
    # Flags win over the table: here they ask for TLS without its files.
    result = engine_env.run("daemon", "-H", "tcp://0.0.0.0:1", "--tlsverify")
    assert result.returncode == 2
    assert "--tlsverify needs --tlscacert, --tlscert and --tlskey" in result.stderr


# -- /info, /system/df, /auth ------------------------------------------------------------------
@pytest.fixture
def busybox_daemon(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory):
    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    d = start_daemon(engine_env)
    yield d
    remove_all_containers(engine_env.run)
    assert d.stop() == 0


def test_docker_info_prints_the_engine(busybox_daemon) -> None:
    result = busybox_daemon.docker("info", check=True)
    assert "ERROR" not in result.stderr and "WARNING: API is accessible" not in result.stderr
    assert " Images: 1" in result.stdout
    assert " Storage Driver: " in result.stdout and " Cgroup Driver: cgroupfs" in result.stdout
    assert f" Docker Root Dir: {busybox_daemon.env['PYENGINE_DATA_ROOT']}" in result.stdout
    assert " Swarm: inactive" in result.stdout and "  seccomp" in result.stdout
    info = busybox_daemon.client().info()
    assert info["OSType"] == "linux" and info["NCPU"] == len(os.sched_getaffinity(0))
    assert info["CgroupVersion"] == ("2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1")
    assert info["SecurityOptions"][0] == "name=seccomp,profile=builtin"
    assert info["Containers"] == 0 and info["ServerVersion"]
    again = busybox_daemon.client().info()
    assert again["ID"] == info["ID"]  # a lasting identity


def test_info_counts_containers_run_daemonless(busybox_daemon, engine_env: EngineEnv) -> None:
    engine_env.run("run", "-d", "--name", "counted", "busybox", "sleep", "60", check=True)
    engine_env.run("create", "--name", "made", "busybox", "true", check=True)
    info = busybox_daemon.client().info()
    assert (info["Containers"], info["ContainersRunning"], info["ContainersStopped"]) == (2, 1, 1)
    fmt = busybox_daemon.docker("info", "--format", "{{.ContainersRunning}} {{.Images}}", check=True)
    assert fmt.stdout.strip() == "1 1"


def test_system_df_lists_images_containers_and_volumes(busybox_daemon, engine_env: EngineEnv) -> None:
    engine_env.run("run", "-d", "--name", "dfc", "-v", "dfvol:/data", "busybox", "sh", "-c",
                   "head -c 100000 /dev/zero > /data/f; sleep 60", check=True)
    time.sleep(0.5)
    result = busybox_daemon.docker("system", "df", check=True)
    lines = {line.split()[0] + (" " + line.split()[1] if line.startswith(("Local", "Build")) else ""): line.split()
             for line in result.stdout.splitlines()[1:]}
    assert lines["Images"][1:3] == ["1", "1"]
    assert lines["Containers"][1:3] == ["1", "1"]
    assert lines["Local Volumes"][2:4] == ["1", "1"]
    verbose = busybox_daemon.docker("system", "df", "-v", check=True).stdout
    assert "busybox      latest" in verbose and "dfc" in verbose
    assert re.search(r"dfvol\s+1\s+10\d(\.\d)?kB", verbose), verbose
    df = busybox_daemon.client().df()
    assert df["LayersSize"] > 0 and df["Images"][0]["Containers"] == 1
    assert df["Volumes"][0]["UsageData"] == {"Size": df["Volumes"][0]["UsageData"]["Size"], "RefCount": 1}
    assert df["Volumes"][0]["UsageData"]["Size"] >= 100000
    assert df["Containers"][0]["Names"] == ["/dfc"]


def test_docker_login_checks_credentials_against_the_registry(engine_env: EngineEnv, tmp_path: Path) -> None:
    need_root()
    import registry_fixtures as rf

    reg = rf.start_registry(tmp_path / "reg", auth="htpasswd", users={"alice": "s3cret"})
    try:
        engine_env.write_config(f'[registries."{reg.host}"]\nca-file = "{reg.ca}"\n')
        d = start_daemon(engine_env)
        try:
            good = d.docker("login", "-u", "alice", "--password-stdin", reg.host, input="s3cret\n")
            assert good.returncode == 0, good.stderr
            assert "Login Succeeded" in good.stdout
            stored = json.loads((d.docker_config / "config.json").read_text())
            assert reg.host in stored["auths"]  # the client keeps the credentials, as with dockerd
            bad = d.docker("login", "-u", "alice", "--password-stdin", reg.host, input="wrong\n")
            assert bad.returncode != 0
            assert "Error response from daemon: login attempt to" in bad.stderr
            assert "401 Unauthorized" in bad.stderr
            status, _, body = _request(d, "POST", "/v1.45/auth", b'{"username": "alice", "password": "s3cret", '
                                       b'"serveraddress": "' + reg.host.encode() + b'"}')
            assert (status, json.loads(body)) == (200, {"Status": "Login Succeeded", "IdentityToken": ""})
        finally:
            assert d.stop() == 0
    finally:
        reg.stop()


# -- bad input -------------------------------------------------------------------------------------
def _request(daemon, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, dict, bytes]:
    head = (f"{method} {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n").encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket_path))
        try:
            s.sendall(head + body)
        except BrokenPipeError:
            pass  # the daemon answered before reading all of a huge body
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    reply = b"".join(chunks)
    head_bytes, _, payload = reply.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    parsed = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if parsed.get("transfer-encoding") == "chunked":
        out, rest = b"", payload
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if not size:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        payload = out
    return int(lines[0].split()[1]), parsed, payload


def test_bad_input_is_a_docker_error_and_the_daemon_keeps_serving(daemon) -> None:
    cases = [
        (("POST", "/v1.45/auth", b'{"username": "a", '), 400, "invalid JSON"),
        (("POST", "/auth", b'["a list"]'), 400, "expected an object"),
        (("POST", "/v1.45/auth", b'{"username": 5, "password": "x"}'), 400,
         "json: cannot unmarshal int into field username of type str"),
        (("POST", "/v1.45/auth", b'{"username": true}'), 400, "cannot unmarshal bool into field username"),
        (("POST", "/v1.45/auth", b"{" + b" " * (17 * 1024 * 1024) + b"}"), 413, "request body too large"),
        (("GET", "/v1.45/containers/../../../etc/passwd", b""), 404, "page not found"),
        (("GET", "/v1.45/_ping/..%2F..%2Fetc%2Fpasswd", b""), 404, "page not found"),
        (("GET", "/v1.10/info", b""), 400, "client version 1.10 is too old"),
        (("GET", "/v9.99/info", b""), 400, "is too new"),
        (("GET", "/v1.x/info", b""), 404, "page not found"),
        (("GET", "/events?since=yesterday-ish", b""), 400, "invalid since"),
        (("GET", "/events?filters=%7Bnot-json", b""), 400, "invalid filter"),
        (("GET", "/events?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D", b""), 400, "invalid filter 'colour'"),
        (("GET", "/system/df?type=everything", b""), 400, "invalid type 'everything'"),
    ]
    for (method, path, body), status, message in cases:
        got, headers, payload = _request(daemon, method, path, body)
        assert got == status, (path, got, payload[:200])
        assert headers["content-type"].startswith("application/json"), (path, headers)
        assert message in json.loads(payload)["message"], (path, payload[:300])
        assert _request(daemon, "GET", "/_ping")[0] == 200
    assert "Traceback" not in daemon.log()
    assert daemon.docker("version", check=True).returncode == 0


# -- daemonless and daemon on the same stores -------------------------------------------------------
def test_daemonless_and_daemon_containers_see_each_other_across_a_daemon_restart(
        engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    daemon = start_daemon(engine_env)
    try:
        engine_env.run("run", "-d", "--name", "local1", "busybox", "sleep", "300", check=True)
        daemon.docker("run", "-d", "--name", "remote1", "busybox", "sleep", "300", check=True)
        through_daemon = daemon.docker("ps", "--format", "{{.Names}} {{.State}}", check=True).stdout.split("\n")
        assert {"local1 running", "remote1 running"} <= set(through_daemon)
        daemonless = engine_env.run("ps", "--format", "{{.Names}}", check=True).stdout.split()
        assert {"local1", "remote1"} <= set(daemonless)
        assert daemon.stop() == 0
        # Their monitors are their own processes: the daemon's exit leaves them running.
        after_stop = engine_env.run("ps", "--format", "{{.Names}} {{.State}}", check=True).stdout.split("\n")
        assert {"local1 running", "remote1 running"} <= set(after_stop)
        daemon = start_daemon(engine_env)
        again = daemon.docker("ps", "--format", "{{.Names}} {{.State}}", check=True).stdout.split("\n")
        assert {"local1 running", "remote1 running"} <= set(again)
        pid = daemon.docker("inspect", "-f", "{{.State.Pid}}", "remote1", check=True).stdout.strip()
        assert os.path.exists(f"/proc/{pid}")
        daemon.docker("rm", "-f", "local1", check=True)  # the daemon removes the daemonless one
        assert "local1" not in engine_env.run("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split()
    finally:
        remove_all_containers(engine_env.run)
        assert daemon.stop() == 0
