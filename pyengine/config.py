"""Per-host configuration: the TOML file, ``PYENGINE_<SETTING>`` variables and CLI flags.

Owns the list of top-level settings, their precedence (flag > env > file > auto/default) and the
validation of every table in the file; driver tables are checked against the option dataclasses
that plugins register. Imports nothing from the rest of the engine but errors and drivers.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyengine.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/pyengine/config.toml")


@dataclass(frozen=True)
class Setting:
    """A top-level setting: its name in the file, its type, default and allowed values."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    #: Docker's variable for the same thing, read when ``PYENGINE_<NAME>`` is unset
    docker_env: str | None = None

    @property
    def env(self) -> str:
        return "PYENGINE_" + self.name.upper().replace("-", "_")


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("storage-driver", str, None, "storage driver; automatic when unset"),
        Setting("data-root", str, "/var/lib/pyengine", "where images, containers and layers live"),
        Setting("run-root", str, "/run/pyengine", "sockets, monitor pids and locks"),
        Setting("log-level", str, "warning", "least severe log event shown",
                ("debug", "info", "warning", "error", "critical")),
        Setting("log-format", str, "console", "console for people, json for machines",
                ("console", "json")),
        Setting("host", str, None, "daemon to talk to (unix:///path or tcp://host:port); "
                "daemonless when unset", docker_env="DOCKER_HOST"),
        Setting("tlsverify", bool, False, "with host: TLS, the daemon verified against tlscacert",
                docker_env="DOCKER_TLS_VERIFY"),
        Setting("tlscacert", str, None, "CA the daemon's certificate must chain to "
                "[default: $DOCKER_CERT_PATH/ca.pem, else ~/.docker/ca.pem]"),
        Setting("tlscert", str, None, "this client's certificate [default: cert.pem beside tlscacert]"),
        Setting("tlskey", str, None, "this client's key [default: key.pem beside tlscacert]"),
        Setting("no-new-privileges", bool, False, "no_new_privs for every container whose "
                "--security-opt does not say otherwise (dockerd's no-new-privileges)"),
    )
}

#: top-level tables whose sub-tables are driver sections (``[storage.overlay]``)
DRIVER_TABLES = ("storage", "network", "isolation", "registry")

#: keys the core owns inside tables that otherwise hold driver sections
CORE_TABLE_KEYS: dict[str, dict[str, Any]] = {
    "plugins": {"disabled": list},
    "network": {"default": str},
    # the image store; max-layer-size: bytes, or with a unit ("10g"); read by pyengine.images.store
    "images": {"max-layer-size": str | int},
    # ``pyengine daemon``'s listeners and TLS (flags win); read by pyengine.api.server
    "daemon": {"hosts": list, "group": str, "tlsverify": bool, "tlscacert": str, "tlscert": str,
               "tlskey": str, "insecure-tcp": bool, "pidfile": str},
}


@dataclass(frozen=True)
class Value:
    """A setting's effective value and where it came from: flag, env, file:<path>, auto, default."""

    value: Any
    source: str


