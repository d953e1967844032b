"""The image verbs: images, image (inspect ls rm prune history tag save load import), import,
load, save, history, tag, rmi, and the ``system`` group (df, check).

Parses, calls the image store (``pyengine.images``), prints like Docker. The store and the
archive code are imported inside the commands so ``import pyengine.cli`` stays cheap.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import Any

import click

from pyengine.cli import CliState, pass_state
from pyengine.cli.events import events as events_command
from pyengine.errors import UsageError


def human_size(size: float) -> str:
    """Docker's sizes: decimal units, three significant digits (``4.26MB``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{size}"


def human_ago(created: str) -> str:
    """Docker's CREATED column: ``5 minutes ago``."""
    try:
        # Python's parser takes at most microseconds; image configs often carry nanoseconds.
        when = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", created).replace("Z", "+00:00"))
    except ValueError:
        return created or "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = max(0, (datetime.now(UTC) - when).total_seconds())
    if seconds < 1:
        return "Less than a second ago"
    for limit, div, unit in ((60, 1, "second"), (3600, 60, "minute"), (86400 * 2, 3600, "hour"),
                             (86400 * 14, 86400, "day"), (86400 * 60, 86400 * 7, "week"),
                             (86400 * 730, 86400 * 30, "month")):
        if seconds < limit:
            n = int(seconds // div)
            if n == 1:
                return "About a minute ago" if unit == "minute" else f"1 {unit} ago"
            return f"{n} {unit}s ago"
    return f"{int(seconds // (86400 * 365))} years ago"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def store_of(state: CliState) -> Any:
    """The in-process image store (``system check``, which only works here)."""
    return state.engine().images


# -- images / image ls ------------------------------------------------------------------------
def split_repo_tag(name: str) -> tuple[str, str]:
    """``localhost:5000/a/b:t`` -> (``localhost:5000/a/b``, ``t``); no tag -> ``<none>``."""
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "<none>"
    return repo, tag


def _iso(seconds: int | float) -> str:
    return datetime.fromtimestamp(seconds or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_time(seconds: int | float) -> str:
    """Go's ``time.Unix(s, 0).String()`` in local time, as docker's CreatedAt columns print it."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(seconds or 0))


def _image_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per name of each image (Docker's ImageSummary), as ``images`` prints them."""
    rows = []
    for image in summaries:
        digests = {d.partition("@")[0]: d.partition("@")[2] for d in image.get("RepoDigests") or []}
        created = _iso(image.get("Created") or 0)
        names = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"] or [None]
        for name in names:
            repo, tag = split_repo_tag(name) if name else ("<none>", "<none>")
            digest = next((d for r, d in digests.items() if r == repo or r.endswith("/" + repo)), None)
            if digest is None and not name and digests:
                digest = next(iter(digests.values()))
            containers = image.get("Containers", -1)
            rows.append({"Repository": repo, "Tag": tag, "Digest": digest or "<none>",
                         "ID": image["Id"].removeprefix("sha256:")[:12], "FullID": image["Id"],
                         "CreatedSince": human_ago(created), "CreatedAt": _go_time(image.get("Created") or 0),
                         "Size": human_size(image.get("Size") or 0), "VirtualSize": human_size(image.get("Size") or 0),
                         "Containers": "N/A" if containers is None or containers < 0 else str(containers),
                         "SharedSize": "N/A", "UniqueSize": "N/A"})
    return rows


def _list_images(state: CliState, all_images: bool, quiet: bool, digests: bool, fmt: str | None,
                 no_trunc: bool, filters: tuple[str, ...] = (), reference: str | None = None) -> None:
    from pyengine.cli import template
    from pyengine.containers.filters import parse_cli_filters

    wanted = parse_cli_filters(filters)
    if reference:
        wanted.setdefault("reference", []).append(reference)
    rows = _image_rows(state.images().list(all_=all_images, filters=wanted or None))
    if quiet:
        seen = []
        for row in rows:
            ident = row["FullID"] if no_trunc else row["ID"]
            if ident not in seen:
                seen.append(ident)
        for ident in seen:
            click.echo(ident)
        return
    if no_trunc:
        for row in rows:
            row["ID"] = row["FullID"]
    default = template.IMAGES_DIGESTS_DEFAULT if digests else template.IMAGES_DEFAULT
    click.echo(template.format_rows(fmt or default, [template.image_row(r) for r in rows], template.IMAGES_HEADERS,
                                    default), nl=False)


_list_options = [
    click.option("-a", "--all", "all_images", is_flag=True, help="Show all images (default hides intermediates)."),
    click.option("-q", "--quiet", is_flag=True, help="Only show image IDs."),
    click.option("--digests", is_flag=True, help="Show digests."),
    click.option("--format", "fmt", metavar="TEMPLATE",
                 help="'json', 'table' or a Go template: {{.Repository}} {{.Tag}} {{.ID}} {{json .}} ..."),
    click.option("--no-trunc", is_flag=True, help="Don't truncate output."),
    click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
                 help="dangling=true|false, label=KEY[=VALUE], reference=PATTERN, before=IMAGE, since=IMAGE."),
    click.argument("reference", required=False, metavar="[REPOSITORY[:TAG]]"),
]


def _with(options: list[Any]) -> Any:
    def wrap(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


@click.command("images")
@_with(_list_options)
@pass_state
def images(state: CliState, all_images: bool, quiet: bool, digests: bool, fmt: str | None, no_trunc: bool,
           filters: tuple[str, ...], reference: str | None) -> None:
    """List images."""
    _list_images(state, all_images, quiet, digests, fmt, no_trunc, filters, reference)


@click.command("ls")
@_with(_list_options)
@pass_state
def image_ls(state: CliState, all_images: bool, quiet: bool, digests: bool, fmt: str | None, no_trunc: bool,
             filters: tuple[str, ...], reference: str | None) -> None:
    """List images."""
    _list_images(state, all_images, quiet, digests, fmt, no_trunc, filters, reference)


# -- inspect / history ------------------------------------------------------------------------
@click.command("inspect")
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="A Go template ({{.Id}}, {{json .Config}}) or 'json'.")
@click.argument("image_refs", nargs=-1, required=True)
@pass_state
def image_inspect(state: CliState, fmt: str | None, image_refs: tuple[str, ...]) -> None:
    """Show the details of one or more images as JSON."""
    from pyengine.cli.template import inspect_output

    click.echo(inspect_output([state.images().inspect(r) for r in image_refs], fmt), nl=False)


@click.command("history")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-H", "--human", default=True, type=bool, help="Human-readable sizes and dates.")
@click.option("--format", "fmt", metavar="TEMPLATE",
              help="'json', 'table' or a Go template: {{.ID}} {{.CreatedBy}} {{.Size}} ...")
@click.argument("image_ref")
@pass_state
def history(state: CliState, quiet: bool, no_trunc: bool, human: bool, fmt: str | None, image_ref: str) -> None:
    """Show the history of an image."""
    from pyengine.cli import template

    rows = []
    for entry in state.images().history(image_ref):
        image_id = entry["Id"][len("sha256:"):][:12] if entry["Id"].startswith("sha256:") and not no_trunc \
            else entry["Id"]
        created = entry.get("CreatedAt") or _iso(entry.get("Created") or 0)
        created_by = entry["CreatedBy"].replace("\t", " ")
        rows.append(template.plain_row("*formatter.historyContext", {
            "ID": image_id, "CreatedSince": human_ago(created) if human else created, "CreatedAt": created,
            "CreatedBy": created_by if no_trunc else template.ellipsis(created_by, 45),
            "Size": human_size(entry["Size"]) if human else str(entry["Size"]), "Comment": entry["Comment"]}))
    if quiet:
        for row in rows:
            click.echo(row.field("ID"))
        return
    if not fmt:
        click.echo(table([[row.field(k) for k in ("ID", "CreatedSince", "CreatedBy", "Size", "Comment")]
                          for row in rows], ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]))
        return
    click.echo(template.format_rows(fmt, rows, template.HISTORY_HEADERS, template.HISTORY_DEFAULT), nl=False)


