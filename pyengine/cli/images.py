"""The image verbs: images, image (inspect ls rm prune history tag save load import), import,
load, save, history, tag, rmi, and the ``system`` group (df, check).

Parses, calls the image store (``pyengine.images``), prints like Docker. The store and the
archive code are imported inside the commands so ``import pyengine.cli`` stays cheap.
"""

from __future__ import annotations

import json
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


def render_format(fmt: str, item: dict[str, Any]) -> str:
    """A small subset of Go templates: ``{{.Field}}``, ``{{json .}}``, ``{{json .Field}}``, \\t."""
    def field(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if expr == "json .":
            return json.dumps(item)
        if expr.startswith("json ."):
            return json.dumps(item.get(expr[len("json ."):]))
        if expr.startswith("."):
            if expr[1:] not in item:
                raise UsageError(f"template: unknown field {expr}; known: {', '.join(sorted(item))}")
            return str(item[expr[1:]])
        raise UsageError(f"unsupported template expression {{{{{expr}}}}}")
    return re.sub(r"\{\{(.*?)\}\}", field, fmt.replace("\\t", "\t").replace("\\n", "\n"))


def store_of(state: CliState) -> Any:
    return state.engine().images


# -- images / image ls ------------------------------------------------------------------------
def _image_rows(store: Any, show_digests: bool) -> list[dict[str, Any]]:
    from pyengine.images.reference import parse_reference

    tags = store.tags()
    rows = []
    for image in sorted(store.images(), key=lambda i: i.created, reverse=True):
        refs: list[Any] = [parse_reference(t) for t in image.tags] or [None]
        for ref in refs:
            digest = tags.get(str(ref)) if ref else image.manifest_digest
            rows.append({"Repository": ref.familiar_repository if ref else "<none>",
                         "Tag": (ref.tag or "<none>") if ref else "<none>",
                         "Digest": digest or "<none>", "ID": image.short_id, "FullID": image.id,
                         "CreatedSince": human_ago(image.created), "CreatedAt": image.created,
                         "Size": human_size(image.size), "VirtualSize": human_size(image.size)})
    return rows


def _list_images(state: CliState, all_images: bool, quiet: bool, digests: bool, fmt: str | None,
                 no_trunc: bool) -> None:
    rows = _image_rows(store_of(state), digests)
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
    if fmt and fmt != "table" and not fmt.startswith("table "):
        if fmt == "json":
            fmt = "{{json .}}"
        for row in rows:
            click.echo(render_format(fmt, row))
        return
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    keys = ["Repository", "Tag"] + (["Digest"] if digests else []) + ["ID", "CreatedSince", "Size"]
    click.echo(table([[r[k] for k in keys] for r in rows], header))


_list_options = [
    click.option("-a", "--all", "all_images", is_flag=True, help="Show all images (default hides intermediates)."),
    click.option("-q", "--quiet", is_flag=True, help="Only show image IDs."),
    click.option("--digests", is_flag=True, help="Show digests."),
    click.option("--format", "fmt", metavar="TEMPLATE", help="Go-template subset: {{.Repository}}, {{json .}}, json."),
    click.option("--no-trunc", is_flag=True, help="Don't truncate output."),
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
def images(state: CliState, all_images: bool, quiet: bool, digests: bool, fmt: str | None, no_trunc: bool) -> None:
    """List images."""
    _list_images(state, all_images, quiet, digests, fmt, no_trunc)


@click.command("ls")
@_with(_list_options)
@pass_state
def image_ls(state: CliState, all_images: bool, quiet: bool, digests: bool, fmt: str | None, no_trunc: bool) -> None:
    """List images."""
    _list_images(state, all_images, quiet, digests, fmt, no_trunc)


# -- inspect / history ------------------------------------------------------------------------
def inspect_data(store: Any, image: Any) -> dict[str, Any]:
    from pyengine.images.reference import parse_reference

    config = image.image_config
    repo_digests = sorted({f"{parse_reference(t).repository}@{store.tags()[t]}" for t in image.tags
                           if t in store.tags()})
    return {
        "Id": image.id,
        "RepoTags": [parse_reference(t).familiar() for t in image.tags],
        "RepoDigests": repo_digests,
        "Created": image.created,
        "Author": config.get("author", ""),
        "Config": image.config,
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Size": image.size,
        "GraphDriver": {"Name": getattr(store.storage, "name", ""), "Data": {"TopLayer": image.top_layer}},
        "RootFS": {"Type": "layers", "Layers": image.diff_ids},
        "Manifests": image.manifests,
        "Descriptor": {"digest": image.manifest_digest},
    }


@click.command("inspect")
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go-template subset: {{.Id}}, {{json .Config}}.")
@click.argument("image_refs", nargs=-1, required=True)
@pass_state
def image_inspect(state: CliState, fmt: str | None, image_refs: tuple[str, ...]) -> None:
    """Show the details of one or more images as JSON."""
    store = store_of(state)
    found = [inspect_data(store, store.resolve_image(r)) for r in image_refs]
    if fmt:
        for item in found:
            click.echo(render_format(fmt, item))
        return
    click.echo(json.dumps(found, indent=4))


@click.command("history")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-H", "--human", default=True, type=bool, help="Human-readable sizes and dates.")
@click.argument("image_ref")
@pass_state
def history(state: CliState, quiet: bool, no_trunc: bool, human: bool, image_ref: str) -> None:
    """Show the history of an image."""
    image = store_of(state).resolve_image(image_ref)
    entries = image.image_config.get("history") or [{"created": image.created}] * len(image.layers)
    sizes = list(image.layer_sizes)
    rows = []
    for i, entry in enumerate(entries):
        size = 0 if entry.get("empty_layer") or not sizes else sizes.pop(0)
        rows.append([image.short_id if i == len(entries) - 1 else "<missing>",
                     human_ago(entry.get("created", "")) if human else entry.get("created", ""),
                     entry.get("created_by", "") if no_trunc else entry.get("created_by", "")[:45],
                     human_size(size) if human else str(size), entry.get("comment", "")])
    rows.reverse()
    if quiet:
        for row in rows:
            click.echo(row[0])
        return
    click.echo(table(rows, ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]))


# -- tag / rmi / prune ------------------------------------------------------------------------
@click.command("tag")
@click.argument("source")
@click.argument("target")
@pass_state
def tag(state: CliState, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    store_of(state).tag(source, target)


@click.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@click.argument("image_refs", nargs=-1, required=True)
@pass_state
def rmi(state: CliState, force: bool, image_refs: tuple[str, ...]) -> None:
    """Remove one or more images."""
    store = store_of(state)
    for ref in image_refs:
        for verb, what in store.remove(ref, force=force):
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
    out, reclaimed = store_of(state).prune(all_images)
    if out:
        click.echo("Deleted Images:")
        for verb, what in out:
            click.echo(f"{verb.lower()}: {what}")
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(reclaimed)}")


# -- import / load / save ---------------------------------------------------------------------
def _parse_changes(changes: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for change in changes:
        key, _, value = change.strip().partition(" ")
        key = key.upper()
        value = value.strip()
        as_list = json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
        if key == "CMD":
            config["Cmd"] = as_list
        elif key == "ENTRYPOINT":
            config["Entrypoint"] = as_list
        elif key == "ENV":
            name, _, val = value.replace("=", " ", 1).partition(" ")
            config.setdefault("Env", []).append(f"{name}={val.strip()}")
        elif key == "WORKDIR":
            config["WorkingDir"] = value
        elif key == "USER":
            config["User"] = value
        elif key == "LABEL":
            name, _, val = value.partition("=")
            config.setdefault("Labels", {})[name] = val.strip('"')
        elif key == "EXPOSE":
            config.setdefault("ExposedPorts", {})[value if "/" in value else f"{value}/tcp"] = {}
        elif key == "STOPSIGNAL":
            config["StopSignal"] = value
        else:
            raise UsageError(f"unsupported --change instruction {key!r}")
    return config


@click.command("import")
@click.option("-c", "--change", "changes", multiple=True, help="Apply a Dockerfile instruction (CMD, ENV, ...).")
@click.option("-m", "--message", default="", help="Commit message for the imported image.")
@click.argument("source")
@click.argument("ref", required=False)
@pass_state
def import_(state: CliState, changes: tuple[str, ...], message: str, source: str, ref: str | None) -> None:
    """Import a rootfs tarball (plain, gzip or zstd; - for stdin) as a one-layer image."""
    from pyengine.images.archive import import_rootfs

    config = _parse_changes(changes)
    store = store_of(state)
    if source == "-":
        image = import_rootfs(store, sys.stdin.buffer, ref, message, config)
    else:
        try:
            with open(source, "rb") as f:
                image = import_rootfs(store, f, ref, message, config)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    click.echo(image.id)


@click.command("load")
@click.option("-i", "--input", "input_path", default="-", metavar="FILE",
              help="Read from a tar archive file instead of stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output.")
@pass_state
def load(state: CliState, input_path: str, quiet: bool) -> None:
    """Load images from a docker-archive or OCI layout tarball."""
    from pyengine.images.archive import load_archive, spooled_input

    if input_path == "-" and sys.stdin.isatty():
        raise UsageError("requested load from stdin, but stdin is empty; use -i FILE")
    store = store_of(state)
    with spooled_input(input_path) as path:
        loaded = load_archive(store, path)
    if quiet:
        return
    for name, image in loaded:
        if name:
            from pyengine.images.reference import parse_reference

            click.echo(f"Loaded image: {parse_reference(name).familiar()}")
        else:
            click.echo(f"Loaded image ID: {image.id}")


@click.command("save")
@click.option("-o", "--output", "output", metavar="FILE", help="Write to a file instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["docker-archive", "oci-archive"]), default="docker-archive",
              help="Archive format.")
@click.argument("image_refs", nargs=-1, required=True)
@pass_state
def save(state: CliState, output: str | None, fmt: str, image_refs: tuple[str, ...]) -> None:
    """Save one or more images to a tar archive (stdout by default)."""
    import os

    from pyengine.images.archive import open_output, save_archive

    if output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal; use -o FILE or redirect stdout")
    store = store_of(state)
    for ref in image_refs:
        store.resolve_image(ref)  # a missing image fails before anything is written
    stream, tmp = open_output(output)
    try:
        save_archive(store, list(image_refs), stream, fmt)
        stream.flush()
        if tmp:
            os.fsync(stream.fileno())
            stream.close()
            os.rename(tmp, output)  # type: ignore[arg-type]
    except BaseException:
        if tmp:
            stream.close()
            os.unlink(tmp)
        raise


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
    """Show disk usage of images."""
    store = store_of(state)
    usage = store.disk_usage()
    reclaim = usage["reclaimable"]
    percent = f" ({round(100 * reclaim / usage['images_size'])}%)" if usage["images_size"] else ""
    click.echo(table([["Images", str(usage["images"]), str(usage["active"]), human_size(usage["images_size"]),
                       human_size(reclaim) + percent],
                      ["Containers", str(usage["containers"]), str(usage["containers"]), "-", "-"],
                      ["Blobs", "-", "-", human_size(usage["blob_bytes"]), "-"]],
                     ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]))
    if verbose:
        click.echo("")
        rows = _image_rows(store, False)
        click.echo(table([[r["Repository"], r["Tag"], r["ID"], r["CreatedSince"], r["Size"]] for r in rows],
                         ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]))


@system.command("check")
@click.option("--repair", is_flag=True, help="Remove what is broken so that the check passes.")
@pass_state
def system_check(state: CliState, repair: bool) -> None:
    """Verify every blob's digest, every layer against the driver, every tag's target."""
    store = store_of(state)
    problems = store.check(repair=repair)
    for problem in problems:
        click.echo(problem)
    if repair and problems:
        remaining = store.check(repair=False)
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
