"""``pyengine info`` and ``pyengine plugins``: what the engine is made of, and where from."""

from __future__ import annotations

import json
from typing import Any

import click

from pyengine.cli import CliState, EngineGroup, pass_state


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def plugins(state: CliState, as_json: bool) -> None:
    """List every plugin: version, distribution, hooks, drivers and their states."""
    engine = state.engine()
    root = click.get_current_context().find_root().command
    if isinstance(root, EngineGroup):
        # A plugin whose commands clash shows that error here, whatever command ran first.
        root.load_plugin_commands(click.get_current_context())
    driver_states = {(d.kind, d.name): d for d in engine.driver_states()}
    out: list[dict[str, Any]] = []
    for record in sorted(engine.plugins.records.values(), key=lambda r: r.name):
        drivers = []
        for spec in record.drivers:
            ds = driver_states[(spec.kind, spec.name)]
            drivers.append({"kind": spec.kind, "name": spec.name, "state": ds.state, "reason": ds.reason})
        out.append({"name": record.name, "version": record.version, "distribution": record.distribution,
                    "module": record.module, "state": record.state, "hooks": record.hooks,
                    "drivers": drivers})
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    rows = []
    for p in out:
        summary = ", ".join(f"{d['kind']}:{d['name']}={d['state']}" for d in p["drivers"]) or "-"
        rows.append([p["name"], p["version"] or "-", p["distribution"] or "-", p["state"], summary])
    click.echo(_table(rows, ["PLUGIN", "VERSION", "DISTRIBUTION", "STATE", "DRIVERS"]))
    for p in out:
        click.echo(f"\n{p['name']}: hooks {', '.join(p['hooks']) or '-'}")
        for d in p["drivers"]:
            if d["reason"]:
                click.echo(f"  {d['kind']} {d['name']}: {d['state']}: {d['reason']}")


@click.command()
@click.option("-f", "--format", "fmt", default="text", metavar="text|json|TEMPLATE",
              help="Output format: text, json, or a Go template over the JSON ({{.storage.driver}}; with -H "
                   "the daemon's /info: {{.ServerVersion}}).")
@pass_state
def info(state: CliState, fmt: str) -> None:
    """Show the effective configuration with sources, and every driver's state (with -H: the
    daemon's own /info)."""
    if state.remote:
        _remote_info(state, fmt)
        return
    engine = state.engine()
    storage_spec = engine.storage_spec()
    storage_status = [list(pair) for pair in engine.storage.status()]
    config = {name: {"value": v.value, "source": v.source} for name, v in engine.config.values.items()}
    drivers = [d.as_dict() for d in engine.driver_states()]
    from pyengine import forkserver

    fork: dict[str, Any] = {"socket": forkserver.socket_path(), "served": forkserver.SERVED_BY is not None,
                            "pid": forkserver.SERVED_BY}
    from pyengine.api.server import resolve_options

    _, daemon_sources = resolve_options(engine.config, {})
    daemon = {key: {"value": value, "source": source} for key, (value, source) in daemon_sources.items()}
    data: dict[str, Any] = {
        "config": config, "config_file": str(engine.config.path) if engine.config.path else None,
        "drivers": drivers,
        "storage": {"driver": storage_spec.name, "plugin": storage_spec.plugin, "status": storage_status},
        "fork_server": fork, "daemon": daemon}
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    if fmt != "text":
        from pyengine.cli.template import render

        click.echo(render(fmt, data, document=True))
        return
    click.echo(f"Config file: {data['config_file'] or '(none)'}")
    click.echo(_table([[k, "" if v["value"] is None else str(v["value"]), v["source"]] for k, v in config.items()],
                      ["SETTING", "VALUE", "SOURCE"]))
    click.echo("")
    click.echo(_table([[d["kind"], d["name"], d["plugin"], d["state"], d["reason"]] for d in drivers],
                      ["KIND", "NAME", "PLUGIN", "STATE", "REASON"]))
    click.echo(f"\nStorage driver: {storage_spec.name}")
    for key, value in storage_status:
        click.echo(f"  {key}: {value}")
    click.echo(f"\nFork server: {fork['socket'] or '(off)'}")
    served = f"run by the fork server (pid {fork['pid']})" if fork["served"] else "in-process"
    click.echo(f"  this command: {served}")
    click.echo("\nDaemon ([daemon] table; flags of `pyengine daemon` win):")
    click.echo(_table([[k, _daemon_value(v["value"]), v["source"]] for k, v in daemon.items()],
                      ["KEY", "VALUE", "SOURCE"]))


def _daemon_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


_REMOTE_INFO_FIELDS = (("Server Version", "ServerVersion"), ("Storage Driver", "Driver"),
                       ("Cgroup Driver", "CgroupDriver"), ("Cgroup Version", "CgroupVersion"),
                       ("Kernel Version", "KernelVersion"), ("Operating System", "OperatingSystem"),
                       ("OSType", "OSType"), ("Architecture", "Architecture"), ("CPUs", "NCPU"),
                       ("Total Memory", "MemTotal"), ("Name", "Name"), ("ID", "ID"),
                       ("Docker Root Dir", "DockerRootDir"))


