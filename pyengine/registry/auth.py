"""Stored registry credentials (``login``/``logout``) and their lookup order.

Owns the credentials file: ``$PYENGINE_AUTH_FILE``, else ``$XDG_CONFIG_HOME/pyengine/auth.json``,
else ``~/.config/pyengine/auth.json``; Docker's layout (``{"auths": {host: {"auth": b64}}}``),
always mode 0600 and replaced atomically. Lookup asks plugins first
(``pyengine_get_registry_credentials``, a credential helper), then this file.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from pyengine.drivers.registry import Credentials
from pyengine.errors import ConfigError


def auth_file_path() -> Path:
    explicit = os.environ.get("PYENGINE_AUTH_FILE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pyengine" / "auth.json"


def normalise_host(host: str) -> str:
    """Docker Hub is stored under one name whatever the user typed."""
    host = host.removeprefix("https://").removeprefix("http://").rstrip("/")
    if host in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        return "docker.io"
    return host


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"auths": {}}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"credentials file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"credentials file {path} is not a JSON object")
    data.setdefault("auths", {})
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the first byte: the secret is never readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stored_credentials(host: str) -> Credentials | None:
    entry = _load(auth_file_path())["auths"].get(normalise_host(host))
    if not entry or "auth" not in entry:
        return None
    user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
    return Credentials(user, secret)


def store_credentials(host: str, creds: Credentials) -> Path:
    path = auth_file_path()
    data = _load(path)
    token = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
    data["auths"][normalise_host(host)] = {"auth": token}
    _save(path, data)
    return path


def remove_credentials(host: str) -> bool:
    path = auth_file_path()
    data = _load(path)
    if data["auths"].pop(normalise_host(host), None) is None:
        return False
    _save(path, data)
    return True


def lookup(host: str, plugins: Any | None) -> Credentials | None:
    """Plugins (credential helpers) first, then the credentials file."""
    if plugins is not None:
        found = plugins.registry_credentials(normalise_host(host))
        if found is not None:
            return found
    return stored_credentials(host)
