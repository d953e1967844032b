"""Who may talk to the daemon, and how it lives and dies: the Unix socket's owner, group and
mode (a user outside the group cannot connect, a member can without root), mutual TLS on TCP
(no certificate, another CA's: refused), systemd socket activation (``fd://``), the
authorization hook with the peer's user, SIGTERM (requests in flight finish) and SIGHUP."""

from __future__ import annotations

import grp
import http.server
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import registry_fixtures as rf
from core_helpers import make_plugin
from daemon_support import Daemon, start_daemon, wait_for_socket

from conftest import EngineEnv, need_root, need_tool

NOBODY = 65534


@pytest.fixture
def pyengine_group() -> int:
    """The ``pyengine`` system group (what the package's install makes); made here only when
    missing, and then removed again."""
    need_root()
    need_tool("groupadd", "groupdel", "setpriv")
    try:
        gid, created = grp.getgrnam("pyengine").gr_gid, False
    except KeyError:
        subprocess.run(["groupadd", "--system", "pyengine"], check=True, capture_output=True)
        gid, created = grp.getgrnam("pyengine").gr_gid, True
    yield gid
    if created:
        subprocess.run(["groupdel", "pyengine"], capture_output=True)


@pytest.fixture
def open_base() -> Path:
    """A directory every user can pass (as /run is), for a run root the engine makes itself."""
    base = Path(tempfile.mkdtemp(prefix="pe-sec-", dir="/tmp"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _as_nobody(*argv: str, groups: list[int] | None = None, env: dict[str, str] | None = None,
               input: str | None = None) -> subprocess.CompletedProcess:
    ids = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), *ids, *argv],
                          capture_output=True, text=True, timeout=60, env=env, input=input)


_CONNECT = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n"
            "except OSError as exc:\n    print(exc.errno)\nelse:\n    print('connected')\n")


def test_unix_socket_is_root_group_0660_outsiders_get_eacces_members_use_it(
        engine_env: EngineEnv, pyengine_group: int, open_base: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from containers_support import busybox_rootfs_tar, remove_all_containers

    engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest", check=True)
    run_root = open_base / "run"  # made by the engine, as /run/pyengine is
    socket_path = run_root / "pyengine.sock"  # the default path: <run-root>/pyengine.sock
    daemon = start_daemon(engine_env, socket_path=socket_path, env={"PYENGINE_RUN_ROOT": str(run_root)})
    try:
        info = os.stat(socket_path)
        assert stat.S_ISSOCK(info.st_mode)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, pyengine_group, 0o660)
        assert stat.S_IMODE(os.stat(run_root).st_mode) & 0o011, "the group must be able to pass the run root"

        outsider = _as_nobody("/usr/bin/python3", "-c", _CONNECT, str(socket_path))
        assert outsider.stdout.strip() == "13", outsider  # EACCES at connect

        member = _as_nobody("/usr/bin/python3", "-c", _CONNECT, str(socket_path), groups=[pyengine_group])
        assert member.stdout.strip() == "connected", member
        config_dir = open_base / "nobody-docker"
        config_dir.mkdir()
        os.chown(config_dir, NOBODY, NOBODY)
        env = {"PATH": os.environ["PATH"], "HOME": str(config_dir), "DOCKER_CONFIG": str(config_dir),
               "DOCKER_HOST": f"unix://{socket_path}"}
        version = _as_nobody("docker", "version", "--format", "{{.Server.Os}} {{.Server.APIVersion}}",
                             groups=[pyengine_group], env=env)
        assert (version.returncode, version.stdout.strip()) == (0, "linux 1.45"), version
        info_out = _as_nobody("docker", "info", "--format", "{{.Driver}} {{.CgroupDriver}}", groups=[pyengine_group],
                              env=env)
        assert info_out.returncode == 0 and info_out.stdout.strip().endswith(" cgroupfs"), info_out
        # A member runs containers without root: membership is root-equivalent (docs/daemon.md).
        ran = _as_nobody("docker", "run", "--rm", "busybox", "true", groups=[pyengine_group], env=env)
        assert ran.returncode == 0, (ran, daemon.log()[-3000:])
        failed = _as_nobody("docker", "run", "--rm", "busybox", "sh", "-c", "exit 3", groups=[pyengine_group], env=env)
        assert failed.returncode == 3, failed
        refused = _as_nobody("docker", "version", groups=None, env=env)
        assert refused.returncode != 0 and "permission denied" in refused.stderr.lower(), refused
    finally:
        remove_all_containers(lambda *args, **kw: subprocess.run(
            [sys.executable, "-m", "pyengine", *args], env={**engine_env.env, "PYENGINE_RUN_ROOT": str(run_root)},
            capture_output=True, text=True))
        assert daemon.stop() == 0
    assert not socket_path.exists()  # removed at exit