# -- tag / rmi / prune ------------------------------------------------------------------------
@click.command("tag")
@click.argument("source")
@click.argument("target")
@pass_state
def tag(state: CliState, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    state.images().tag(source, target)


@click.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@click.argument("image_refs", nargs=-1, required=True)
@pass_state
def rmi(state: CliState, force: bool, image_refs: tuple[str, ...]) -> None:
    """Remove one or more images."""
    images = state.images()
    for ref in image_refs:
        for line in images.remove(ref, force=force):
            for verb, what in line.items():
                click.echo(f"{verb}: {what}")


@click.command("prune")
@click.option("-a", "--all", "all_images", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_state
def image_prune(state: CliState, all_images: bool, force: bool) -> None:
    """Remove unused images."""
    if not force and sys.stdin.isatty():
        what = "all images without at least one container" if all_images else "all dangling images"
        click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?", abort=True)
    report = state.images().prune(all_images)
    deleted = report.get("ImagesDeleted") or []
    if deleted:
        click.echo("Deleted Images:")
        for line in deleted:
            for verb, what in line.items():
                click.echo(f"{verb.lower()}: {what}")
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}")


# -- import / load / save ---------------------------------------------------------------------
@click.command("import")
@click.option("-c", "--change", "changes", multiple=True, help="Apply a Dockerfile instruction (CMD, ENV, ...).")
@click.option("-m", "--message", default="", help="Commit message for the imported image.")
@click.argument("source")
@click.argument("ref", required=False)
@pass_state
def import_(state: CliState, changes: tuple[str, ...], message: str, source: str, ref: str | None) -> None:
    """Import a rootfs tarball (plain, gzip or zstd; - for stdin) as a one-layer image."""
    from pyengine.images import verbs

    verbs.parse_changes(changes)  # bad --change lines fail before the tarball is read
    images = state.images()
    if source == "-":
        image_id = images.import_(sys.stdin.buffer, ref, message, changes)
    else:
        try:
            f = open(source, "rb")  # noqa: SIM115 - closed below; only opening errors are the user's
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
        with f:
            image_id = images.import_(f, ref, message, changes)
    click.echo(image_id)


@click.command("load")
@click.option("-i", "--input", "input_path", default="-", metavar="FILE",
              help="Read from a tar archive file instead of stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output.")
@pass_state
def load(state: CliState, input_path: str, quiet: bool) -> None:
    """Load images from a docker-archive or OCI layout tarball."""
    from pyengine.images.archive import spooled_input

    if input_path == "-" and sys.stdin.isatty():
        raise UsageError("requested load from stdin, but stdin is empty; use -i FILE")
    from pyengine.cli.progress import Progress
    from pyengine.errors import NotFound

    # On a terminal each layer gets a live "Loading layer" row; the "Loaded image" lines below
    # are printed as they always are, so only the layers' events go to the rows.
    progress = Progress(quiet)
    on_event = (lambda event: progress(event) if event.get("id") else None) if progress.terminal else None
    with spooled_input(input_path) as path:
        try:
            archive = open(path, "rb")  # noqa: SIM115 - closed below; only opening errors are the user's
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"{path}: no such file") from None
        with archive, progress:
            lines = state.images().load(archive, on_event=on_event)
    if quiet:
        return
    for line in lines:
        click.echo(line)