@dataclass
class Config:
    """The effective configuration of one engine process."""

    values: dict[str, Value]
    path: Path | None = None
    tables: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def source(self, name: str) -> str:
        return self.values[name].source

    def set_auto(self, name: str, value: Any) -> None:
        """Record a value the engine chose itself (automatic driver selection)."""
        self.values[name] = Value(value, "auto")

    @property
    def data_root(self) -> Path:
        return Path(self["data-root"])

    @property
    def run_root(self) -> Path:
        return Path(self["run-root"])

    @property
    def file_label(self) -> str:
        return str(self.path) if self.path else "<no config file>"

    def table(self, dotted: str) -> Any:
        """The raw table at ``a.b.c`` in the file, or None."""
        node: Any = self.tables
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    @property
    def disabled_plugins(self) -> list[str]:
        plugins = self.tables.get("plugins") or {}
        return list(plugins.get("disabled", []))

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError naming the file, the line of ``key`` when it can be found, and the key."""
        line = _find_line(self.text, key)
        where = f"{self.file_label}:{line}" if line else self.file_label
        return ConfigError(f"{where}: {key}: {message}")


def _find_line(text: str, dotted: str) -> int | None:
    """Best effort: the line where the last part of ``dotted`` is assigned or opened as a table."""
    if not text:
        return None
    last = dotted.split(".")[-1].strip('"')
    key = re.escape(last)
    patterns = [rf'^\s*"?{key}"?\s*=', rf'^\s*\[\[?[^\]]*"?{key}"?\]\]?\s*$']
    for number, line in enumerate(text.splitlines(), start=1):
        if any(re.search(p, line) for p in patterns):
            return number
    return None


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def _check_type(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_check_type(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is Any:
        return True
    if origin in (list, tuple):
        (item,) = typing.get_args(expected)[:1] or (Any,)
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " or ".join(_describe(a) for a in typing.get_args(expected) if a is not type(None))
    if origin in (list, tuple):
        args = typing.get_args(expected)
        return f"list of {_describe(args[0])}" if args else "list"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        expected, _type_name(expected))


def build_options(config: Config, section: str, schema: type | None, raw: Mapping[str, Any] | None) -> Any:
    """Validate one driver table against its options dataclass and return an instance.

    Keys are written with hyphens in the file (``base-size``) and are fields with underscores.
    """
    if schema is None:
        for key in raw or {}:
            raise config.error(f"{section}.{key}", f"unknown key ([{section}] takes no options)")
        return None
    hints = typing.get_type_hints(schema)
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(schema)}
    kwargs = {}
    for key, value in (raw or {}).items():
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            raise config.error(f"{section}.{key}", f"unknown key (allowed in [{section}]: {allowed})")
        expected = hints[fields[key].name]
        if not _check_type(value, expected):
            raise config.error(f"{section}.{key}",
                               f"expected {_describe(expected)}, got {type(value).__name__} {value!r}")
        kwargs[fields[key].name] = value
    try:
        return schema(**kwargs)
    except (TypeError, ValueError) as exc:
        raise config.error(section, str(exc)) from None


def load(path_flag: str | None, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Read the file and environment and merge them with the flags.

    :param path_flag: ``--config`` (None when not given)
    :param flags: setting name -> value given on the command line (None when not given)
    :raises ConfigError: for a missing explicit file, bad TOML, an unknown top-level key or a
        wrong type or value of a top-level setting
    """
    import tomllib

    environ = os.environ if environ is None else environ
    if path_flag:
        path: Path | None = Path(path_flag)
        explicit = True
    elif environ.get("PYENGINE_CONFIG"):
        path = Path(environ["PYENGINE_CONFIG"])
        explicit = True
    else:
        path = DEFAULT_CONFIG_PATH
        explicit = False
    text = ""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if explicit:
                raise ConfigError(f"{path}: config file not found") from None
            path = None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        if path is not None:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    config = Config(values={}, path=path, text=text)
    for key, value in data.items():
        if key in SETTINGS:
            # The file is checked whole, even where a flag or variable overrides a value:
            # a wrong file must not wait for the day the flag is dropped.
            setting = SETTINGS[key]
            if not isinstance(value, setting.type):
                raise config.error(key, f"expected {_describe(setting.type)}, got {type(value).__name__} {value!r}")
            if setting.choices and value not in setting.choices:
                raise config.error(key, f"{value!r} is not one of {', '.join(setting.choices)}")
            continue
        if not isinstance(value, dict):
            allowed = ", ".join(sorted(SETTINGS))
            raise config.error(key, f"unknown setting (allowed top-level settings: {allowed})")
        config.tables[key] = value
    for name, setting in SETTINGS.items():
        flag_value = flags.get(name)
        env_value = environ.get(setting.env) or None
        if env_value is None and setting.docker_env and environ.get(setting.docker_env):
            # Docker reads DOCKER_TLS_VERIFY as "set and not empty"
            env_value = "1" if setting.type is bool else environ[setting.docker_env]
        if flag_value is not None:
            value, source = flag_value, "flag"
        elif env_value is not None:
            value, source = _env_value(setting, env_value), "env"
        elif name in data:
            value, source = data[name], f"file:{path}"
        else:
            config.values[name] = Value(setting.default, "default")
            continue
        if setting.choices and value not in setting.choices:
            where = {"flag": f"--{name}", "env": setting.env}.get(source)
            msg = f"{value!r} is not one of {', '.join(setting.choices)}"
            if where:
                raise ConfigError(f"{where}: {msg}")
            raise config.error(name, msg)
        config.values[name] = Value(value, source)
    _check_core_tables(config)
    return config


_ENV_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
              "off": False}


