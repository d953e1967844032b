"""``pyengine network``: create, ls, inspect, rm, prune, connect and disconnect, on the network
verbs of ``CliState.networks()`` (this machine's engine, or a daemon's with -H).

Locally every verb first reconciles: the endpoints of containers whose monitor died (SIGKILL, a
reboot) are freed, so addresses, ports and rules never outlive their container."""

from __future__ import annotations

import json
from typing import Any

import click

from pyengine.cli import CliState, pass_state
from pyengine.errors import UsageError


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
    network_id = state.networks().create(name, driver, subnet=subnet, gateway=gateway, ip_range=ip_range,
                                         internal=internal, options=_pairs(opt, "--opt"),
                                         labels=_pairs(label, "--label"))
    click.echo(network_id)


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only ids.")
@click.option("--format", "fmt", metavar="TEMPLATE",
              help="'table' (the default), 'json' (a list), or a Go template: {{.ID}} {{.Name}} {{.Driver}} "
                   "{{.Scope}} ... ('table {{.Name}}\\t{{.Driver}}' adds docker's header).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate network IDs.")
@pass_state
def ls(state: CliState, quiet: bool, fmt: str | None, no_trunc: bool) -> None:
    """List networks."""
    docs = state.networks().list()
    summaries = [_summary(doc) for doc in docs]
    if quiet:
        for summary in summaries:
            click.echo(summary["Id"] if no_trunc else summary["Id"][:12])
        return
    if fmt and fmt not in ("table", "json"):
        from pyengine.cli import template

        click.echo(template.format_rows(fmt, [template.network_row(d, not no_trunc) for d in docs],
                                        template.NETWORK_HEADERS, template.NETWORK_DEFAULT), nl=False)
        return
    if fmt == "json":
        click.echo(json.dumps(summaries, indent=2))
        return
    rows = [["NETWORK ID", "NAME", "DRIVER", "SUBNET", "CONTAINERS"]]
    rows += [[n["Id"] if no_trunc else n["Id"][:12], n["Name"], n["Driver"], n["Subnet"] or "-", str(n["Containers"])]
             for n in summaries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A row of ``ls`` from Docker's network document."""
    pools = (doc.get("IPAM") or {}).get("Config") or []
    return {"Id": doc["Id"], "Name": doc["Name"], "Driver": doc.get("Driver") or "",
            "Subnet": (pools[0].get("Subnet") if pools else None) or None, "Internal": bool(doc.get("Internal")),
            "Containers": len(doc.get("Containers") or {})}


@network.command()
@click.option("-f", "--format", "fmt", help="A Go template ({{.IPAM.Config}}, {{json .Containers}}) or 'json'.")
@click.argument("names", nargs=-1, required=True)
@pass_state
def inspect(state: CliState, names: tuple[str, ...], fmt: str | None) -> None:
    """Show networks as JSON."""
    from pyengine.cli.template import inspect_output

    networks = state.networks()
    click.echo(inspect_output([networks.inspect(n) for n in names], fmt, indent=2), nl=False)


@network.command()
@click.argument("names", nargs=-1, required=True)
@pass_state
def rm(state: CliState, names: tuple[str, ...]) -> None:
    """Remove networks (refused while containers use them)."""
    networks = state.networks()
    for name in names:
        networks.remove(name)
        click.echo(name)


@network.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask (there is no prompt; kept for Docker).")
@pass_state
def prune(state: CliState, force: bool) -> None:
    """Remove every user-defined network no container uses."""
    for name in state.networks().prune():
        click.echo(name)


@network.command()
@click.option("--alias", multiple=True, help="Another name for the container on this network.")
@click.option("--ip", help="IPv4 address on the network.")
@click.argument("name")
@click.argument("container")
@pass_state
def connect(state: CliState, alias: tuple[str, ...], ip: str | None, name: str, container: str) -> None:
    """Connect a container to a network (a running one at once, and at every start)."""
    state.networks().connect(name, container, list(alias), ip)


@network.command()
@click.option("-f", "--force", is_flag=True, help="Kept for Docker; disconnecting never needs it.")
@click.argument("name")
@click.argument("container")
@pass_state
def disconnect(state: CliState, force: bool, name: str, container: str) -> None:
    """Disconnect a container from a network."""
    state.networks().disconnect(name, container, force)