@click.command("save")
@click.option("-o", "--output", "output", metavar="FILE", help="Write to a file instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["docker-archive", "oci-archive"]), default="docker-archive",
              help="Archive format.")
@click.argument("image_refs", nargs=-1, required=True)
@pass_state
def save(state: CliState, output: str | None, fmt: str, image_refs: tuple[str, ...]) -> None:
    """Save one or more images to a tar archive (stdout by default)."""
    from pyengine.images.archive import write_output

    if output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal; use -o FILE or redirect stdout")
    images = state.images()
    for ref in image_refs:
        images.inspect(ref)  # a missing image fails before anything is written
    write_output(output, lambda stream: images.save(list(image_refs), stream, fmt))


# -- groups -----------------------------------------------------------------------------------
@click.group("image")
def image() -> None:
    """Manage images."""


for _name, _command in (("inspect", image_inspect), ("ls", image_ls), ("rm", rmi), ("prune", image_prune),
                        ("history", history), ("tag", tag), ("save", save), ("load", load), ("import", import_)):
    image.add_command(_command, _name)


@click.group("system")
def system() -> None:
    """Manage the engine's stores."""


system.add_command(events_command, "events")


@system.command("df")
@click.option("-v", "--verbose", is_flag=True, help="Show every image.")
@pass_state
def system_df(state: CliState, verbose: bool) -> None:
    """Show disk usage: images, containers, volumes (Docker's ``system df``)."""
    usage = state.system().disk_usage()
    images = usage.get("Images") or []
    containers = usage.get("Containers") or []
    volumes = usage.get("Volumes") or []
    images_size = usage.get("LayersSize") or 0
    unused = sum(max(0, (i.get("Size") or 0) - max(0, i.get("SharedSize") or 0)) for i in images
                 if not i.get("Containers"))
    reclaim = min(images_size, unused)
    percent = f" ({round(100 * reclaim / images_size)}%)" if images_size else ""
    rw = sum(c.get("SizeRw") or 0 for c in containers)
    rw_idle = sum(c.get("SizeRw") or 0 for c in containers if c.get("State") != "running")
    vol_size = sum((v.get("UsageData") or {}).get("Size") or 0 for v in volumes)
    vol_idle = sum((v.get("UsageData") or {}).get("Size") or 0 for v in volumes
                   if not (v.get("UsageData") or {}).get("RefCount"))
    click.echo(table([["Images", str(len(images)), str(sum(1 for i in images if i.get("Containers"))),
                       human_size(images_size), human_size(reclaim) + percent],
                      ["Containers", str(len(containers)),
                       str(sum(1 for c in containers if c.get("State") == "running")), human_size(rw),
                       human_size(rw_idle)],
                      ["Local Volumes", str(len(volumes)),
                       str(sum(1 for v in volumes if (v.get("UsageData") or {}).get("RefCount"))),
                       human_size(vol_size), human_size(vol_idle)],
                      ["Build Cache", str(len(usage.get("BuildCache") or [])), "0",
                       human_size(sum(b.get("Size") or 0 for b in usage.get("BuildCache") or [])), "0B"]],
                     ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]))
    if verbose:
        click.echo("")
        rows = _image_rows(images)
        click.echo(table([[r["Repository"], r["Tag"], r["ID"], r["CreatedSince"], r["Size"]] for r in rows],
                         ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]))


