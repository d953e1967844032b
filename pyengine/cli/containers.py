"""Container commands: create, start, run, ps, logs, stop, kill, restart, rm, wait, inspect,
pause, unpause, rename, top, stats, container prune, volume ... — with Docker's flags."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from pyengine.cli import CliState, pass_state
from pyengine.cli.flags import BYTES, BYTES_OR_UNLIMITED, PUBLISH, RESTART_POLICY, ULIMIT, VOLUME
from pyengine.errors import NotFound, UsageError


def _containers(state: CliState) -> Any:
    from pyengine.containers.engine import Containers

    return Containers(state.engine())


# -- create / run options ----------------------------------------------------------------------
def container_options(func: Any) -> Any:
    options = [
        click.option("-d", "--detach", is_flag=True, help="Run in the background and print the ID."),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
        click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits."),
        click.option("--name", help="Container name."),
        click.option("-e", "--env", multiple=True, help="Set an environment variable (KEY=VALUE or KEY)."),
        click.option("--env-file", multiple=True, type=click.Path(dir_okay=False), help="Read env from a file."),
        click.option("-w", "--workdir", help="Working directory inside the container."),
        click.option("-u", "--user", help="user[:group] (name or id)."),
        click.option("-h", "--hostname", help="Container host name."),
        click.option("--entrypoint", help="Override the image's entrypoint."),
        click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only."),
        click.option("-v", "--volume", multiple=True, type=VOLUME,
                     help="Bind mount HOST:CTR[:ro] or named volume NAME:CTR."),
        click.option("--tmpfs", multiple=True, help="Mount a tmpfs: PATH[:OPTIONS]."),
        click.option("--init", is_flag=True, help="Run an init as PID 1 that reaps zombies."),
        click.option("--restart", default="no", type=RESTART_POLICY,
                     help="no | on-failure[:N] | always | unless-stopped."),
        click.option("--stop-signal", help="Signal to stop the container [default: SIGTERM]."),
        click.option("--stop-timeout", type=int, help="Seconds before SIGKILL on stop [default: 10]."),
        click.option("--ulimit", multiple=True, type=ULIMIT, help="NAME=SOFT[:HARD]."),
        click.option("-l", "--label", multiple=True, help="KEY=VALUE."),
        click.option("-m", "--memory", type=BYTES, help="Memory limit (e.g. 64m)."),
        click.option("--memory-swap", type=BYTES_OR_UNLIMITED, help="Memory + swap limit (-1: unlimited)."),
        click.option("--memory-reservation", type=BYTES, help="Memory soft limit."),
        click.option("--cpus", type=float, help="Number of CPUs (e.g. 0.5)."),
        click.option("--cpu-period", type=int, help="CFS period in microseconds."),
        click.option("--cpu-quota", type=int, help="CFS quota in microseconds."),
        click.option("-c", "--cpu-shares", type=int, help="Relative CPU weight."),
        click.option("--cpuset-cpus", help="CPUs allowed (0-3, 0,1)."),
        click.option("--cpuset-mems", help="Memory nodes allowed."),
        click.option("--pids-limit", type=int, help="Maximum number of processes."),
        click.option("--blkio-weight", type=click.IntRange(10, 1000), help="Block IO weight (10-1000)."),
        click.option("--oom-kill-disable", is_flag=True, help="Disable the OOM killer."),
        click.option("--cap-add", multiple=True, help="Add a capability."),
        click.option("--cap-drop", multiple=True, help="Drop a capability."),
        click.option("--privileged", is_flag=True, help="All capabilities, no masked paths, no seccomp."),
        click.option("--security-opt", multiple=True, help="seccomp=unconfined, no-new-privileges[=false]."),
        click.option("--network", "--net", "network", default=None,
                     help="bridge | NAME | none | host | container:NAME [default: [network] default, "
                          "else bridge where the host can run it]."),
        click.option("-p", "--publish", multiple=True, type=PUBLISH, help="[IP:][HOSTPORT:]PORT[/tcp|udp]."),
        click.option("-P", "--publish-all", is_flag=True, help="Publish every exposed port on a random port."),
        click.option("--expose", multiple=True, help="Expose PORT[/tcp|udp] (for -P)."),
        click.option("--ip", help="IPv4 address on the network."),
        click.option("--network-alias", multiple=True, help="Another name on a user-defined network."),
        click.option("--dns", multiple=True, help="DNS server."),
        click.option("--dns-search", multiple=True, help="DNS search domain."),
        click.option("--dns-option", multiple=True, help="resolv.conf option (ndots:2)."),
        click.option("--add-host", multiple=True, help="HOST:IP entry for /etc/hosts."),
        click.option("--log-opt", multiple=True, help="max-size=10m, max-file=2."),
        click.option("--storage-opt", multiple=True, help="size=10G (drivers that support it)."),
        click.option("--health-cmd", help="Command to run to check health (run by /bin/sh -c in the container)."),
        click.option("--health-interval", help="Time between running the check (ms|s|m|h) [default: 30s]."),
        click.option("--health-timeout", help="Maximum time to allow one check to run (ms|s|m|h) [default: 30s]."),
        click.option("--health-retries", type=int, help="Failures in a row that make it unhealthy [default: 3]."),
        click.option("--health-start-period", help="Start period during which failures do not count (ms|s|m|h)."),
        click.option("--health-start-interval", help="Time between checks during the start period [default: 5s]."),
        click.option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _env(values: tuple[str, ...], files: tuple[str, ...]) -> list[str]:
    env = []
    for path in files:
        try:
            with open(path) as f:
                lines = [line.strip() for line in f]
        except OSError as exc:
            raise UsageError(f"cannot read env file {path}: {exc.strerror}") from None
        values = tuple(line for line in lines if line and not line.startswith("#")) + values
    for item in values:
        if "=" in item:
            env.append(item)
        elif item in os.environ:
            env.append(f"{item}={os.environ[item]}")
    return env


def _restart_policy(value: str) -> dict[str, Any]:
    name, _, count = value.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise UsageError(f"invalid restart policy {value!r}: use no, on-failure[:N], always or unless-stopped")
    if count and (name != "on-failure" or not count.isdigit()):
        raise UsageError(f"invalid restart policy {value!r}: only on-failure takes a retry count")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def _ulimits(values: tuple[str, ...]) -> list[dict[str, Any]]:
    import resource

    ulimits = []
    for value in values:
        name, _, limits = value.partition("=")
        soft, _, hard = limits.partition(":")
        hard = hard or soft
        if not name or not soft.lstrip("-").isdigit() or not hard.lstrip("-").isdigit():
            raise UsageError(f"invalid ulimit {value!r}: use NAME=SOFT[:HARD]")
        const = getattr(resource, "RLIMIT_" + name.upper(), None)
        if const is None:
            raise UsageError(f"unknown ulimit {name!r}")
        if int(soft) > int(hard):
            raise UsageError(f"ulimit {name}: soft limit {soft} is above the hard limit {hard}")
        _, host_hard = resource.getrlimit(const)
        if host_hard != resource.RLIM_INFINITY and int(hard) > host_hard:
            raise UsageError(f"ulimit {name}: hard limit {hard} is above what this host grants "
                             f"({host_hard}); raising a hard limit needs CAP_SYS_RESOURCE")
        ulimits.append({"Name": name, "Soft": int(soft), "Hard": int(hard)})
    return ulimits


def _kv(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {value!r}: use KEY=VALUE")
        out[key] = val
    return out


def build_configs(image: str, command: tuple[str, ...], o: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Docker's Config and HostConfig from the create/run flags."""
    from pyengine.containers.spec import parse_bytes

    config: dict[str, Any] = {
        "Image": image, "Cmd": list(command) or None, "Env": _env(o["env"], o["env_file"]),
        "WorkingDir": o["workdir"] or "", "User": o["user"] or "", "Hostname": o["hostname"] or "",
        "Tty": o["tty"], "OpenStdin": o["interactive"], "AttachStdin": o["interactive"],
        "Labels": _kv(o["label"], "label"), "StopSignal": o["stop_signal"] or "",
        "StopTimeout": o["stop_timeout"],
    }
    if o["entrypoint"] is not None:
        config["Entrypoint"] = [o["entrypoint"]] if o["entrypoint"] else []
    from pyengine.containers.health import healthcheck_from_flags

    healthcheck = healthcheck_from_flags(o)
    if healthcheck is not None:
        config["Healthcheck"] = healthcheck
    exposed: dict[str, dict[str, Any]] = {}
    for item in o["expose"]:
        port, _, protocol = item.partition("/")
        if not port.isdigit() or protocol not in ("", "tcp", "udp"):
            raise UsageError(f"invalid --expose {item!r}: use PORT[/tcp|udp]")
        exposed[f"{port}/{protocol or 'tcp'}"] = {}
    if exposed:
        config["ExposedPorts"] = exposed
    tmpfs = {}
    for item in o["tmpfs"]:
        path, _, opts = item.partition(":")
        tmpfs[path] = opts
    for bind in o["volume"]:
        parts = bind.split(":")
        bad_mode = len(parts) == 3 and parts[2] not in ("ro", "rw")
        if len(parts) not in (2, 3) or not parts[1].startswith("/") or bad_mode:
            raise UsageError(f"invalid volume {bind!r}: use HOST:CTR[:ro|rw] or NAME:CTR[:ro|rw]")
        if parts[0].startswith("/") and not os.path.exists(parts[0]):
            raise UsageError(f"bind source path does not exist: {parts[0]}")
    cpus = o["cpus"]
    if cpus is not None and cpus <= 0:
        raise UsageError("--cpus must be greater than 0")
    host: dict[str, Any] = {
        "AutoRemove": o["auto_remove"], "Binds": list(o["volume"]), "Tmpfs": tmpfs, "Init": o["init"],
        "RestartPolicy": _restart_policy(o["restart"]), "Ulimits": _ulimits(o["ulimit"]),
        "ReadonlyRootfs": o["read_only"], "Privileged": o["privileged"],
        "CapAdd": list(o["cap_add"]), "CapDrop": list(o["cap_drop"]), "SecurityOpt": list(o["security_opt"]),
        "NetworkMode": o["network"] or "", "Dns": list(o["dns"]), "DnsSearch": list(o["dns_search"]),
        "DnsOptions": list(o["dns_option"]), "ExtraHosts": list(o["add_host"]),
        "PortBindings": _port_bindings(o["publish"]), "PublishAllPorts": o["publish_all"],
        "LogConfig": {"Type": "json-file", "Config": _kv(o["log_opt"], "log option")},
        "StorageOpt": _kv(o["storage_opt"], "storage option"),
        "Memory": parse_bytes(o["memory"]) if o["memory"] else 0,
        "MemorySwap": (-1 if o["memory_swap"] == "-1" else parse_bytes(o["memory_swap"])) if o["memory_swap"] else 0,
        "MemoryReservation": parse_bytes(o["memory_reservation"]) if o["memory_reservation"] else 0,
        "NanoCpus": int(cpus * 1e9) if cpus else 0, "CpuPeriod": o["cpu_period"] or 0,
        "CpuQuota": o["cpu_quota"] or 0, "CpuShares": o["cpu_shares"] or 0,
        "CpusetCpus": o["cpuset_cpus"] or "", "CpusetMems": o["cpuset_mems"] or "",
        "PidsLimit": o["pids_limit"] or 0, "BlkioWeight": o["blkio_weight"] or 0,
        "OomKillDisable": o["oom_kill_disable"],
    }
    if o["tty"] and sys.stdout.isatty():
        # As the docker CLI sends it: the container's pty starts at the client's size, so a
        # program that asks at once (stty size) does not see 0x0 before the first resize.
        try:
            columns, lines = os.get_terminal_size(sys.stdout.fileno())
            host["ConsoleSize"] = [lines, columns]
        except OSError:
            pass
    if host["AutoRemove"] and host["RestartPolicy"]["Name"] != "no":
        raise UsageError("--restart and --rm cannot be combined")
    for entry in o["add_host"]:
        name, sep, address = entry.partition(":")
        if not name or not sep or not address:
            raise UsageError(f"invalid --add-host {entry!r}: use HOST:IP")
    return config, host


