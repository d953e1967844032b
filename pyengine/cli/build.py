"""Commands on images made from containers and Dockerfiles: build, builder prune, commit, diff,
cp, export.

Parses, calls the build and container filesystem verbs of ``CliState.images()`` and
``containers()`` (this machine's builder and ``pyengine.containers.changes``, or a daemon's
``POST /build``, ``/commit``, ``/changes``, ``/export`` and ``/archive`` with -H), prints like
Docker. Engine modules are imported inside the commands so ``import pyengine.cli`` stays cheap.
"""

from __future__ import annotations

import os
import posixpath
import sys
import tarfile
from collections.abc import Callable
from typing import Any

import click

from pyengine.cli import CliState, pass_state
from pyengine.errors import NotFound, UsageError


# -- commit / diff / export --------------------------------------------------------------------
@click.command("commit")
@click.option("-a", "--author", default="", help='Author (e.g. "Jane Doe <jane@example.com>").')
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction to the image (CMD ENTRYPOINT ENV EXPOSE LABEL ONBUILD "
                   "STOPSIGNAL USER VOLUME WORKDIR).")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-p/--no-pause", "--pause", "pause", default=True, help="Pause the container during commit "
              "[default: pause].")
@click.argument("container")
@click.argument("repository", required=False)
@pass_state
def commit(state: CliState, author: str, changes: tuple[str, ...], message: str, pause: bool, container: str,
           repository: str | None) -> None:
    """Create a new image from a container's changes."""
    click.echo(state.containers().commit(container, repository, list(changes), message=message, author=author,
                                         pause=pause))


