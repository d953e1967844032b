"""``pyengine events`` (also ``system events``): the engine's event journal (daemonless) or a
daemon's ``GET /events`` (with -H), as ``docker events`` prints them; streams new events until
``--until`` or ctrl-c."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import click

from pyengine.cli import CliState, pass_state
from pyengine.errors import UsageError


def render(fmt: str, event: dict[str, Any]) -> str:
    """A Go-template subset over an event (or any document): ``{{.Type}}``,
    ``{{.Actor.Attributes.name}}``, ``{{json .}}``, ``{{json .Actor}}``; ``json`` alone means
    ``{{json .}}``; a field's name matches its key whatever the case when no key is exact."""
    if fmt == "json":
        fmt = "{{json .}}"

    def lookup(path: str) -> Any:
        node: Any = event
        for part in [p for p in path.split(".") if p]:
            if node is None:
                return ""
            if not isinstance(node, dict):
                raise UsageError(f"template: can't evaluate field {part} in {path}")
            if part not in node:
                # Go templates name struct fields (APIVersion) where the JSON has ApiVersion
                part = next((key for key in node if key.lower() == part.lower()), part)
            node = node.get(part, "")
        return node

    def field(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if expr.startswith("json ") and expr[5:].strip().startswith("."):
            return json.dumps(lookup(expr[5:].strip()[1:]))
        if expr.startswith("."):
            value = lookup(expr[1:])
            return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        raise UsageError(f"unsupported template expression {{{{{expr}}}}}")

    return re.sub(r"\{\{(.*?)\}\}", field, fmt.replace("\\t", "\t").replace("\\n", "\n"))


@click.command("events")
@click.option("--since", metavar="TIME", help="Show events since TIME (unix seconds, RFC 3339, or a duration: 10m).")
@click.option("--until", metavar="TIME", help="Stream events until TIME, then exit.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="container, image, event, type, label, network, volume (several allowed).")
@click.option("--format", "fmt", metavar="TEMPLATE", help="'json' or a Go-template subset: {{json .}}, {{.Action}}.")
@pass_state
def events(state: CliState, since: str | None, until: str | None, filters: tuple[str, ...], fmt: str | None) -> None:
    """Show the engine's events (containers, images, networks, volumes) as they happen."""
    from pyengine.events import EventFilter, format_event, parse_time

    now = time.time_ns()
    since_ns = parse_time(since, now) if since else None
    until_ns = parse_time(until, now) if until else None
    event_filter = EventFilter.from_pairs(filters)  # refuses a bad filter before anything is asked
    stream = state.system().events(since_ns, until_ns, event_filter.filters)
    try:
        for event in stream:
            click.echo(render(fmt, event) if fmt else format_event(event))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        stream.close()
