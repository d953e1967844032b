"""Image references, normalised as Docker does: ``busybox`` -> ``docker.io/library/busybox:latest``.

Owns parsing and printing of ``[host[:port]/]path[:tag][@sha256:hex]``; used by the image store,
the CLI and the registry client. Imports nothing but the errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyengine.errors import UsageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = {"index.docker.io", "registry-1.docker.io"}
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?$"
                        r"|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    """A normalised reference: domain, repository path, and a tag and/or a digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """``docker.io/library/busybox``: the name without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """The short name Docker prints: ``busybox``, ``user/app``, ``host:5000/app``."""
        if self.domain == DEFAULT_DOMAIN:
            return self.path[len(OFFICIAL_PREFIX):] if self.path.startswith(OFFICIAL_PREFIX) else self.path
        return self.repository

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        text = self.familiar_repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, default_tag: bool = True) -> Reference:
    """Parse and normalise ``text``; a tag ``latest`` is added when there is neither tag nor digest.

    Raises :class:`UsageError` for anything Docker would refuse.
    """
    original = text
    if not text or text != text.strip():
        raise UsageError(f"invalid reference format: {original!r}")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise UsageError(f"invalid reference format: {original!r} (bad digest)")
    tag = None
    slash, colon = text.rfind("/"), text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid reference format: {original!r} (bad tag)")
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = first, rest
        if not _DOMAIN_RE.match(domain):
            raise UsageError(f"invalid reference format: {original!r} (bad registry host)")
    else:
        domain, path = DEFAULT_DOMAIN, text
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if not _PATH_RE.match(path):
        if path.lower() != path:
            raise UsageError(f"invalid reference format: repository name must be lowercase: {original!r}")
        raise UsageError(f"invalid reference format: {original!r}")
    if len(f"{domain}/{path}") > 255:
        raise UsageError(f"invalid reference format: {original!r} (name longer than 255 characters)")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def looks_like_id(text: str) -> bool:
    """True for ``sha256:<hex>``, a full hex id or a hex prefix of at least 4 characters."""
    hexpart = text[len("sha256:"):] if text.startswith("sha256:") else text
    return 4 <= len(hexpart) <= 64 and all(c in "0123456789abcdef" for c in hexpart)
