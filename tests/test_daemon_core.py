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
