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


def _printer(quiet: bool):  # noqa: ANN202 - a progress callback
    if quiet:
        return None

    def progress(digest: str, event: str) -> None:
        click.echo(f"{digest.split(':', 1)[-1][:12]}: {event}")
    return progress


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
    from pyengine.registry.client import RegistryAuthError, RegistryError
    from pyengine.registry.connect import pull_clients
    from pyengine.registry.transfer import Puller, parse_platform

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
    want = parse_platform(platform_)
    ref = parse_reference(name, default_tag=not all_tags)
    clients = pull_clients(engine, ref.domain)
    refs = [ref]
    if all_tags:
        if ref.tag or ref.digest:
            raise UsageError("--all-tags takes a repository name without a tag or digest")
        refs = [ref.with_tag(t) for t in sorted(clients[-1].tags(ref.path))]
        if not refs:
            raise UsageError(f"{ref.repository} has no tags")
    for one in refs:
        if not quiet:
            click.echo(f"{one.tag or one.digest}: Pulling from {one.path}" if one.tag
                       else f"Pulling {one}")
        last_error: Exception | None = None
        for client in clients:
            try:
                digest, image = Puller(client, engine.images, _printer(quiet)).pull(one, want)
                break
            except RegistryAuthError:
                if client is clients[-1]:
                    raise
                last_error = None
            except RegistryError as exc:
                # A mirror that fails is skipped; the registry's own failure is the answer.
                last_error = exc
                if client is clients[-1]:
                    raise
            finally:
                client.close()
        else:  # pragma: no cover - the loop either breaks or raises
            raise last_error or RegistryError("pull failed")
        if quiet:
            click.echo(str(one))
        else:
            click.echo(f"Digest: {digest}")
            click.echo(f"Status: Downloaded image for {one.familiar()}")
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
    from pyengine.images.reference import parse_reference
    from pyengine.registry.connect import client_for
    from pyengine.registry.transfer import PUSH_CHUNK, Pusher

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
    ref = parse_reference(destination or name)
    client = client_for(engine, ref.domain)
    try:
        if not quiet:
            click.echo(f"The push refers to repository [{ref.repository}]")
        digest = Pusher(client, engine.images, _printer(quiet), chunk_size or PUSH_CHUNK).push(name, ref)
    finally:
        client.close()
    size = len(engine.images.read_blob(digest))
    click.echo(digest if quiet else f"{ref.tag or 'latest'}: digest: {digest} size: {size}")


@click.command("login")
@click.option("-u", "--username", help="User name.")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.argument("server")
@pass_state
def login(state: CliState, username: str | None, password: str | None, password_stdin: bool, server: str) -> None:
    """Log in to a registry; the credentials are stored only if the registry accepts them."""
    from pyengine.drivers.registry import Credentials
    from pyengine.registry import auth
    from pyengine.registry.client import RegistryClient
    from pyengine.registry.connect import registry_options

    host = auth.normalise_host(server)
    if password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    if not username or not password:
        raise UsageError("login needs a user name and a password")
    creds = Credentials(username, password)
    client = RegistryClient(host, registry_options(state.engine(), host), creds)
    try:
        client.login()
    finally:
        client.close()
    path = auth.store_credentials(host, creds)
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
    from pyengine.registry.connect import client_for

    first, sep, rest = term.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, needle = first, rest
    else:
        host, needle = "docker.io", term
    client = client_for(state.engine(), host)
    try:
        names = [r for r in client.catalog() if needle in r][:limit]
        rows = []
        for repo in names:
            tags = sorted(client.tags(repo))
            shown = tags if no_trunc or len(tags) <= 5 else [*tags[:5], f"... ({len(tags)} tags)"]
            rows.append((f"{host}/{repo}", ", ".join(shown)))
    finally:
        client.close()
    width = max([len("NAME")] + [len(r[0]) for r in rows])
    click.echo(f"{'NAME'.ljust(width)}   TAGS")
    for repo_name, tag_text in rows:
        click.echo(f"{repo_name.ljust(width)}   {tag_text}")
