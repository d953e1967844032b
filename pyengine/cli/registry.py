"""The registry verbs: pull, push, login, logout, search.

Parses, builds a client per registry (``pyengine.registry.connect``), runs the transfer
(``pyengine.registry.transfer``) and prints like Docker: one line per layer event when stdout
is not a terminal (on a terminal too: rich is not a dependency), nothing but the result with -q.
"""

from __future__ import annotations

import sys

import click

from pyengine.cli import CliState, pass_state
from pyengine.errors import UsageError


def _printer(quiet: bool):  # noqa: ANN202 - an on_event callback
    """Docker's progress events as ``id: status`` lines; byte counts and aux records are not printed."""
    if quiet:
        return None

    def show(event: dict) -> None:
        if "progress" in event or "status" not in event:
            return
        click.echo(f"{event['id']}: {event['status']}" if event.get("id") else event["status"])
    return show


def _split_archive_ref(name: str) -> tuple[str, str] | None:
    for prefix in ("docker-archive:", "oci-archive:"):
        if name.startswith(prefix):
            return prefix[:-1], name[len(prefix):]
    return None


@click.command("pull")
@click.option("--platform", "platform_", metavar="OS/ARCH[/VARIANT]", help="Platform to pull from an index.")
@click.option("-a", "--all-tags", is_flag=True, help="Pull every tag of the repository.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image name.")
@click.argument("name")
@pass_state
def pull(state: CliState, platform_: str | None, all_tags: bool, quiet: bool, name: str) -> None:
    """Pull an image from a registry, an OCI layout (oci:DIR[:TAG]) or an archive
    (docker-archive:FILE, oci-archive:FILE)."""
    from pyengine.images.reference import parse_reference
    from pyengine.registry import verbs
    from pyengine.registry.transfer import parse_platform

    archive = _split_archive_ref(name)
    engine = state.engine()
    if name.startswith("oci:"):
        from pyengine.registry.layout import pull_layout

        stored, image = pull_layout(engine.images, name, parse_platform(platform_))
        click.echo(stored if quiet else f"Copied {name} as {stored} ({image.manifest_digest})")
        return
    if archive:
        from pyengine.images.archive import load_archive

        for loaded_name, image in load_archive(engine.images, archive[1]):
            click.echo(loaded_name or image.id)
        return
    ref = parse_reference(name, default_tag=not all_tags)
    refs = [ref]
    if all_tags:
        if ref.tag or ref.digest:
            raise UsageError("--all-tags takes a repository name without a tag or digest")
        refs = [ref.with_tag(t) for t in sorted(verbs.repository_tags(engine, ref))]
        if not refs:
            raise UsageError(f"{ref.repository} has no tags")
    for one in refs:
        verbs.pull_image(engine, engine.images, one, platform_, on_event=_printer(quiet))
        click.echo(str(one))


@click.command("push")
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed manifest digest.")
@click.option("--chunk-size", type=int, default=None, metavar="BYTES",
              help="Upload blobs larger than this in PATCH chunks of this size (default 64 MiB).")
@click.argument("name")
@click.argument("destination", required=False)
@pass_state
def push(state: CliState, quiet: bool, chunk_size: int | None, name: str, destination: str | None) -> None:
    """Push an image to a registry: NAME[:TAG] [DESTINATION]; DESTINATION may also be
    oci:DIR[:TAG], docker-archive:FILE or oci-archive:FILE."""
    from pyengine.registry import verbs

    engine = state.engine()
    if destination and destination.startswith("oci:"):
        from pyengine.registry.layout import push_layout

        click.echo(push_layout(engine.images, name, destination))
        return
    archive = _split_archive_ref(destination or "")
    if archive:
        from pyengine.images.archive import save_archive

        with open(archive[1], "wb") as out:
            save_archive(engine.images, [name], out, archive[0])
        click.echo(engine.images.resolve_image(name).manifest_digest)
        return
    result = verbs.push_image(engine, name, destination, chunk_size=chunk_size, on_event=_printer(quiet))
    if quiet:
        click.echo(result.digest)


@click.command("login")
@click.option("-u", "--username", help="User name.")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.argument("server")
@pass_state
def login(state: CliState, username: str | None, password: str | None, password_stdin: bool, server: str) -> None:
    """Log in to a registry; the credentials are stored only if the registry accepts them."""
    from pyengine.drivers.registry import Credentials
    from pyengine.registry import auth, verbs

    if password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    host = verbs.check_login(state.engine(), server, username, password)
    path = auth.store_credentials(host, Credentials(username, password))
    click.echo(f"Login Succeeded (credentials in {path})")


@click.command("logout")
@click.argument("server")
def logout(server: str) -> None:
    """Forget the stored credentials of a registry."""
    from pyengine.registry import auth

    host = auth.normalise_host(server)
    if auth.remove_credentials(host):
        click.echo(f"Removing login credentials for {host}")
    else:
        click.echo(f"Not logged in to {host}")


@click.command("search")
@click.option("--limit", type=int, default=25, help="Show at most this many repositories.")
@click.option("--no-trunc", is_flag=True, help="List every tag.")
@click.argument("term")
@pass_state
def search(state: CliState, limit: int, no_trunc: bool, term: str) -> None:
    """Search a registry's catalog: [REGISTRY/]TERM (repositories whose name contains TERM)."""
    from pyengine.registry import verbs

    rows = []
    for entry in verbs.search(state.engine(), term, limit, with_tags=True):
        tags = entry["tags"]
        shown = tags if no_trunc or len(tags) <= 5 else [*tags[:5], f"... ({len(tags)} tags)"]
        rows.append((entry["name"], ", ".join(shown)))
    width = max([len("NAME")] + [len(r[0]) for r in rows])
    click.echo(f"{'NAME'.ljust(width)}   TAGS")
    for repo_name, tag_text in rows:
        click.echo(f"{repo_name.ljust(width)}   {tag_text}")
