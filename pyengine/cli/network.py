"""``pyengine network``: create, ls, inspect, rm, prune, connect and disconnect.

Every verb first reconciles: the endpoints of containers whose monitor died (SIGKILL, a
reboot) are freed, so addresses, ports and rules never outlive their container."""

from __future__ import annotations

import json

import click

from pyengine.cli import CliState, pass_state
from pyengine.errors import UsageError


def _containers(state: CliState):  # noqa: ANN202
    from pyengine.containers.engine import Containers

    return Containers(state.engine())


def _manager(state: CliState):  # noqa: ANN202 - imported lazily to keep the CLI cheap
    from pyengine.network.verbs import reconciled_manager

    return reconciled_manager(state.engine())


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid {flag} {value!r}: expected KEY=VALUE")
        out[key] = val if sep else ""
    return out


@click.group()
def network() -> None:
    """Manage networks."""


@network.command()
@click.option("-d", "--driver", default="bridge", show_default=True, help="Network driver.")
@click.option("--subnet", metavar="CIDR", help="Subnet (default: the next free one of the pool).")
@click.option("--gateway", metavar="IP", help="Gateway address (default: first of the subnet).")
@click.option("--ip-range", metavar="CIDR", help="Allocate container addresses from this range.")
@click.option("--internal", is_flag=True, help="No outbound access and no NAT.")
@click.option("-o", "--opt", multiple=True, metavar="KEY=VALUE", help="Driver option.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Label.")
@click.argument("name")
@pass_state
def create(state: CliState, driver: str, subnet: str | None, gateway: str | None, ip_range: str | None,
           internal: bool, opt: tuple[str, ...], label: tuple[str, ...], name: str) -> None:
    """Create a network and print its id."""
    record = _manager(state).create(name, driver, subnet=subnet, gateway=gateway, ip_range=ip_range,
                                    internal=internal, options=_pairs(opt, "--opt"),
                                    labels=_pairs(label, "--label"))
    click.echo(record.id)


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only ids.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def ls(state: CliState, quiet: bool, fmt: str) -> None:
    """List networks."""
    records = _manager(state).list()
    if quiet:
        for record in records:
            click.echo(record.id[:12])
        return
    if fmt == "json":
        click.echo(json.dumps([_summary(r) for r in records], indent=2))
        return
    rows = [["NETWORK ID", "NAME", "DRIVER", "SUBNET", "CONTAINERS"]]
    rows += [[r.id[:12], r.name, r.driver, r.subnet or "-", str(len(r.endpoints))] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _summary(record) -> dict:  # noqa: ANN001
    return {"Id": record.id, "Name": record.name, "Driver": record.driver, "Subnet": record.subnet,
            "Internal": record.internal, "Containers": len(record.endpoints)}


@network.command()
@click.argument("names", nargs=-1, required=True)
@pass_state
def inspect(state: CliState, names: tuple[str, ...]) -> None:
    """Show networks as JSON."""
    from pyengine.network import verbs

    manager = _manager(state)
    click.echo(json.dumps([verbs.inspect(manager.get(n)) for n in names], indent=2))


@network.command()
@click.argument("names", nargs=-1, required=True)
@pass_state
def rm(state: CliState, names: tuple[str, ...]) -> None:
    """Remove networks (refused while containers use them)."""
    manager = _manager(state)
    for name in names:
        manager.remove(name)
        click.echo(name)


@network.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask (there is no prompt; kept for Docker).")
@pass_state
def prune(state: CliState, force: bool) -> None:
    """Remove every user-defined network no container uses."""
    for record in _manager(state).prune():
        click.echo(record.name)


@network.command()
@click.option("--alias", multiple=True, help="Another name for the container on this network.")
@click.option("--ip", help="IPv4 address on the network.")
@click.argument("name")
@click.argument("container")
@pass_state
def connect(state: CliState, alias: tuple[str, ...], ip: str | None, name: str, container: str) -> None:
    """Connect a container to a network (a running one at once, and at every start)."""
    from pyengine.containers import networking

    _manager(state)
    networking.connect(_containers(state), name, container, list(alias), ip)


@network.command()
@click.option("-f", "--force", is_flag=True, help="Kept for Docker; disconnecting never needs it.")
@click.argument("name")
@click.argument("container")
@pass_state
def disconnect(state: CliState, force: bool, name: str, container: str) -> None:
    """Disconnect a container from a network."""
    from pyengine.containers import networking

    _manager(state)
    networking.disconnect(_containers(state), name, container)
