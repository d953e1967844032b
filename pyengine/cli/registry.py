"""The registry verbs: pull, push, login, logout, search.

Parses, builds a client per registry (``pyengine.registry.connect``), runs the transfer
(``pyengine.registry.transfer``) and prints like Docker through ``pyengine.cli.progress``: live
per-layer bars on a terminal, one line per layer event when stdout is not one, nothing but the
result with -q.
"""

from __future__ import annotations

import sys

import click

from pyengine.cli import CliState, pass_state
from pyengine.errors import UsageError


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
    from pyengine.cli.progress import Progress

    with Progress(quiet) as progress:
        refs = state.images().pull(name, platform_, all_tags, on_event=progress)
    for ref in refs:
        click.echo(ref)


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
    from pyengine.cli.progress import Progress

    images = state.images()
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    with Progress(quiet) as progress:
        result = images.push(name, destination, on_event=progress, **kwargs)
    if quiet or not result.get("Tag"):
        click.echo(result.get("Digest", ""))


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
    state.images().login(server, username, password)
    host = auth.normalise_host(server)
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
    found = state.images().search(term, limit)
    if all("tags" in entry for entry in found):
        # This machine's engine lists each repository's tags (a daemon's answer has none).
        rows = []
        for entry in found:
            tags = entry["tags"]
            shown = tags if no_trunc or len(tags) <= 5 else [*tags[:5], f"... ({len(tags)} tags)"]
            rows.append([entry["name"], ", ".join(shown)])
        _print_table(["NAME", "TAGS"], rows)
        return
    rows = []
    for entry in found:
        description = " ".join(str(entry.get("description") or "").split())
        if not no_trunc and len(description) > 45:
            description = description[:44] + "…"
        rows.append([entry.get("name", ""), description, str(entry.get("star_count", 0)),
                     "[OK]" if entry.get("is_official") else ""])
    _print_table(["NAME", "DESCRIPTION", "STARS", "OFFICIAL"], rows)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        click.echo("   ".join(cells).rstrip())
