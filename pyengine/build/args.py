"""Build-arg scoping: which ARG values each stage sees, as BuildKit scopes them.

``BuildArgs`` holds what one build was given (``--build-arg`` values, the target and build
platforms) and the global ARGs before the first FROM; ``global_scope()`` is what FROM lines
expand against. ``StageArgs`` is one stage's view: a global ARG, an automatic platform ARG
(TARGETARCH, BUILDPLATFORM, ...) or a ``--build-arg`` is visible in a stage only once the
stage declares it with ``ARG NAME``; a ``--build-arg`` beats an ARG default. The predefined
proxy ARGs (HTTP_PROXY, ...) need no declaration. ``unused_warning()`` gives Docker's
"[Warning] One or more build-args [X] were not consumed". Pure: no storage, no images.
"""

from __future__ import annotations

#: the proxy variables Docker passes to RUN without an ARG declaration
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")

#: the automatic platform ARGs, global-scope, declared in a stage with ``ARG NAME``
PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                 "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")


def host_platform() -> str:
    """This host as an OCI platform string: ``linux/amd64`` on x86_64, ``linux/arm64`` ..."""
    raise NotImplementedError


def platform_args(target_platform: str | None = None,
                  build_platform: str | None = None) -> dict[str, str]:
    """The eight automatic platform ARGs' values (both platforms default to the host)."""
    raise NotImplementedError


class BuildArgs:
    """One build's args: ``--build-arg`` values, the platforms, the global ARG declarations."""

    def __init__(self, build_args=None, global_args=(), target_platform=None,
                 build_platform=None, escape="\\") -> None:
        raise NotImplementedError

    def global_scope(self) -> dict[str, str]:
        """What a FROM line (image word, --platform) expands against."""
        raise NotImplementedError

    def stage(self) -> StageArgs:
        """A fresh view for one stage (nothing declared yet)."""
        raise NotImplementedError

    def unused(self) -> list[str]:
        """``--build-arg`` names no built stage (nor the global scope) declared, sorted."""
        raise NotImplementedError

    def unused_warning(self) -> str | None:
        """Docker's warning for ``unused()``, or None when every build-arg was consumed."""
        raise NotImplementedError


class StageArgs:
    """The ARGs one stage has declared so far and their values."""

    def declare(self, name: str, default: str | None) -> None:
        """``ARG NAME[=default]`` (default already expanded): its value is the build-arg if
        given, else this default, else a global ARG's value (re-declaration), else unset."""
        raise NotImplementedError

    def values(self) -> dict[str, str]:
        """Declared ARGs that have a value, in declaration order (the RUN environment's ARGs)."""
        raise NotImplementedError

    def lookup(self, env=None) -> dict[str, str]:
        """What words expand against: these ARG values overlaid by ``env`` (ENV beats ARG)."""
        raise NotImplementedError