@click.command("diff")
@click.argument("container")
@pass_state
def diff(state: CliState, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem (A added, C changed, D deleted)."""
    for kind, path in state.containers().diff(container):
        click.echo(f"{kind} {path}")


@click.command("export")
@click.option("-o", "--output", metavar="FILE", help="Write to a file instead of stdout.")
@click.argument("container")
@pass_state
def export(state: CliState, output: str | None, container: str) -> None:
    """Export a container's filesystem as a tar archive."""
    from pyengine.images.archive import write_output

    if output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal; use -o FILE or redirect stdout")
    containers = state.containers()
    containers.inspect(container)  # a missing container fails before anything is written
    write_output(output, lambda stream: containers.export(container, stream))


# -- cp ----------------------------------------------------------------------------------------
def split_cp_arg(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` -> (container, path); a local path (``/x``, ``./x``, ``x``, ``-``) ->
    (None, path). As docker: a path starting with ``/`` or ``.`` is local whatever it holds."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    container, _, path = arg.partition(":")
    if not container:
        raise UsageError(f"invalid copy argument {arg!r}: the container name is empty")
    return container, path or "/"


@click.command("cp")
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information).")
@click.option("-L", "--follow-link", is_flag=True, help="Always follow a symbolic link in SRC.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output (there is none).")
@click.argument("source")
@click.argument("destination")
@pass_state
def cp(state: CliState, archive: bool, follow_link: bool, quiet: bool, source: str, destination: str) -> None:
    """Copy files between a container and the local filesystem.

    \b
    pyengine cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-
    pyengine cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH
    """
    src_container, src_path = split_cp_arg(source)
    dst_container, dst_path = split_cp_arg(destination)
    if src_container and dst_container:
        raise UsageError("copying between containers is not supported")
    if not src_container and not dst_container:
        raise UsageError("must specify at least one container source")
    containers = state.containers()
    if src_container:
        _copy_out(containers, src_container, src_path, dst_path, follow_link)
    else:
        assert dst_container is not None
        _copy_in(containers, src_path, dst_container, dst_path, archive, follow_link)


def _copy_out(containers: Any, container: str, src: str, dest: str, follow_link: bool) -> None:
    from pyengine.containers.changes import extract_to_host

    stream, info = containers.copy_from(container, src, follow_link)
    try:
        if dest == "-":
            import shutil

            shutil.copyfileobj(stream, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
            return
        src_is_dir = bool(info["mode"] & (1 << 31))
        contents_only = src.endswith("/.")
        top = "." if contents_only or info["name"] == "/" else info["name"]
        if os.path.isdir(dest):
            extract_to_host(stream, dest)
            return
        if os.path.lexists(dest):
            if src_is_dir:
                raise UsageError(f"cannot copy directory {src} to the file {dest}")
            extract_to_host(stream, os.path.dirname(os.path.abspath(dest)), rename=(top, os.path.basename(dest)))
            return
        parent = os.path.dirname(os.path.abspath(dest.rstrip("/") or "/"))
        if dest.endswith("/") and not src_is_dir:
            raise NotFound(f"destination directory {dest} does not exist")
        if not os.path.isdir(parent):
            raise NotFound(f"destination directory {parent} does not exist")
        if contents_only:
            os.mkdir(dest)
            extract_to_host(stream, dest)
            return
        extract_to_host(stream, parent, rename=(top, os.path.basename(dest.rstrip("/"))))
    finally:
        stream.close()


def _host_tar(src: str, arcname: str, follow_link: bool, contents_only: bool) -> Any:
    import tempfile

    out = tempfile.SpooledTemporaryFile(max_size=32 << 20)

    def numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        top = os.path.realpath(src) if follow_link else src
        if contents_only:
            tar.add(top, arcname=".", recursive=False, filter=numeric)
            for name in sorted(os.listdir(top)):
                tar.add(os.path.join(top, name), arcname=name, filter=numeric)
        else:
            tar.add(top, arcname=arcname, filter=numeric)
    out.seek(0)
    return out


def _copy_in(containers: Any, src: str, container: str, dest: str, archive: bool, follow_link: bool) -> None:
    if src == "-":
        containers.copy_to(container, dest, sys.stdin.buffer, copy_uid_gid=archive)
        return
    if not os.path.lexists(src):
        raise NotFound(f"could not find the file {src} on the local filesystem")
    src_is_dir = os.path.isdir(src) if (follow_link or not os.path.islink(src)) else False
    contents_only = src.endswith("/.")
    try:
        info: dict[str, Any] | None = containers.stat_path(container, dest, follow_link=True)
    except NotFound:
        info = None
    if info is not None and info["mode"] & (1 << 31):
        stream = _host_tar(src, os.path.basename(os.path.normpath(src)), follow_link, contents_only)
        target = dest
    elif info is not None:
        if src_is_dir:
            raise UsageError(f"cannot copy directory {src} to the file {dest} in the container")
        stream = _host_tar(src, posixpath.basename(dest.rstrip("/")), follow_link, False)
        target = posixpath.dirname(posixpath.normpath("/" + dest))
    else:
        if dest.endswith("/") and not src_is_dir:
            raise NotFound(f"destination directory {dest} does not exist in container {container}")
        name = posixpath.basename(posixpath.normpath("/" + dest))
        target = posixpath.dirname(posixpath.normpath("/" + dest))
        stream = _host_tar(src, name, follow_link, False)
    try:
        containers.copy_to(container, target, stream, copy_uid_gid=archive)
    finally:
        stream.close()


# -- build -------------------------------------------------------------------------------------
def _kv_list(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key or not sep:
            raise UsageError(f"invalid {what} {value!r}: use KEY=VALUE")
        out[key] = val
    return out


def _build_args(values: tuple[str, ...]) -> dict[str, str | None]:
    """``--build-arg K=V``, or ``K`` alone: the value of K in this environment (unset: none)."""
    out: dict[str, str | None] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid --build-arg {value!r}: use KEY[=VALUE]")
        out[key] = val if sep else os.environ.get(key)
    return out


def _secrets(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        fields = dict(part.partition("=")[::2] for part in value.split(","))
        secret_id = fields.get("id")
        source = fields.get("src") or fields.get("source")
        if not secret_id or not source:
            raise UsageError(f"invalid --secret {value!r}: use id=ID,src=PATH")
        if not os.path.isfile(source):
            raise UsageError(f"--secret {secret_id}: {source} is not a file")
        out[secret_id] = os.path.abspath(source)
    return out


def _output(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    fields = dict(part.partition("=")[::2] for part in value.split(","))
    kind, dest = fields.get("type"), fields.get("dest")
    if kind not in ("oci", "docker") or not dest:
        raise UsageError(f"invalid --output {value!r}: use type=oci|docker,dest=PATH")
    return kind, dest


class _Printer:
    """Prints the executor's events as the legacy builder's plain lines (only the ID with -q);
    a base image's pull as ``pull`` shows it (``pyengine.cli.progress``)."""

    def __init__(self, quiet: bool, style: str = "auto") -> None:
        from pyengine.cli.progress import Progress

        self.quiet = quiet
        self.at_line_start = True
        self.progress = Progress(quiet, terminal={"tty": True, "plain": False}.get(style))

    def __call__(self, kind: str, text: Any) -> None:
        if self.quiet:
            return
        if kind == "progress":
            self.progress(text)
            return
        self.progress.stop()  # the pull's rows stay above the step's next line
        out = sys.stdout
        if kind == "output":
            out.write(text)
            self.at_line_start = text.endswith("\n")
        elif kind == "aux":
            return
        else:
            if not self.at_line_start:
                out.write("\n")
            stream = sys.stderr if kind == "warning" else out
            stream.write(text + "\n")
            self.at_line_start = True
        out.flush()


def _view(quiet: bool, progress: str, remote: bool) -> tuple[Callable[[str, Any], None], Callable[[bool], None]]:
    """The build's ``on_event`` callback and what ends it (told whether the build failed): the
    live view on stderr (``--progress tty``, or auto with stderr a terminal), else the lines."""
    if not quiet and (progress == "tty" or (progress == "auto" and sys.stderr.isatty())):
        from pyengine.cli.build_view import BuildView

        view = BuildView(legacy_stream=remote)
        return view, lambda failed: view.close(failed)
    printer = _Printer(quiet, progress)
    return printer, lambda failed: printer.progress.stop()


@click.command("build")
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]", help="Name and tag the image.")
@click.option("-f", "--file", "dockerfile", metavar="FILE", help="The Dockerfile [CONTEXT/Dockerfile]; - for stdin.")
@click.option("--build-arg", "build_args", multiple=True, metavar="K[=V]", help="Set a build-time variable.")
@click.option("--target", metavar="STAGE", help="Build this stage (default the last).")
@click.option("--no-cache", is_flag=True, help="Do not use the build cache.")
@click.option("--pull", is_flag=True, help="Always pull the base images.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Set a label on the image.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.option("--iidfile", metavar="FILE", help="Write the image ID to FILE.")
@click.option("--network", default="", metavar="MODE", help="RUN's network: none, host, bridge or a network name.")
@click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=PATH", help="A secret for RUN mounts.")
@click.option("--add-host", "add_hosts", multiple=True, metavar="HOST:IP", help="Add a line to RUN's /etc/hosts.")
@click.option("--progress", type=click.Choice(["auto", "plain", "tty", "quiet"]), default="auto",
              help="tty: a live view of the steps on stderr; plain: the legacy builder's lines; quiet: "
                   "the image ID only (-q); auto: tty when stderr is a terminal, else plain.")
@click.option("--output", "output", metavar="type=oci|docker,dest=PATH", help="Also write the image as an archive.")
@click.option("--rm/--no-rm", "remove", default=True, help="Remove intermediate containers (always done).")
@click.option("--force-rm", is_flag=True, help="Remove intermediate containers even after a failure (always done).")
@click.argument("context")
@pass_state
def build(state: CliState, tags: tuple[str, ...], dockerfile: str | None, build_args: tuple[str, ...],
          target: str | None, no_cache: bool, pull: bool, labels: tuple[str, ...], quiet: bool,
          iidfile: str | None, network: str, secrets: tuple[str, ...], add_hosts: tuple[str, ...], progress: str,
          output: str | None, remove: bool, force_rm: bool, context: str) -> None:
    """Build an image from a Dockerfile and a context (a directory, or - for a tar on stdin)."""
    from pyengine.build.executor import BuildOptions
    from pyengine.images.reference import parse_reference

    for tag in tags:
        if parse_reference(tag).digest:
            raise UsageError(f"invalid tag {tag!r}: a tag cannot carry a digest")
    for entry in add_hosts:
        name, sep, address = entry.partition(":")
        if not name or not sep or not address:
            raise UsageError(f"invalid --add-host {entry!r}: use HOST:IP")
    archive = _output(output)
    images = state.images()
    if archive and _archive_format(archive[0]) not in images.save_formats:
        raise UsageError(f"--output type={archive[0]} cannot be fetched from the daemon (it sends "
                         f"{', '.join(images.save_formats)}); use type=docker")
    options = BuildOptions(tags=list(tags), build_args=_build_args(build_args), target=target, no_cache=no_cache,
                           pull=pull, labels=_kv_list(labels, "--label"), network=network,
                           secrets=_secrets(secrets), extra_hosts=list(add_hosts))
    if context == "-" and dockerfile == "-":
        raise UsageError("the context and the Dockerfile cannot both come from stdin")
    dockerfile_text = sys.stdin.read() if dockerfile == "-" else None
    source: Any = sys.stdin.buffer if context == "-" else context
    quiet = quiet or progress == "quiet"
    on_event, close = _view(quiet, progress, state.remote)
    failed = True
    try:
        image_id = images.build(source, options, dockerfile=None if dockerfile == "-" else dockerfile,
                                dockerfile_text=dockerfile_text, quiet=quiet, on_event=on_event)
        failed = False
    finally:
        close(failed)
    if quiet:
        click.echo(image_id)
    if iidfile:
        with open(iidfile, "w") as f:
            f.write(image_id)
    if archive:
        _write_output(images, image_id, *archive)


def _archive_format(kind: str) -> str:
    return "oci-archive" if kind == "oci" else "docker-archive"


def _write_output(images: Any, image_id: str, kind: str, dest: str) -> None:
    from pyengine.images.archive import write_output

    write_output(dest, lambda stream: images.save([image_id], stream, _archive_format(kind)))


@click.group("builder")
def builder() -> None:
    """Manage the build cache."""


@builder.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all of the build cache (the only kind kept).")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_state
def builder_prune(state: CliState, all_: bool, force: bool) -> None:
    """Remove the build cache: step records, cache mounts, intermediate images only it holds."""
    from pyengine.cli.images import human_size

    answer = state.images().prune_build_cache()
    for cache_id in answer["CachesDeleted"]:
        click.echo(f"Deleted: {cache_id}")
    click.echo(f"Total reclaimed space: {human_size(answer['SpaceReclaimed'])}")
