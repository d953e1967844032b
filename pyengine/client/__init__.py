"""The client layer: the engine verbs spoken over the Docker Engine API, for ``pyengine -H URL``.

``transport`` is the HTTP connection to a daemon (unix:// or tcp:// with TLS, version
negotiation, Docker's error bodies, JSON streams, hijacked connections); ``remote`` offers the
same verbs as ``local`` (the in-process engine), both answering with Docker-shaped dicts, so a
command is written once and ``-H`` only swaps which of the two it gets. Imports only the
standard library and ``pyengine.errors`` at module level: the CLI's import stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyengine.client.remote import RemoteEngine
    from pyengine.config import Config

#: the streams of a log or an attach: what ``logs`` yields beside each piece of output
STDIN, STDOUT, STDERR = 0, 1, 2


def tls_options(config: Config, environ: dict[str, str] | None = None) -> object | None:
    """The client's TLS as Docker reads it: on with ``--tlsverify`` (or DOCKER_TLS_VERIFY, or an
    https:// host); the files from the flags, else ``$DOCKER_CERT_PATH`` (else ~/.docker)
    ``ca.pem``, ``cert.pem``, ``key.pem``. None for plain HTTP."""
    from pyengine.client.transport import TlsOptions

    environ = dict(os.environ) if environ is None else environ
    host = config["host"] or ""
    if not config["tlsverify"] and not host.startswith("https://"):
        return None
    cert_dir = environ.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")

    def default(name: str) -> str | None:
        path = os.path.join(cert_dir, name)
        return path if os.path.exists(path) else None

    cert = config["tlscert"] or default("cert.pem")
    key = config["tlskey"] or (default("key.pem") if cert else None)
    return TlsOptions(verify=True, ca=config["tlscacert"] or default("ca.pem"), cert=cert, key=key)


def connect(config: Config) -> RemoteEngine:
    """The verbs of the daemon that ``config``'s host names (nothing is sent yet)."""
    from pyengine.client.remote import RemoteEngine
    from pyengine.client.transport import Transport

    return RemoteEngine(Transport(config["host"], tls_options(config)))  # type: ignore[arg-type]