def test_socket_without_its_group_is_root_only(engine_env: EngineEnv) -> None:
    need_root()
    daemon = start_daemon(engine_env, "--group", "no-such-group-here")
    try:
        info = os.stat(daemon.socket_path)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
        assert "daemon.group_missing" in daemon.log()
    finally:
        assert daemon.stop() == 0


# -- TLS ------------------------------------------------------------------------------------------
def _client_cert(tls_dir: Path, name: str) -> tuple[Path, Path]:
    """A client certificate (CN=name, clientAuth) signed by the CA ``rf.make_ca`` made in tls_dir."""
    key, csr, crt = tls_dir / "private" / f"{name}.key", tls_dir / "private" / f"{name}.csr", tls_dir / f"{name}.crt"
    rf._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ext = tls_dir / f"{name}.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n")
    ca_key = tls_dir / "private" / "ca.key"
    rf._openssl("x509", "-req", "-in", str(csr), "-CA", str(tls_dir / "ca.crt"), "-CAkey", str(ca_key),
                "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return crt, key


REFUSE_INFO = """
from pyengine.plugin import hookimpl


@hookimpl
def pyengine_authorize_request(method, path, user):
    if path == "/info":
        return f"user {user} may not {method} {path}"
    return None
"""


def test_tls_verify_refuses_no_certificate_and_another_cas_accepts_a_good_one(
        engine_env: EngineEnv, tmp_path: Path) -> None:
    need_root()
    need_tool("openssl")
    ours, theirs = rf.make_ca(tmp_path / "ours"), rf.make_ca(tmp_path / "theirs")
    good_cert, good_key = _client_cert(tmp_path / "ours", "alice")
    foreign_cert, foreign_key = _client_cert(tmp_path / "theirs", "mallory")
    port = rf.free_port()
    env = make_plugin(tmp_path / "site", "refuse-info", REFUSE_INFO)
    daemon = start_daemon(engine_env, "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(ours["ca"]),
                          "--tlscert", str(ours["cert"]), "--tlskey", str(ours["key"]), env=env)
    try:
        tcp = ["-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(ours["ca"])]
        good = daemon.docker(*tcp, "--tlscert", str(good_cert), "--tlskey", str(good_key), "version",
                             env={"DOCKER_HOST": ""})
        assert good.returncode == 0 and "Server: pyengine" in good.stdout, good.stderr
        # The authorization hook sees the certificate's subject as the user.
        refused = daemon.docker(*tcp, "--tlscert", str(good_cert), "--tlskey", str(good_key), "info",
                                env={"DOCKER_HOST": ""})
        assert refused.returncode != 0
        assert "authorization denied by plugin: user CN=alice may not GET /info" in refused.stderr
        none = daemon.docker(*tcp, "version", env={"DOCKER_HOST": ""})
        assert none.returncode != 0 and "Server: pyengine" not in none.stdout
        foreign = daemon.docker(*tcp, "--tlscert", str(foreign_cert), "--tlskey", str(foreign_key), "version",
                                env={"DOCKER_HOST": ""})
        assert foreign.returncode != 0 and "Server: pyengine" not in foreign.stdout
        # Nor does plain HTTP get through the TLS port.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"OK" not in plain.recv(4096)
        assert theirs["ca"] != ours["ca"]
        # The Unix socket's peer is root, by SO_PEERCRED.
        local = daemon.docker("info")
        assert "authorization denied by plugin: user root may not GET /info" in local.stderr
    finally:
        assert daemon.stop() == 0


def test_plain_tcp_beyond_loopback_is_refused_without_insecure_tcp(engine_env: EngineEnv) -> None:
    result = engine_env.run("daemon", "-H", "tcp://0.0.0.0:2375")
    assert result.returncode == 2
    assert "refusing to serve tcp://0.0.0.0:2375 without TLS" in result.stderr and "--insecure-tcp" in result.stderr
    result = engine_env.run("daemon", "-H", "tcp://[::]:2375", "--tlscert", "/nonexistent")
    assert result.returncode == 2


def test_plain_tcp_on_loopback_serves(engine_env: EngineEnv) -> None:
    need_root()
    port = rf.free_port()
    daemon = start_daemon(engine_env, "-H", f"tcp://127.0.0.1:{port}")
    try:
        result = daemon.docker("-H", f"tcp://127.0.0.1:{port}", "version", "--format", "{{.Server.APIVersion}}",
                               env={"DOCKER_HOST": ""}, check=True)
        assert result.stdout.strip() == "1.45"
    finally:
        assert daemon.stop() == 0


# -- systemd socket activation ----------------------------------------------------------------
_ACTIVATE = """
import os, socket, sys
path, listen_pid = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)  # systemd's first passed descriptor
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid()) if listen_pid == "self" else listen_pid
os.execv(sys.executable, [sys.executable, "-m", "pyengine", "daemon", "-H", "fd://"])
"""


def test_fd_host_serves_the_socket_systemd_passed(engine_env: EngineEnv, tmp_path: Path) -> None:
    need_root()
    path = tmp_path / "activated.sock"
    log_path = tmp_path / "activated.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", _ACTIVATE, str(path), "self"], env=engine_env.env,
                                   stdout=log, stderr=subprocess.STDOUT)
    wait_for_socket(path, process, log_path)
    docker_config = tmp_path / "dc"
    docker_config.mkdir()
    daemon = Daemon(process, path, engine_env.env, docker_config, log_path)
    try:
        result = daemon.docker("version", "--format", "{{.Server.Version}}", check=True)
        assert result.stdout.strip()
        assert "listening on fd://" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_fd_host_without_sockets_for_this_process_is_an_error(engine_env: EngineEnv, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", _ACTIVATE, str(tmp_path / "a.sock"), "1"], env=engine_env.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "fd:// given but systemd passed no sockets (LISTEN_FDS)" in result.stderr
    assert "Traceback" not in result.stderr


# -- authorization ----------------------------------------------------------------------------
REFUSE_DELETE = """
from pyengine.plugin import hookimpl


@hookimpl
def pyengine_authorize_request(method, path, user):
    if method == "DELETE" and path.startswith("/containers/"):
        return f"user {user} may not remove containers here"
    return None
"""


def test_authorize_plugin_refusing_delete_makes_docker_rm_fail_and_keeps_the_container(
        engine_env: EngineEnv, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    need_root()
    from containers_support import busybox_rootfs_tar, remove_all_containers

    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    engine_env.run("import", str(tar), "busybox:latest", check=True)
    engine_env.run("create", "--name", "keepme", "busybox", "true", check=True)
    env = make_plugin(tmp_path / "site", "refuse-delete", REFUSE_DELETE)
    daemon = start_daemon(engine_env, env=env)
    try:
        result = daemon.docker("rm", "keepme")
        assert result.returncode != 0
        assert "authorization denied by plugin: user root may not remove containers here" in result.stderr
        assert daemon.docker("version").returncode == 0  # what the plugin allows still works
        listed = engine_env.run("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split()
        assert "keepme" in listed
    finally:
        assert daemon.stop() == 0
        remove_all_containers(engine_env.run)


# -- signals ------------------------------------------------------------------------------------
class _SlowRegistry:
    """A plain-HTTP registry on loopback whose /v2/ answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.startswith("/v2/"):
                    time.sleep(outer.delay)
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.delay = delay
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _post(path: Path, url: str, body: dict) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(str(path))
        s.sendall(f"POST {url} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_sigterm_lets_requests_in_flight_finish_then_exits_and_removes_the_socket(engine_env: EngineEnv) -> None:
    need_root()
    registry = _SlowRegistry(delay=2.0)
    daemon = start_daemon(engine_env)
    try:
        answers: list = []
        request = threading.Thread(target=lambda: answers.append(_post(
            daemon.socket_path, "/v1.45/auth", {"username": "u", "password": "p", "serveraddress": registry.host})))
        request.start()
        time.sleep(1.0)  # the request is waiting for the registry
        daemon.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with socket.socket(socket.AF_UNIX) as late, pytest.raises(OSError):
            late.connect(str(daemon.socket_path))  # no longer accepting
        request.join(30)
        assert answers == [(200, {"Status": "Login Succeeded", "IdentityToken": ""})]
        assert daemon.process.wait(30) == 0
        assert not daemon.socket_path.exists()
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()
        registry.stop()


def test_sighup_rereads_the_config_and_a_bad_one_keeps_the_old(engine_env: EngineEnv) -> None:
    need_root()
    engine_env.write_config('log-level = "warning"\n')
    daemon = start_daemon(engine_env)
    try:
        client = daemon.client()
        assert client.info()["Debug"] is False
        engine_env.write_config('log-level = "debug"\n')
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while not client.info()["Debug"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.info()["Debug"] is True
        engine_env.write_config('log-level = "loud"\n')
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "daemon.reload_failed" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "daemon.reload_failed" in daemon.log()
        assert client.info()["Debug"] is True  # the old engine serves on
        client.close()
    finally:
        assert daemon.stop() == 0
