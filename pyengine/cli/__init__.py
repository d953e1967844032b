"""The ``pyengine`` command line: global options, lazy sub-commands, one-line errors.

Sub-commands live in their own modules and are imported only when named, so that
``pyengine --version`` and ``--help`` do not pay for the engine. Plugin commands come from the
``pyengine_add_commands`` hook.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from pyengine import __version__
from pyengine.errors import PyEngineError

if TYPE_CHECKING:
    from pyengine.config import Config
    from pyengine.engine import Engine

#: command name -> "module:attribute"; imported on first use
BUILTIN_COMMANDS: dict[str, str] = {
    "info": "pyengine.cli.system:info",
    "plugins": "pyengine.cli.system:plugins",
    "version": "pyengine.cli.system:version",
    **{name: f"pyengine.cli.containers:{name}" for name in (
        "create", "run", "start", "ps", "logs", "stop", "kill", "restart", "rm", "wait", "inspect",
        "pause", "unpause", "rename", "top", "stats", "container", "volume", "port", "attach", "update")},
    "exec": "pyengine.cli.containers:exec_",
    "network": "pyengine.cli.network:network",
    "daemon": "pyengine.cli.daemon:daemon",
    "events": "pyengine.cli.events:events",
    "completion": "pyengine.cli.completion:completion",
    **{name: f"pyengine.cli.registry:{name}" for name in ("pull", "push", "login", "logout", "search")},
    **{name: f"pyengine.cli.images:{attr}" for name, attr in (
        ("images", "images"), ("image", "image"), ("import", "import_"), ("load", "load"), ("save", "save"),
        ("history", "history"), ("tag", "tag"), ("rmi", "rmi"), ("system", "system"))},
    **{name: f"pyengine.cli.build:{name}" for name in ("build", "builder", "commit", "diff", "cp", "export")},
}


class EngineGroup(click.Group):
    """A click group that imports built-in commands lazily and asks plugins for more."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self._plugins_asked = False
        self._config_error: PyEngineError | None = None

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._ask_plugins(ctx)
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            if "_PYENGINE_COMPLETE" in os.environ:  # the shell asks what to complete
                from pyengine.cli.completion import add_completions

                add_completions(command, cmd_name)
            return command
        if cmd_name not in self.commands:
            self._ask_plugins(ctx)
            if cmd_name not in self.commands and self._config_error is not None:
                # The command may belong to a plugin that a valid config would have loaded:
                # the config error is the real answer, not "no such command".
                raise self._config_error
        return self.commands.get(cmd_name)

    def load_plugin_commands(self, ctx: click.Context) -> None:
        """Let plugins add their commands now (``plugins`` does, so their errors show)."""
        self._ask_plugins(ctx)

    def _ask_plugins(self, ctx: click.Context) -> None:
        if self._plugins_asked:
            return
        self._plugins_asked = True
        try:
            state = cli_state(ctx)
            if state.remote:
                return  # plugins' commands drive this machine's engine, not a daemon's
            state.engine().plugins.add_commands(self)
        except PyEngineError as exc:
            self._config_error = exc  # --help still lists the built-in commands


class CliState:
    """What the global options decided, and the engine built from them on first use.

    Commands get their verbs from ``containers()``, ``images()``, ``networks()``, ``volumes()``
    and ``system()``: the in-process engine's (``pyengine.client.local``) or, when a host is set
    (``-H``, ``PYENGINE_HOST``, ``DOCKER_HOST``), a daemon's over the Docker Engine API
    (``pyengine.client.remote``), chosen once here; both answer with Docker-shaped dicts.
    """

    def __init__(self, config_path: str | None, flags: dict[str, Any]) -> None:
        self.config_path = config_path
        self.flags = flags
        self._config: Config | None = None
        self._engine: Engine | None = None
        self._verbs: Any = None

    @property
    def remote(self) -> bool:
        """True when commands go to a daemon (a host is set)."""
        return bool(self.config()["host"])

    def verbs(self) -> Any:
        """The engine verbs, local or remote (``LocalEngine`` or ``RemoteEngine``)."""
        if self._verbs is None:
            if self.remote:
                from pyengine.client import connect

                self._verbs = connect(self.config())
            else:
                from pyengine.client.local import LocalEngine

                self._verbs = LocalEngine(self.engine())
        return self._verbs

    def containers(self) -> Any:
        return self.verbs().containers

    def images(self) -> Any:
        return self.verbs().images

    def networks(self) -> Any:
        return self.verbs().networks

    def volumes(self) -> Any:
        return self.verbs().volumes

    def system(self) -> Any:
        return self.verbs().system

    def local_only(self, what: str | None = None) -> None:
        """Refuse, in one line, a command that only makes sense on this machine's engine."""
        if self.remote:
            from pyengine.errors import UsageError

            what = what or click.get_current_context().command_path.removeprefix("pyengine ")
            raise UsageError(f"`{what}` works on this machine's engine only, not through a daemon; "
                             f"unset -H/PYENGINE_HOST/DOCKER_HOST (host: {self.config()['host']})")

    def config(self) -> Config:
        if self._config is None:
            from pyengine import config, log

            self._config = config.load(self.config_path, self.flags)
            log.configure(self._config["log-level"], self._config["log-format"])
        return self._config

    def engine(self) -> Engine:
        """The in-process engine; refused when a host is set (see ``local_only``)."""
        self.local_only()
        return self.local_engine()

    def local_engine(self) -> Engine:
        """The in-process engine whatever the host (the daemon and the monitor use it)."""
        if self._engine is None:
            from pyengine.engine import Engine

            self._engine = Engine(self.config())
        return self._engine

    def close(self) -> None:
        if self._verbs is not None:
            self._verbs.close()
        if self._engine is not None:
            self._engine.close()