def _remote_info(state: CliState, fmt: str) -> None:
    """The daemon's ``GET /info``, as JSON or in the docker CLI's layout."""
    system = state.system()
    doc = system.info()
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    if fmt != "text":
        from pyengine.cli.template import render

        click.echo(render(fmt, doc, document=True))
        return
    api = system.api
    click.echo(f"Daemon: {api.address.url} (API {api.version})")
    click.echo(f"Containers: {doc.get('Containers', 0)}")
    for label, key in (("Running", "ContainersRunning"), ("Paused", "ContainersPaused"),
                       ("Stopped", "ContainersStopped")):
        click.echo(f" {label}: {doc.get(key, 0)}")
    click.echo(f"Images: {doc.get('Images', 0)}")
    for label, key in _REMOTE_INFO_FIELDS:
        if key not in doc:
            continue
        value = doc[key]
        click.echo(f"{label}: {value}")
        if key == "Driver":
            for pair in doc.get("DriverStatus") or []:
                if isinstance(pair, list) and len(pair) == 2:
                    click.echo(f" {pair[0]}: {pair[1]}")


@click.command()
@click.option("-f", "--format", "fmt", metavar="TEMPLATE",
              help="'json' or a Go template over {Client, Server}: {{.Server.Version}}, {{json .Client}}.")
@pass_state
def version(state: CliState, fmt: str | None) -> None:
    """Show the client's version and, with a host (-H), the daemon's (GET /version)."""
    import platform

    from pyengine import __version__
    from pyengine.client.transport import CLIENT_API_VERSION

    server = None
    api_version = CLIENT_API_VERSION
    if state.remote:
        system = state.system()
        server = system.version()
        api_version = system.api.version
    machine = platform.machine()
    client: dict[str, Any] = {"Platform": {"Name": "pyengine"}, "Version": __version__, "ApiVersion": api_version,
              "DefaultAPIVersion": CLIENT_API_VERSION, "GitCommit": "",
              "GoVersion": f"python{platform.python_version()}", "Os": "linux",
              "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine), "BuildTime": ""}
    if fmt:
        from pyengine.cli.events import render

        click.echo(render(fmt, {"Client": client, "Server": server}))
        return
    downgraded = f" (downgraded from {CLIENT_API_VERSION})" if api_version != CLIENT_API_VERSION else ""
    lines = [f"Client: {client['Platform']['Name']}", *_version_rows(1, [
        ("Version", client["Version"]), ("API version", client["ApiVersion"] + downgraded),
        ("Go version", client["GoVersion"]), ("Git commit", client["GitCommit"]), ("Built", client["BuildTime"]),
        ("OS/Arch", f"{client['Os']}/{client['Arch']}")])]
    if server is not None:
        lines += ["", *_server_lines(server)]
    click.echo("\n".join(lines))


def _version_rows(indent: int, rows: list[tuple[str, Any]]) -> list[str]:
    """``docker version``'s aligned rows (its tabwriter's minimum width of 20); empty values left out."""
    out = []
    for label, value in rows:
        if value is None or value == "":
            continue
        cell = " " * indent + label + ":"
        out.append(cell.ljust(max(20, len(cell) + 1)) + (str(value).lower() if isinstance(value, bool) else str(value)))
    return out


def _server_lines(server: dict[str, Any]) -> list[str]:
    """The Server section from a daemon's ``GET /version``, component by component as
    ``docker version`` prints it (the Engine's details in its order, others' sorted)."""
    name = (server.get("Platform") or {}).get("Name") or ""
    lines = [f"Server: {name}".rstrip()]
    components = server.get("Components") or [{"Name": "Engine", "Version": server.get("Version"), "Details": {
        key: server.get(key) for key in ("ApiVersion", "MinAPIVersion", "GoVersion", "GitCommit", "BuildTime", "Os",
                                         "Arch", "Experimental", "KernelVersion")}}]
    for component in components:
        details = component.get("Details") or {}
        lines.append(f" {component.get('Name', '')}:")
        if component.get("Name") == "Engine":
            api = details.get("ApiVersion") or server.get("ApiVersion") or ""
            minimum = details.get("MinAPIVersion") or server.get("MinAPIVersion")
            lines += _version_rows(2, [
                ("Version", component.get("Version")),
                ("API version", f"{api} (minimum version {minimum})" if minimum else api),
                ("Go version", details.get("GoVersion")), ("Git commit", details.get("GitCommit")),
                ("Built", details.get("BuildTime")),
                ("OS/Arch", f"{details['Os']}/{details['Arch']}" if details.get("Os") else None),
                ("Experimental", details.get("Experimental"))])
        else:
            lines += _version_rows(2, [("Version", component.get("Version")),
                                       *((key, details[key]) for key in sorted(details))])
    return lines