def _env_value(setting: Setting, text: str) -> Any:
    """A variable's text as the setting's type (only booleans need reading)."""
    if setting.type is not bool:
        return text
    try:
        return _ENV_BOOLS[text.strip().lower()]
    except KeyError:
        raise ConfigError(f"{setting.env}: expected a boolean (true or false), got {text!r}") from None


def _check_core_tables(config: Config) -> None:
    for table, keys in CORE_TABLE_KEYS.items():
        raw = config.tables.get(table)
        if raw is None:
            continue
        for key, expected in keys.items():
            if key in raw and not isinstance(raw[key], expected):
                raise config.error(f"{table}.{key}", f"expected {_describe(expected)}")
        if table == "plugins":
            for key in raw:
                if key not in keys:
                    raise config.error(f"plugins.{key}", "unknown key (allowed in [plugins]: disabled)")
            if not all(isinstance(v, str) for v in raw.get("disabled", [])):
                raise config.error("plugins.disabled", "expected list of string")
        if table == "images" and "max-layer-size" in raw and byte_size(raw["max-layer-size"]) is None:
            raise config.error("images.max-layer-size", 'expected a size above 0: bytes, or with a unit k, m, g, t '
                                                        '("10g")')
        if table == "daemon":
            for key in raw:
                if key not in keys:
                    raise config.error(f"daemon.{key}", f"unknown key (allowed in [daemon]: {', '.join(keys)})")
            for host in raw.get("hosts", []):
                if not isinstance(host, str) or not host.startswith(("unix://", "tcp://", "fd://")):
                    raise config.error("daemon.hosts", f"expected unix:///path, tcp://ADDR:PORT or fd://, "
                                                       f"got {host!r}")


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(value: Any) -> int | None:
    """A size from the file: an integer of bytes or "512m", "10g" (binary units, as Docker's
    sizes, with an optional trailing "b"); None when it is not one, or not above 0."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)b?", value.strip().lower())
    if match is None:
        return None
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    return size if size > 0 else None


def validate_tables(config: Config, sections: Mapping[str, tuple[type | None, bool]],
                    lenient_kinds: Iterable[str] = ()) -> dict[str, Any]:
    """Check every table of the file against the sections plugins registered.

    :param sections: dotted section -> (options dataclass, keyed)
    :param lenient_kinds: driver kinds for which an unknown driver table is only ignored
        (some plugin that could own it is disabled or failed to load)
    :return: dotted section -> options instance (keyed sections: key -> instance)
    :raises ConfigError: naming the file, line and key of the first problem
    """
    lenient = set(lenient_kinds)
    options: dict[str, Any] = {}
    prefixes = {s.split(".")[0] for s in sections}

    def walk(path: list[str], table: dict[str, Any]) -> None:
        dotted = ".".join(path)
        if dotted in sections:
            schema, keyed = sections[dotted]
            if keyed:
                options[dotted] = {}
                for key, sub in table.items():
                    if not isinstance(sub, dict):
                        raise config.error(f'{dotted}."{key}"', "expected a table")
                    options[dotted][key] = build_options(config, f'{dotted}."{key}"', schema, sub)
            else:
                options[dotted] = build_options(config, dotted, schema, table)
            return
        core_keys = CORE_TABLE_KEYS.get(dotted, {})
        for key, value in table.items():
            if key in core_keys:
                continue
            child = f"{dotted}.{key}"
            if isinstance(value, dict) and (child in sections or any(s.startswith(child + ".") for s in sections)):
                walk(path + [key], value)
            elif isinstance(value, dict) and len(path) == 1 and path[0] in DRIVER_TABLES:
                if path[0] in lenient:
                    continue
                known = sorted(s.split(".", 1)[1] for s in sections if s.startswith(path[0] + "."))
                raise config.error(child, f"unknown {path[0]} driver (known: {', '.join(known) or 'none'})")
            else:
                allowed = sorted(set(core_keys) | {s.split(".")[len(path)] for s in sections
                                                   if s.startswith(dotted + ".")})
                raise config.error(child, f"unknown key (allowed in [{dotted}]: {', '.join(allowed) or 'none'})")

    for top, table in config.tables.items():
        if top in sections or top in prefixes or top in CORE_TABLE_KEYS:
            walk([top], table)
        else:
            allowed = sorted(set(SETTINGS) | prefixes | set(CORE_TABLE_KEYS))
            raise config.error(top, f"unknown table (allowed: {', '.join(allowed)})")
    return options