def _port_bindings(values: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    """``-p`` values as Docker's HostConfig.PortBindings."""
    from pyengine.network.ports import parse_publish

    bindings: dict[str, list[dict[str, str]]] = {}
    for value in values:
        mapping = parse_publish(value)
        bindings.setdefault(f"{mapping.container_port}/{mapping.protocol}", []).append(
            {"HostIp": mapping.host_ip, "HostPort": str(mapping.host_port) if mapping.host_port else ""})
    return bindings


def _endpoint(o: dict[str, Any]) -> dict[str, Any]:
    return {"Aliases": list(o["network_alias"]), "IPAddress": o["ip"] or ""}


_CREATE_KEYS = ("detach",)


@click.command(context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False})
@container_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def create(state: CliState, image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create a container from IMAGE without starting it; print its ID."""
    config, host = build_configs(image, command, o)
    click.echo(state.containers().create(image, config, host, name=o["name"], endpoint=_endpoint(o)))


@click.command(context_settings={"allow_interspersed_args": False})
@container_options
@click.option("--detach-keys", help="The sequence that detaches an attached run [default: ctrl-p,ctrl-q].")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def run(state: CliState, image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create and start a container from IMAGE; attached unless -d."""
    from pyengine.containers.attach import parse_detach_keys

    parse_detach_keys(o["detach_keys"])  # refused before anything is created
    config, host = build_configs(image, command, o)
    containers = state.containers()
    containers.warm()
    container_id = containers.create(image, config, host, name=o["name"], endpoint=_endpoint(o))
    if o["detach"]:
        try:
            containers.start(container_id)
        except BaseException:
            if host["AutoRemove"]:
                try:
                    containers.remove(container_id, force=True)
                except NotFound:  # its monitor was quicker: the start's own error stands
                    pass
            raise
        click.echo(container_id)
        return
    code = _attached(lambda: containers.start_attached(container_id, interactive=o["interactive"], tty=o["tty"],
                                                       detach_keys=o["detach_keys"]))
    state.close()
    sys.stdout.flush()
    os._exit(code)


@click.command()
@click.option("-a", "--attach", is_flag=True, help="Attach stdout/stderr and return the exit code.")
@click.option("-i", "--interactive", is_flag=True, help="Attach stdin.")
@click.option("--detach-keys", help="The sequence that detaches an attached start [default: ctrl-p,ctrl-q].")
@click.argument("containers", nargs=-1, required=True)
@pass_state
def start(state: CliState, containers: tuple[str, ...], attach: bool, interactive: bool,
          detach_keys: str | None) -> None:
    """Start one or more stopped containers."""
    from pyengine.containers.attach import parse_detach_keys

    parse_detach_keys(detach_keys)
    engine = state.containers()
    if attach or interactive:
        if len(containers) != 1:
            raise UsageError("you cannot attach to more than one container")
        code = _attached(lambda: engine.start_attached(containers[0], interactive=interactive,
                                                       detach_keys=detach_keys))
        state.close()
        os._exit(code)
    for ref in containers:
        engine.start(ref)
        click.echo(ref)


@click.command(name="ps")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers, not only running ones.")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="status=, name=, id=, label=, exited=, ancestor=, before=, since=, volume=, network=.")
@click.option("--format", "fmt", help="'json', 'table' or a Go template: {{.ID}} {{.Names}} {{.Status}} "
              "{{.Label \"k\"}} ... ('table {{.Names}}\\t{{.Status}}' adds docker's header).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate IDs and commands.")
@pass_state
def ps(state: CliState, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str | None, no_trunc: bool) -> None:
    """List containers."""
    from pyengine.containers.filters import parse_cli_filters
    from pyengine.containers.inspect import human_duration

    found = state.containers().list(all_=all_, filters=parse_cli_filters(filters))
    if quiet:
        for c in found:
            click.echo(c["Id"] if no_trunc else c["Id"][:12])
        return
    import time

    from pyengine.cli import template
    from pyengine.cli.images import human_size

    now = time.time()
    rows = [template.container_row(c, not no_trunc, now, human_size, human_duration, _ports_column) for c in found]
    click.echo(template.format_rows(fmt or template.PS_DEFAULT, rows, template.PS_HEADERS, template.PS_DEFAULT),
               nl=False)


def _ports_column(ports: list[dict[str, Any]]) -> str:
    """Docker's PORTS column from a summary's Ports: ``0.0.0.0:18080->8080/tcp``, ``80/tcp``."""
    out = []
    for p in ports:
        if p.get("PublicPort"):
            out.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->{p['PrivatePort']}/{p.get('Type', 'tcp')}")
        else:
            out.append(f"{p['PrivatePort']}/{p.get('Type', 'tcp')}")
    return ", ".join(out)


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Follow the log.")
@click.option("-n", "--tail", default="all", help="Lines from the end (or 'all').")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--since", help="Only entries since a time: seconds since the epoch, RFC 3339 or a duration (10m).")
@click.option("--until", help="Only entries before a time (same forms as --since).")
@click.option("--details", is_flag=True, help="Show the extra attributes of each line (--log-opt labels=, env=).")
@click.argument("container")
@pass_state
def logs(state: CliState, container: str, follow: bool, tail: str, timestamps: bool, since: str | None,
         until: str | None, details: bool) -> None:
    """Print a container's logs (json-file)."""
    from pyengine.client import STDERR

    containers = state.containers()
    prefix = _log_details(containers.inspect(container)) if details else b""
    for stream, data in containers.logs(container, follow=follow, tail=tail, timestamps=timestamps,
                                        since=since, until=until):
        if details:
            # docker puts the attributes after the timestamp, before the line: "TIME k=v,k2=v2 line"
            stamp, sep, line = data.partition(b" ") if timestamps else (b"", b"", data)
            data = stamp + sep + prefix + line
        out = sys.stderr.buffer if stream == STDERR else sys.stdout.buffer
        out.write(data)
        out.flush()


def _log_details(doc: dict[str, Any]) -> bytes:
    """``logs --details``' attributes, as json-file records them: the container's labels named by
    ``--log-opt labels=`` (and ``labels-regex=``) and its environment variables named by ``env=``
    (and ``env-regex=``), ``k=v`` joined by commas in key order, then a space (alone when none)."""
    import re

    options = ((doc.get("HostConfig") or {}).get("LogConfig") or {}).get("Config") or {}
    config = doc.get("Config") or {}
    labels = config.get("Labels") or {}
    env = dict(item.partition("=")[::2] for item in config.get("Env") or [])
    attrs: dict[str, str] = {}
    for source, names_key, regex_key in ((labels, "labels", "labels-regex"), (env, "env", "env-regex")):
        names = [n for n in (options.get(names_key) or "").split(",") if n]
        pattern = options.get(regex_key)
        for key, value in source.items():
            if key in names or (pattern and re.search(pattern, key)):
                attrs[key] = value
    return (",".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + " ").encode()


@click.command()
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds to wait before SIGKILL.")
@click.argument("containers", nargs=-1, required=True)
@pass_state
def stop(state: CliState, containers: tuple[str, ...], timeout: int | None) -> None:
    """Stop containers: the stop signal, then SIGKILL after the timeout."""
    engine = state.containers()
    for ref in containers:
        engine.stop(ref, timeout)
        click.echo(ref)


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", help="Signal to send [default: KILL].")
@click.argument("containers", nargs=-1, required=True)
@pass_state
def kill(state: CliState, containers: tuple[str, ...], sig: str) -> None:
    """Send a signal to containers."""
    engine = state.containers()
    for ref in containers:
        engine.kill(ref, sig)
        click.echo(ref)


@click.command()
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds to wait before SIGKILL.")
@click.argument("containers", nargs=-1, required=True)
@pass_state
def restart(state: CliState, containers: tuple[str, ...], timeout: int | None) -> None:
    """Stop and start containers."""
    engine = state.containers()
    for ref in containers:
        engine.restart(ref, timeout)
        click.echo(ref)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
@pass_state
def rm(state: CliState, containers: tuple[str, ...], force: bool, volumes: bool) -> None:
    """Remove containers."""
    engine = state.containers()
    failed = None
    for ref in containers:
        try:
            engine.remove(ref, force=force, volumes=volumes)
            click.echo(ref)
        except UsageError:
            raise
        except Exception as exc:  # keep going, as docker rm does, and fail at the end
            from pyengine.errors import PyEngineError

            if not isinstance(exc, PyEngineError):
                raise
            click.echo(f"pyengine: error: {exc}", err=True)
            failed = exc
    if failed is not None:
        sys.exit(failed.exit_code)


@click.command()
@click.option("--condition", type=click.Choice(["not-running", "next-exit", "removed"]), default="not-running",
              show_default=True, help="Wait until the container is not running, its next exit, or its removal.")
@click.argument("containers", nargs=-1, required=True)
@pass_state
def wait(state: CliState, containers: tuple[str, ...], condition: str) -> None:
    """Block until containers stop (or meet --condition); print their exit codes."""
    engine = state.containers()
    for ref in containers:
        click.echo(engine.wait(ref, condition=condition))


@click.command()
@click.option("--no-stdin", is_flag=True, help="Do not attach stdin.")
@click.option("--sig-proxy/--no-sig-proxy", default=True, show_default=True,
              help="Pass the signals this command gets to the container (without a tty).")
@click.option("--detach-keys", help="The sequence that detaches: ctrl-<value> or letters, comma separated "
                                    "[default: ctrl-p,ctrl-q].")
@click.argument("container")
@pass_state
def attach(state: CliState, container: str, no_stdin: bool, sig_proxy: bool, detach_keys: str | None) -> None:
    """Attach this terminal to a running container's stdio; exit with its exit code."""
    from pyengine.containers.attach import parse_detach_keys

    parse_detach_keys(detach_keys)  # a bad sequence is refused before anything is attached
    code = _attached(lambda: state.containers().attach(container, stdin=not no_stdin, sig_proxy=sig_proxy,
                                                       detach_keys=detach_keys))
    state.close()
    sys.stdout.flush()
    os._exit(code)


def _attached(relay: Any) -> int:
    """Run an attached session; its exit code, or 0 when the user typed the detach keys (the
    container runs on; Docker's words go to stderr)."""
    from pyengine.containers.attach import Detached

    try:
        return int(relay())
    except Detached:
        sys.stdout.flush()
        click.echo("read escape sequence", err=True)
        return 0


_UPDATE_FLAGS = ("memory", "memory_swap", "memory_reservation", "cpus", "cpu_shares", "cpu_quota", "cpu_period",
                 "cpuset_cpus", "cpuset_mems", "pids_limit", "blkio_weight", "restart")


@click.command()
@click.option("-m", "--memory", help="Memory limit (e.g. 64m).")
@click.option("--memory-swap", help="Memory + swap limit (-1: unlimited).")
@click.option("--memory-reservation", help="Memory soft limit.")
@click.option("--cpus", type=float, help="Number of CPUs (e.g. 0.5).")
@click.option("-c", "--cpu-shares", type=int, help="Relative CPU weight.")
@click.option("--cpu-quota", type=int, help="CFS quota in microseconds.")
@click.option("--cpu-period", type=int, help="CFS period in microseconds.")
@click.option("--cpuset-cpus", help="CPUs allowed (0-3, 0,1).")
@click.option("--cpuset-mems", help="Memory nodes allowed.")
@click.option("--pids-limit", type=int, help="Maximum number of processes (-1: unlimited).")
@click.option("--blkio-weight", type=click.IntRange(10, 1000), help="Block IO weight (10-1000).")
@click.option("--restart", help="Restart policy: no | on-failure[:N] | always | unless-stopped.")
@click.argument("containers", nargs=-1, required=True)
@pass_state
def update(state: CliState, containers: tuple[str, ...], **o: Any) -> None:
    """Change the resource limits or restart policy of containers, running or stopped."""
    from pyengine.containers.spec import parse_bytes

    if all(o[name] is None for name in _UPDATE_FLAGS):
        raise UsageError("you must provide one or more flags when using this command")
    if o["cpus"] is not None and o["cpus"] <= 0:
        raise UsageError("--cpus must be greater than 0")
    changes: dict[str, Any] = {}
    for key, flag in (("Memory", "memory"), ("MemoryReservation", "memory_reservation")):
        if o[flag] is not None:
            changes[key] = parse_bytes(o[flag])
    if o["memory_swap"] is not None:
        changes["MemorySwap"] = -1 if o["memory_swap"] == "-1" else parse_bytes(o["memory_swap"])
    if o["cpus"] is not None:
        changes["NanoCpus"] = int(o["cpus"] * 1e9)
    for key, flag in (("CpuShares", "cpu_shares"), ("CpuQuota", "cpu_quota"), ("CpuPeriod", "cpu_period"),
                      ("CpusetCpus", "cpuset_cpus"), ("CpusetMems", "cpuset_mems"), ("PidsLimit", "pids_limit"),
                      ("BlkioWeight", "blkio_weight")):
        if o[flag] is not None:
            changes[key] = o[flag]
    if o["restart"] is not None:
        changes["RestartPolicy"] = _restart_policy(o["restart"])
    engine = state.containers()
    failed = None
    for ref in containers:
        try:
            warnings = engine.update(ref, changes)
        except UsageError:
            raise
        except Exception as exc:  # keep going, as docker update does, and fail at the end
            from pyengine.errors import PyEngineError

            if not isinstance(exc, PyEngineError):
                raise
            click.echo(f"pyengine: error: {exc}", err=True)
            failed = exc
            continue
        for warning in warnings or []:
            click.echo(f"WARNING: {warning}", err=True)
        click.echo(ref)
    if failed is not None:
        sys.exit(failed.exit_code)


@click.command()
@click.option("-f", "--format", "fmt", help="A Go template ({{.State.ExitCode}}, {{json .Config}}) or 'json'.")
@click.option("--type", "kind", type=click.Choice(["container", "image", "network", "volume"]),
              help="Only look for this kind of object [default: any, containers first].")
@click.argument("containers", nargs=-1, required=True, metavar="NAME|ID...")
@pass_state
def inspect(state: CliState, containers: tuple[str, ...], fmt: str | None, kind: str | None) -> None:
    """Show the details of containers (or images, networks, volumes) as JSON or through a template."""
    from pyengine.cli.template import inspect_output

    kinds = [kind] if kind else ["container", "image", "network", "volume"]
    verbs = {"container": state.containers, "image": state.images, "network": state.networks,
             "volume": state.volumes}
    docs = []
    for ref in containers:
        missing: NotFound | None = None
        for what in kinds:
            try:
                docs.append(verbs[what]().inspect(ref))
                break
            except NotFound as exc:
                missing = missing or exc  # the container's (or --type's) own words if nothing has the name
        else:
            assert missing is not None
            raise missing
    click.echo(inspect_output(docs, fmt), nl=False)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_state
def pause(state: CliState, containers: tuple[str, ...]) -> None:
    """Freeze every process of containers (cgroup freezer)."""
    engine = state.containers()
    for ref in containers:
        engine.pause(ref)
        click.echo(ref)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_state
def unpause(state: CliState, containers: tuple[str, ...]) -> None:
    """Thaw paused containers."""
    engine = state.containers()
    for ref in containers:
        engine.unpause(ref)
        click.echo(ref)


@click.command()
@click.argument("container")
@click.argument("new_name")
@pass_state
def rename(state: CliState, container: str, new_name: str) -> None:
    """Rename a container."""
    state.containers().rename(container, new_name)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@pass_state
def top(state: CliState, container: str, ps_args: tuple[str, ...]) -> None:
    """Show the processes of a running container (host PIDs; ps options as docker top's)."""
    import shlex

    table = state.containers().top(container, shlex.join(ps_args) if ps_args else None)
    rows = [table["Titles"], *table["Processes"]]
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(table["Titles"]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(widths[i]) if i < len(row) - 1 else cell
                              for i, cell in enumerate(row)).rstrip())


