"""``pyengine events`` (also ``system events``): the engine's event journal (daemonless) or a
daemon's ``GET /events`` (with -H), as ``docker events`` prints them; streams new events until
``--until`` or ctrl-c."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from pyengine.cli import CliState, pass_state


def render(fmt: str, event: dict[str, Any]) -> str:
    """An event (or any document) through a Go template (``pyengine.cli.template``):
    ``{{.Type}}``, ``{{.Actor.Attributes.name}}``, ``{{json .}}``; ``json`` alone means
    ``{{json .}}``; a field may be named as docker's Go struct names it (``{{.Status}}``,
    ``{{.TimeNano}}``) where the JSON key differs in case."""
    from pyengine.cli.template import render as render_template

    if "json" in fmt:
        return render_template(fmt, event, document=True)  # as dockerd sent it: empty fields left out
    # every field of docker's events.Message, as its template sees them even where empty
    message = {"status": "", "id": "", "from": "", "Type": "", "Action": "", "scope": "", "time": 0, "timeNano": 0,
               **event}
    message["Actor"] = {"ID": "", "Attributes": {}, **(event.get("Actor") or {})}
    return render_template(fmt, message, document=True)


@click.command("events")
@click.option("--since", metavar="TIME", help="Show events since TIME (unix seconds, RFC 3339, or a duration: 10m).")
@click.option("--until", metavar="TIME", help="Stream events until TIME, then exit.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="container, image, event, type, label, network, volume (several allowed).")
@click.option("--format", "fmt", metavar="TEMPLATE",
              help="'json' or a Go template: {{json .}}, {{.Type}} {{.Action}} {{.Actor.Attributes.name}}.")
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
