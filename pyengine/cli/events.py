"""``pyengine events`` (also ``system events``): the engine's event journal, daemonless, as
``docker events`` prints it; streams new events until ``--until`` or ctrl-c."""

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
    """A Go-template subset over an event: ``{{.Type}}``, ``{{.Actor.Attributes.name}}``,
    ``{{json .}}``, ``{{json .Actor}}``; ``json`` alone means ``{{json .}}``."""
    if fmt == "json":
        fmt = "{{json .}}"

    def lookup(path: str) -> Any:
        node: Any = event
        for part in [p for p in path.split(".") if p]:
            if not isinstance(node, dict):
                raise UsageError(f"template: can't evaluate field {part} in {path}")
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
    from pyengine.events import EventFilter, format_event, journal_for, parse_time

    now = time.time_ns()
    since_ns = parse_time(since, now) if since else None
    until_ns = parse_time(until, now) if until else None
    event_filter = EventFilter.from_pairs(filters)
    journal = journal_for(state.config().run_root)

    def show(event: dict[str, Any]) -> None:
        click.echo(render(fmt, event) if fmt else format_event(event))
        sys.stdout.flush()

    # The follower first, so that nothing recorded between the replay and the follow is lost.
    follower = journal.follower() if until_ns is None or until_ns > now else None
    seen_until = now
    if since_ns is not None or until_ns is not None:
        for event in journal.read(since_ns, min(until_ns or now, now), event_filter):
            show(event)
    if follower is None:
        return
    from pyengine.events import POLL_SECONDS

    try:
        while until_ns is None or time.time_ns() <= until_ns:
            for event in follower.poll():
                if event["timeNano"] <= seen_until and since_ns is not None:
                    continue  # already replayed
                if until_ns is not None and event["timeNano"] > until_ns:
                    return
                if event_filter.match(event):
                    show(event)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()
