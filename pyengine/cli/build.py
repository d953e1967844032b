"""Commands on images made from containers and Dockerfiles: build, builder prune, commit, diff,
cp, export.

Parses, calls the builder (``pyengine.build``) and the container filesystem verbs
(``pyengine.containers.changes``), prints like Docker. Engine modules are imported inside the
commands so ``import pyengine.cli`` stays cheap.
"""

from __future__ import annotations

import os
import posixpath
import sys
import tarfile
from typing import Any

import click

from pyengine.cli import CliState, pass_state
from pyengine.errors import NotFound, UsageError


def _containers(state: CliState) -> Any:
    from pyengine.containers.engine import Containers

    return Containers(state.engine())


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
    from pyengine.containers.changes import commit as commit_container

    image = commit_container(_containers(state), container, repository, list(changes), message=message,
                             author=author, pause=pause)
    click.echo(image.id)


@click.command("diff")
@click.argument("container")
@pass_state
def diff(state: CliState, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem (A added, C changed, D deleted)."""
    from pyengine.containers.changes import diff as container_diff

    for kind, path in container_diff(_containers(state), container):
        click.echo(f"{kind} {path}")


@click.command("export")
@click.option("-o", "--output", metavar="FILE", help="Write to a file instead of stdout.")
@click.argument("container")
@pass_state
def export(state: CliState, output: str | None, container: str) -> None:
    """Export a container's filesystem as a tar archive."""
    from pyengine.containers.changes import export as export_container
    from pyengine.images.archive import open_output

    if output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal; use -o FILE or redirect stdout")
    containers = _containers(state)
    containers.get(container)  # a missing container fails before anything is written
    stream, tmp = open_output(output)
    try:
        export_container(containers, container, stream)
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
    containers = _containers(state)
    if src_container:
        _copy_out(containers, src_container, src_path, dst_path, follow_link)
    else:
        assert dst_container is not None
        _copy_in(containers, src_path, dst_container, dst_path, archive, follow_link)


def _copy_out(containers: Any, container: str, src: str, dest: str, follow_link: bool) -> None:
    from pyengine.containers.changes import copy_from, extract_to_host

    stream, info = copy_from(containers, container, src, follow_link)
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
    from pyengine.containers.changes import copy_to, stat_path

    if src == "-":
        copy_to(containers, container, dest, sys.stdin.buffer, copy_uid_gid=archive)
        return
    if not os.path.lexists(src):
        raise NotFound(f"could not find the file {src} on the local filesystem")
    src_is_dir = os.path.isdir(src) if (follow_link or not os.path.islink(src)) else False
    contents_only = src.endswith("/.")
    try:
        info: dict[str, Any] | None = stat_path(containers, container, dest, follow_link=True)
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
        copy_to(containers, container, target, stream, copy_uid_gid=archive)
    finally:
        stream.close()
