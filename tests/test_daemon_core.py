"""The daemon's core: it answers the docker CLI's version negotiation, Docker-style errors,
and the versioned and unversioned paths."""

from __future__ import annotations

import json
import socket

import pytest
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