@system.command("prune")
@click.option("-a", "--all", "all_images", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("--volumes", is_flag=True, help="Prune volumes no container uses too.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_state
def system_prune(state: CliState, all_images: bool, volumes: bool, force: bool) -> None:
    """Remove stopped containers, unused networks, dangling (with -a: unused) images and the
    build cache; with --volumes, unused volumes too. Prints what went, as docker system prune."""
    if not force and sys.stdin.isatty():
        what = ["all stopped containers", "all networks not used by at least one container"]
        if volumes:
            what.append("all volumes not used by at least one container")
        what += ["all images without at least one container associated to them" if all_images
                 else "all dangling images", "unused build cache"]
        click.confirm("WARNING! This will remove:\n" + "\n".join(f"  - {w}" for w in what)
                      + "\n\nAre you sure you want to continue?", abort=True)
    reclaimed = 0
    sections: list[tuple[str, list[str]]] = [("Deleted Containers:", list(state.containers().prune())),
                                             ("Deleted Networks:", list(state.networks().prune()))]
    if volumes:
        sections.append(("Deleted Volumes:", list(state.volumes().prune())))
    report = state.images().prune(all_images)
    reclaimed += report.get("SpaceReclaimed") or 0
    sections.append(("Deleted Images:", [f"{verb.lower()}: {what}" for line in report.get("ImagesDeleted") or []
                                         for verb, what in line.items()]))
    cache = state.images().prune_build_cache()
    reclaimed += cache.get("SpaceReclaimed") or 0
    sections.append(("Deleted build cache objects:", [str(c) for c in cache.get("CachesDeleted") or []]))
    for title, lines in sections:
        if lines:
            click.echo("\n".join([title, *lines]) + "\n")
    click.echo(f"Total reclaimed space: {human_size(reclaimed)}")


def _check_stores(state: CliState, repair: bool) -> list[str]:
    """The image store's problems (checked under the container store's lock too, so that no
    layer is being made meanwhile), then the container store's; with ``repair`` each is fixed,
    a damaged container removed as ``rm -f`` would."""
    from pyengine.containers.engine import Containers

    store = store_of(state)
    containers = Containers(state.engine())
    with containers.store.lock():
        problems = store.check(repair=repair)
    container_problems, damaged = containers.store.check(repair=repair)
    if repair:
        for container_id in damaged:
            containers.remove(container_id, force=True)
    return problems + container_problems


@system.command("restore")
@pass_state
def system_restore(state: CliState) -> None:
    """Start the containers a reboot stopped: restart policy always, or unless-stopped unless
    the user stopped them (a run root of an earlier boot is cleared first). At boot, as
    podman-restart.service does: see docs/examples/pyengine-restore.service."""
    from pyengine.containers.engine import Containers
    from pyengine.containers.restore import restore

    result = restore(Containers(state.engine()))
    for container_id in result.started:
        click.echo(container_id)
    for container_id, reason in result.failed:
        click.echo(f"pyengine: error: cannot restart {container_id[:12]}: {reason}", err=True)
    if result.failed:
        sys.exit(1)


@system.command("check")
@click.option("--repair", is_flag=True, help="Remove what is broken so that the check passes.")
@pass_state
def system_check(state: CliState, repair: bool) -> None:
    """Verify every blob's digest, every layer against the driver, every tag's target, every
    container's record, and find what interrupted writes left behind."""
    problems = _check_stores(state, repair)
    for problem in problems:
        click.echo(problem)
    if repair and problems:
        remaining = _check_stores(state, False)
        for problem in remaining:
            click.echo(f"still broken: {problem}", err=True)
        if remaining:
            sys.exit(1)
        click.echo(f"repaired {len(problems)} problem(s)")
        return
    if problems:
        click.echo(f"{len(problems)} problem(s) found; run `pyengine system check --repair`", err=True)
        sys.exit(1)
    click.echo("ok")