@click.command()
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@click.option("--format", "fmt", help="'json' for one JSON object per container, or a Go template: "
              "'table {{.Name}}\\t{{.CPUPerc}}\\t{{.MemUsage}}' (Container Name ID CPUPerc MemUsage MemPerc NetIO "
              "BlockIO PIDs).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate container IDs.")
@click.argument("containers", nargs=-1)
@pass_state
def stats(state: CliState, containers: tuple[str, ...], no_stream: bool, fmt: str | None, no_trunc: bool) -> None:
    """Resource usage of running containers, read from their cgroups."""
    import time

    from pyengine.cli import template
    from pyengine.errors import PyEngineError

    engine = state.containers()
    refs = list(containers) or [c["Id"] for c in engine.list()]
    templated = bool(fmt) and fmt != "json"
    previous: dict[str, dict[str, Any]] = {}
    if templated and "CPUPerc" in (fmt or ""):
        # CPU % is a rate: a first sample to measure the next one against, as dockerd waits for two
        for ref in refs:
            try:
                previous[ref] = engine.stats(ref)
            except PyEngineError:
                pass
        time.sleep(0.5)
    while True:
        rows = []
        docs: dict[str, dict[str, Any]] = {}
        for ref in refs:
            try:
                doc = engine.stats(ref)
            except PyEngineError:
                if containers:
                    raise
                continue  # a container that just ended is no longer listed
            docs[ref] = doc
            rows.append(_stats_row(doc))
        if templated:
            contexts = [template.stats_row(doc, ref, previous.get(ref), not no_trunc) for ref, doc in docs.items()]
            click.echo(template.format_rows(fmt or "", contexts, template.STATS_HEADERS, template.STATS_DEFAULT),
                       nl=False)
            previous = docs
        elif fmt == "json":
            for row in rows:
                click.echo(json.dumps(row))
        else:
            click.echo(f"{'CONTAINER ID':<14}{'NAME':<24}{'CPU SECONDS':>12}"
                       f"{'MEM USAGE':>14}{'MEM LIMIT':>14}{'PIDS':>6}")
            for row in rows:
                cpu = (row.get("cpu") or {}).get("usage_ns")
                mem = row.get("memory") or {}
                click.echo(f"{row['ID']:<14}{row['Name']:<24}{'' if cpu is None else f'{cpu / 1e9:.2f}':>12}"
                           f"{_human(mem.get('usage')):>14}{_human(mem.get('limit')):>14}"
                           f"{(row.get('pids') or {}).get('current', ''):>6}")
        if no_stream:
            return
        sys.stdout.flush()
        time.sleep(1)


