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

import platform as _platform
from collections.abc import Iterable, Mapping

from pyengine.build.expand import expand
from pyengine.build.instructions import Arg
from pyengine.errors import DockerfileError

#: the proxy variables Docker passes to RUN without an ARG declaration
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")

#: the automatic platform ARGs, global-scope, declared in a stage with ``ARG NAME``
PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                 "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")


_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm/v7", "armv7": "arm/v7", "armhf": "arm/v7", "armv6l": "arm/v6", "armel": "arm/v6",
    "i386": "386", "i686": "386", "386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
    "riscv64": "riscv64", "mips64": "mips64", "mips64le": "mips64le", "loong64": "loong64",
}


def host_platform() -> str:
    """This host as an OCI platform string: ``linux/amd64`` on x86_64, ``linux/arm64`` ..."""
    machine = _platform.machine().lower()
    return "linux/" + _ARCH_ALIASES.get(machine, machine)


def normalize_platform(text: str) -> tuple[str, str, str]:
    """``os/arch[/variant]`` -> (os, arch, variant) with Docker's aliases (``x86_64`` -> amd64).

    An arch alone (``arm64``) means linux; raises DockerfileError for an empty or malformed one.
    """
    parts = [p.strip().lower() for p in text.split("/")]
    if len(parts) == 1:
        parts.insert(0, "linux")
    if len(parts) not in (2, 3) or not all(parts):
        raise DockerfileError(f'invalid platform "{text}": expected os/arch[/variant]')
    os_name, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ""
    alias = _ARCH_ALIASES.get(arch, arch)
    if "/" in alias:
        alias, default_variant = alias.split("/")
        variant = variant or default_variant
    if alias == "arm64" and variant == "v8":
        variant = ""
    return os_name, alias, variant


def _platform_string(os_name: str, arch: str, variant: str) -> str:
    return f"{os_name}/{arch}/{variant}" if variant else f"{os_name}/{arch}"


def platform_args(target_platform: str | None = None,
                  build_platform: str | None = None) -> dict[str, str]:
    """The eight automatic platform ARGs' values (both platforms default to the host)."""
    build = normalize_platform(build_platform or host_platform())
    target = normalize_platform(target_platform) if target_platform else build
    values: dict[str, str] = {}
    for prefix, (os_name, arch, variant) in (("TARGET", target), ("BUILD", build)):
        values[prefix + "PLATFORM"] = _platform_string(os_name, arch, variant)
        values[prefix + "OS"] = os_name
        values[prefix + "ARCH"] = arch
        values[prefix + "VARIANT"] = variant
    return values


class BuildArgs:
    """One build's args: ``--build-arg`` values, the platforms, the global ARG declarations.

    ``build_args`` maps a name to its value; a None value (``--build-arg NAME`` with NAME unset
    in the client's environment) counts as not given, as in Docker.
    """

    def __init__(self, build_args: Mapping[str, str | None] | None = None,
                 global_args: Iterable[Arg] = (), target_platform: str | None = None,
                 build_platform: str | None = None, escape: str = "\\") -> None:
        self.given: dict[str, str] = {k: v for k, v in (build_args or {}).items() if v is not None}
        self.requested: list[str] = list(build_args or {})
        self.escape = escape
        self.platform = platform_args(target_platform, build_platform)
        self.consumed: set[str] = set()
        self._global: dict[str, str] = dict(self.platform)
        self.global_declared: set[str] = set()
        for instruction in global_args:
            for decl in instruction.args:
                self.global_declared.add(decl.name)
                self.consumed.add(decl.name)
                value = self.given.get(decl.name)
                if value is None and decl.default is not None:
                    try:
                        value = expand(decl.default, self._global, escape)
                    except DockerfileError as exc:
                        raise exc.located(instruction.line) from None
                if value is not None:
                    self._global[decl.name] = value

    def global_scope(self) -> dict[str, str]:
        """What a FROM line (image word, --platform) expands against."""
        return dict(self._global)

    def stage(self) -> StageArgs:
        """A fresh view for one stage (nothing declared yet)."""
        return StageArgs(self)

    def unused(self) -> list[str]:
        """``--build-arg`` names no built stage (nor the global scope) declared, sorted."""
        return sorted(name for name in set(self.requested)
                      if name not in self.consumed and name not in PROXY_ARGS)

    def unused_warning(self) -> str | None:
        """Docker's warning for ``unused()``, or None when every build-arg was consumed."""
        unused = self.unused()
        if not unused:
            return None
        return f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed"


class StageArgs:
    """The ARGs one stage has declared so far and their values."""

    def __init__(self, build: BuildArgs) -> None:
        self.build = build
        self._values: dict[str, str] = {}
        self.declared: list[str] = []

    def declare(self, name: str, default: str | None) -> None:
        """``ARG NAME[=default]`` (default already expanded): its value is the build-arg if
        given, else this default, else a global ARG's value (re-declaration), else unset."""
        self.build.consumed.add(name)
        if name not in self.declared:
            self.declared.append(name)
        value = self.build.given.get(name)
        if value is None:
            value = default
        if value is None:
            value = self.build._global.get(name)
        if value is None:
            self._values.pop(name, None)
        else:
            self._values.pop(name, None)
            self._values[name] = value

    def declare_instruction(self, instruction: Arg, env: Mapping[str, str] | None = None) -> None:
        """Every declaration of one ARG line, each default expanded against the scope before
        it (so ``ARG A=1 B=$A`` sees the new A, as BuildKit does)."""
        for decl in instruction.args:
            default = decl.default
            if default is not None:
                try:
                    default = expand(default, self.lookup(env), self.build.escape)
                except DockerfileError as exc:
                    raise exc.located(instruction.line) from None
            self.declare(decl.name, default)

    def values(self) -> dict[str, str]:
        """Declared ARGs that have a value, in declaration order (the RUN environment's ARGs)."""
        return dict(self._values)

    def proxy_values(self) -> dict[str, str]:
        """The proxy build-args (HTTP_PROXY, ...) given but not declared: RUN sees them too."""
        return {k: v for k, v in self.build.given.items()
                if k in PROXY_ARGS and k not in self._values}

    def lookup(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """What words expand against: these ARG values overlaid by ``env`` (ENV beats ARG)."""
        merged = dict(self._values)
        merged.update(env or {})
        return merged

    def run_environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The ARG variables a RUN adds to the image's env: declared ARGs (an ENV of the same
        name wins, so those are left out) and undeclared proxy build-args."""
        extra = {k: v for k, v in self._values.items() if k not in (env or {})}
        extra.update({k: v for k, v in self.proxy_values().items() if k not in (env or {})})
        return extra
