"""``pyengine daemon``: serve this engine over the Docker Engine API."""

from __future__ import annotations

import click

from pyengine.cli import CliState, pass_state


@click.command("daemon")
@click.option("-H", "--host", "hosts", multiple=True, metavar="URL",
              help="Listen on unix:///path, tcp://ADDR:PORT or fd:// (several allowed) "
                   "[default: unix://<run-root>/pyengine.sock].")
@click.option("-G", "--group", default=None, help="Group owning the Unix socket [default: pyengine].")
@click.option("--tlsverify", is_flag=True, default=None, help="Require client certificates signed by --tlscacert.")
@click.option("--tlscacert", metavar="FILE", help="CA that client certificates must chain to.")
@click.option("--tlscert", metavar="FILE", help="The server's TLS certificate.")
@click.option("--tlskey", metavar="FILE", help="The server's TLS key.")
@click.option("--insecure-tcp", is_flag=True, default=None,
              help="Allow plain TCP on a non-loopback address (anyone reaching it is root here).")
@click.option("-p", "--pidfile", metavar="FILE", help="Write the daemon's pid here.")
@pass_state
def daemon(state: CliState, hosts: tuple[str, ...], group: str | None, tlsverify: bool | None,
           tlscacert: str | None, tlscert: str | None, tlskey: str | None, insecure_tcp: bool | None,
           pidfile: str | None) -> None:
    """Serve the engine over the Docker Engine API (docker CLI, docker-py and Compose work)."""
    from pyengine.api.backend import Backend
    from pyengine.api.server import check_hosts, resolve_options, run_daemon

    config = state.config()
    options, _ = resolve_options(config, {
        "hosts": hosts, "group": group, "tlsverify": tlsverify, "tlscacert": tlscacert, "tlscert": tlscert,
        "tlskey": tlskey, "insecure-tcp": insecure_tcp, "pidfile": pidfile})
    check_hosts(options)
    flags = state.flags
    config_path = state.config_path

    def load_config():  # noqa: ANN202 - re-read on SIGHUP with the same flags
        from pyengine import config as config_module

        return config_module.load(config_path, flags)

    backend = Backend(load_config)
    state._engine = backend.engine
    run_daemon(backend, options)