def _stats_row(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``stats`` prints of Docker's stats document: cpu nanoseconds, memory, pids."""
    cpu = (doc.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = doc.get("memory_stats") or {}
    row: dict[str, Any] = {"ID": (doc.get("id") or "")[:12], "Name": (doc.get("name") or "").lstrip("/")}
    if "total_usage" in cpu:
        row["cpu"] = {"usage_ns": cpu["total_usage"]}
    if memory.get("usage") is not None:
        row["memory"] = {"usage": memory["usage"], "limit": memory.get("limit")}
    if (doc.get("pids_stats") or {}).get("current") is not None:
        row["pids"] = {"current": doc["pids_stats"]["current"]}
    return row


def _human(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f}{unit}" if unit != "B" else f"{value}B"
        size /= 1024
    return str(value)


@click.command()
@click.argument("container_ref", metavar="CONTAINER")
@click.argument("private_port", required=False, metavar="[PRIVATE_PORT[/PROTO]]")
@pass_state
def port(state: CliState, container_ref: str, private_port: str | None) -> None:
    """List the container's published ports (or the mapping of one)."""
    doc = state.containers().inspect(container_ref)
    lines = []
    for key, bindings in ((doc.get("NetworkSettings") or {}).get("Ports") or {}).items():
        if private_port and private_port not in (key, key.split("/", 1)[0]):
            continue
        for binding in bindings or []:
            host_ip = binding.get("HostIp") or "0.0.0.0"
            lines.append(f"{key} -> {f'[{host_ip}]' if ':' in host_ip else host_ip}:{binding.get('HostPort')}")
    if private_port and not lines:
        raise NotFound(f"no public port {private_port!r} published for {doc['Name'].lstrip('/')}")
    for line in lines:
        click.echo(line.split(" -> ", 1)[1] if private_port else line)


@click.group()
def container() -> None:
    """Manage containers."""


@container.command(name="prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
@pass_state
def container_prune(state: CliState, force: bool) -> None:
    """Remove all stopped containers."""
    for container_id in state.containers().prune():
        click.echo(container_id)


@container.command(name="health-run", hidden=True)
@click.argument("container_id")
@pass_state
def health_run(state: CliState, container_id: str) -> None:
    """Internal: one healthcheck of a running container, started by its monitor (or
    pyengine-shim) on the schedule: run the test inside it, record State.Health."""
    from pyengine.containers.engine import Containers
    from pyengine.containers.health import health_run_main

    # always this machine's engine: it runs for the monitor, whatever host its env names
    health_run_main(Containers(state.local_engine()), container_id)


@container.command(name="monitor-resume", hidden=True)
@click.argument("container_id")
@click.argument("started", type=float)
@click.argument("delay", type=float)
@click.argument("exit_code", type=int)
@pass_state
def monitor_resume(state: CliState, container_id: str, started: float, delay: float, exit_code: int) -> None:
    """Internal: what pyengine-shim runs (in the monitor's process) once the container it
    watched has exited: record the exit, clean up or restart (pyengine.containers.monitor)."""
    from pyengine.containers.monitor import resume
    from pyengine.forkserver import PASS_FDS_ENV

    fds = [int(part) for part in os.environ.pop(PASS_FDS_ENV, "").split(",") if part.strip()]
    from pyengine.containers.engine import Containers

    # always this machine's engine: it runs in the monitor, whatever host its env names
    resume(Containers(state.local_engine()), container_id, exit_code, started, delay, fds)


for _cmd in (create, run, start, ps, logs, stop, kill, restart, rm, wait, inspect, pause, unpause, rename, top, stats,
             port, attach, update):
    container.add_command(_cmd, name="ls" if _cmd is ps else _cmd.name)


@click.group()
def volume() -> None:
    """Manage named volumes."""


@volume.command(name="create")
@click.option("-l", "--label", multiple=True)
@click.argument("name", required=False)
@pass_state
def volume_create(state: CliState, name: str | None, label: tuple[str, ...]) -> None:
    """Create a volume."""
    click.echo(state.volumes().create(name, _kv(label, "label"))["Name"])


@volume.command(name="ls")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--format", "fmt", help="'json', 'table' or a Go template: {{.Name}} {{.Driver}} {{.Mountpoint}} ...")
@pass_state
def volume_ls(state: CliState, quiet: bool, fmt: str | None) -> None:
    """List volumes."""
    from pyengine.cli import template

    vols = state.volumes().list()
    if quiet:
        for v in vols:
            click.echo(v["Name"])
        return
    click.echo(template.format_rows(fmt or template.VOLUME_DEFAULT, [template.volume_row(v) for v in vols],
                                    template.VOLUME_HEADERS, template.VOLUME_DEFAULT), nl=False)


@volume.command(name="inspect")
@click.option("-f", "--format", "fmt", help="A Go template ({{.Mountpoint}}) or 'json'.")
@click.argument("names", nargs=-1, required=True)
@pass_state
def volume_inspect(state: CliState, names: tuple[str, ...], fmt: str | None) -> None:
    """Show volumes' details."""
    from pyengine.cli.template import inspect_output

    click.echo(inspect_output([state.volumes().inspect(n) for n in names], fmt), nl=False)


@volume.command(name="rm")
@click.option("-f", "--force", is_flag=True)
@click.argument("names", nargs=-1, required=True)
@pass_state
def volume_rm(state: CliState, names: tuple[str, ...], force: bool) -> None:
    """Remove volumes (refused while a container uses them)."""
    for name in names:
        state.volumes().remove(name, force)
        click.echo(name)


@volume.command(name="prune")
@click.option("-f", "--force", is_flag=True)
@pass_state
def volume_prune(state: CliState, force: bool) -> None:
    """Remove volumes no container uses."""
    for name in state.volumes().prune():
        click.echo(name)


@click.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-u", "--user", help="user[:group] (name or id).")
@click.option("-e", "--env", multiple=True, help="Set an environment variable.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option("--privileged", is_flag=True, help="Every capability for this process.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_state
def exec_(state: CliState, container: str, command: tuple[str, ...], detach: bool, interactive: bool, tty: bool,
          user: str | None, env: tuple[str, ...], workdir: str | None, privileged: bool) -> None:
    """Run a command in a running container; exit with its exit code."""
    # Locally the process gets pipes (or a pty) of the engine's, never this command's own
    # stdio: a container must not read back, seek or truncate the file a user redirected us
    # to. Through a daemon it is POST /containers/{id}/exec and a hijacked /exec/{id}/start.
    code = state.containers().exec(container, list(command), user=user, env=_env(env, ()), workdir=workdir,
                                   tty=tty, privileged=privileged, interactive=interactive, detach=detach)
    if detach:
        return
    state.close()
    sys.stdout.flush()
    os._exit(code)