pass_state = click.make_pass_decorator(CliState)


def cli_state(ctx: click.Context) -> CliState:
    """The CliState of the top-level context, made from its parsed options on first use.

    Click resolves a sub-command before it runs the group's callback, so the state is built
    here rather than in the callback.
    """
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        params = root.params
        flags = {name.replace("_", "-"): params.get(name) for name in
                 ("storage_driver", "data_root", "run_root", "log_level", "log_format", "host", "tlsverify",
                  "tlscacert", "tlscert", "tlskey")}
        root.obj = CliState(params.get("config_path"), flags)
        root.call_on_close(root.obj.close)
    return root.obj


@click.group(cls=EngineGroup, lazy=BUILTIN_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="pyengine",
                      message="%(prog)s version %(version)s")
@click.option("-s", "--storage-driver", metavar="NAME", help="Storage driver (overlay, devicemapper, vfs, ...).")
@click.option("--config", "config_path", metavar="FILE", help="Config file [default: /etc/pyengine/config.toml].")
@click.option("--data-root", metavar="DIR", help="Root of persistent state [default: /var/lib/pyengine].")
@click.option("--run-root", metavar="DIR", help="Root of run-time state [default: /run/pyengine].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error", "critical"]),
              help="Least severe log event shown [default: warning].")
@click.option("--log-format", type=click.Choice(["console", "json"]), help="Log rendering [default: console].")
@click.option("-H", "--host", metavar="URL",
              help="Daemon to send every command to (unix:///path, tcp://host:port) [env: PYENGINE_HOST, "
                   "DOCKER_HOST; default: none, daemonless].")
@click.option("--tlsverify", is_flag=True, default=None,
              help="Use TLS and verify the daemon [env: DOCKER_TLS_VERIFY].")
@click.option("--tlscacert", metavar="FILE", help="Trust certificates signed by this CA [default: "
              "$DOCKER_CERT_PATH/ca.pem].")
@click.option("--tlscert", metavar="FILE", help="TLS certificate of this client [default: $DOCKER_CERT_PATH/cert.pem].")
@click.option("--tlskey", metavar="FILE", help="TLS key of this client [default: $DOCKER_CERT_PATH/key.pem].")
@click.pass_context
def cli(ctx: click.Context, storage_driver: str | None, config_path: str | None, data_root: str | None,
        run_root: str | None, log_level: str | None, log_format: str | None, host: str | None,
        tlsverify: bool | None, tlscacert: str | None, tlscert: str | None, tlskey: str | None) -> None:
    """pyengine: a container engine built around plugins."""
    cli_state(ctx)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a PyEngineError becomes one line on stderr and its exit status."""
    try:
        rv = cli.main(args=argv, prog_name="pyengine", standalone_mode=False)
    except PyEngineError as exc:
        click.echo(f"pyengine: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        from pyengine.cli.flags import docker_usage_error

        shaped = docker_usage_error(exc, sys.argv[1:] if argv is None else argv)
        if shaped is not None:  # run, create, exec: Docker's one line, its hint, its status
            click.echo(shaped.text, err=True)
            sys.exit(shaped.exit_code)
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        # A full disk is the operator's to fix, not a bug: one line, wherever it was met.
        from pyengine.errors import NoSpace

        if not NoSpace.is_full(exc):
            raise
        error = NoSpace(exc.filename)
        click.echo(f"pyengine: error: {error}", err=True)
        sys.exit(error.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
