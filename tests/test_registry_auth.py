"""login/logout and private registries: htpasswd basic auth over TLS (a CA made by the test,
trusted through ca-file) and bearer tokens from the test's token server; search."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import imagebuild as ib
import pytest
import registry_fixtures as rf
from test_registry_distribution import manifest_digest, small_image

from conftest import need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.tools, pytest.mark.registry]

USERS = {"alice": "s3cret-pass"}


@pytest.fixture
def auth_env(engine_env, tmp_path: Path):
    auth_file = tmp_path / "cfg" / "pyengine" / "auth.json"
    engine_env.env["PYENGINE_AUTH_FILE"] = str(auth_file)
    engine_env.auth_file = auth_file
    return engine_env


@pytest.fixture
def image_layout(tmp_path: Path) -> Path:
    need_root()
    need_tool("umoci", "skopeo", "docker-registry", "htpasswd")
    return small_image(tmp_path / "small", "amd64", "small")


def test_basic_auth_over_tls_login_pull_logout(auth_env, image_layout, tmp_path) -> None:
    reg = rf.start_registry(tmp_path / "reg", auth="htpasswd", users=USERS)
    try:
        ib.run("skopeo", "--insecure-policy", "copy", "--dest-cert-dir", str(reg.ca.parent), "--dest-creds",
               "alice:s3cret-pass", f"oci:{image_layout}:small", f"docker://{reg.host}/private/app:v1")
        # Without the CA the certificate is refused, and the error says where to set one.
        untrusted = auth_env.run("pull", f"{reg.host}/private/app:v1")
        assert untrusted.returncode != 0 and "ca-file" in untrusted.stderr, untrusted.stderr
        auth_env.write_config(f'[registries."{reg.host}"]\nca-file = "{reg.ca}"\n')
        anonymous = auth_env.run("pull", f"{reg.host}/private/app:v1")
        assert anonymous.returncode != 0 and f"pyengine login {reg.host}" in anonymous.stderr, anonymous.stderr

        wrong = auth_env.run("login", "-u", "alice", "--password-stdin", reg.host, input="wrong\n")
        assert wrong.returncode != 0
        assert wrong.stderr.strip().splitlines()[-1] == \
            f"pyengine: error: login to {reg.host} failed: wrong user name or password"
        assert not auth_env.auth_file.exists()

        auth_env.run("login", "-u", "alice", "--password-stdin", reg.host, input="s3cret-pass\n", check=True)
        assert stat.S_IMODE(auth_env.auth_file.stat().st_mode) == 0o600
        assert reg.host in json.loads(auth_env.auth_file.read_text())["auths"]
        pulled = auth_env.run("pull", f"{reg.host}/private/app:v1", check=True)
        assert "Pull complete" in pulled.stdout
        pushed = auth_env.run("push", f"{reg.host}/private/app:v1", f"{reg.host}/private/copy:v2", check=True)
        assert "digest: sha256:" in pushed.stdout

        out = auth_env.run("logout", reg.host, check=True)
        assert f"Removing login credentials for {reg.host}" in out.stdout
        assert reg.host not in json.loads(auth_env.auth_file.read_text())["auths"]
        assert stat.S_IMODE(auth_env.auth_file.stat().st_mode) == 0o600
        again = auth_env.run("pull", f"{reg.host}/private/copy:v2")
        assert again.returncode != 0 and "pyengine login" in again.stderr
    finally:
        reg.stop()


def test_bearer_token_auth(auth_env, image_layout, tmp_path) -> None:
    tokens = rf.TokenServer(tmp_path / "token", USERS)
    reg = rf.start_registry(tmp_path / "reg", auth="token", token_server=tokens)
    reg.extra.append(tokens)
    try:
        auth_env.write_config(f'[registries."{reg.host}"]\ninsecure = true\n')
        ib.run("skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret-pass",
               f"oci:{image_layout}:small", f"docker://{reg.host}/private/app:v1")
        ib.run("skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret-pass",
               f"oci:{image_layout}:small", f"docker://{reg.host}/public/app:v1")
        # public/* is readable anonymously (an anonymous token), private/* is not.
        auth_env.run("pull", f"{reg.host}/public/app:v1", check=True)
        refused = auth_env.run("pull", f"{reg.host}/private/app:v1")
        assert refused.returncode != 0 and f"pyengine login {reg.host}" in refused.stderr, refused.stderr

        wrong = auth_env.run("login", "-u", "alice", "-p", "nope", reg.host)
        assert wrong.returncode != 0 and "wrong user name or password" in wrong.stderr
        assert not auth_env.auth_file.exists()
        auth_env.run("login", "-u", "alice", "-p", "s3cret-pass", reg.host, check=True)
        assert stat.S_IMODE(auth_env.auth_file.stat().st_mode) == 0o600
        auth_env.run("pull", f"{reg.host}/private/app:v1", check=True)
        pushed = auth_env.run("push", "-q", f"{reg.host}/private/app:v1", f"{reg.host}/private/pushed:v1", check=True)
        assert pushed.stdout.strip().splitlines()[-1] == manifest_digest(
            f"{reg.host}/private/pushed:v1", creds="alice:s3cret-pass")
        found = auth_env.run("search", f"{reg.host}/app", check=True)
        assert f"{reg.host}/private/app" in found.stdout and f"{reg.host}/public/app" in found.stdout
        assert "v1" in found.stdout
    finally:
        reg.stop()


def test_token_refreshed_when_it_expires_mid_pull(auth_env, tmp_path) -> None:
    """Tokens expire 5 s after issue (the registry allows 60 s of skew, so exp is 55 s in the
    past); a proxy holds each blob's first GET for 6 s, so the registry answers 401 mid-pull and
    the client must fetch a new token and carry on."""
    need_root()
    need_tool("umoci", "skopeo", "docker-registry")
    layout = small_image(tmp_path / "small", "amd64", "small")
    tokens = rf.TokenServer(tmp_path / "token", USERS, lifetime=-55)
    reg = rf.start_registry(tmp_path / "reg", auth="token", token_server=tokens)
    reg.extra.append(tokens)
    proxy = rf.BlobProxy(reg.port, delay_first=6)
    reg.extra.append(proxy)
    try:
        ib.run("skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret-pass",
               f"oci:{layout}:small", f"docker://{reg.host}/private/app:v1")
        auth_env.write_config(f'[registries."{proxy.host}"]\ninsecure = true\n')
        auth_env.run("login", "-u", "alice", "-p", "s3cret-pass", proxy.host, check=True)
        before = tokens.issued
        result = auth_env.run("pull", f"{proxy.host}/private/app:v1")
        assert result.returncode == 0, result.stderr
        assert "Pull complete" in result.stdout
        # one token for the manifest, then at least one more after the blobs' 401s
        assert tokens.issued >= before + 2
        # the held blob requests were refused as expired, then served with the new token
        refused = {d for d, status in proxy.statuses if status == 401}
        assert refused and all((d, 200) in proxy.statuses for d in refused), proxy.statuses
    finally:
        reg.stop()
