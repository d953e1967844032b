"""Shell completion with click's machinery: ``pyengine completion bash|zsh|fish`` prints the
script, and the arguments that name containers, images, networks or volumes complete from the
engine's verbs (this machine's stores, or a daemon's with -H).

The shell runs ``pyengine`` with ``_PYENGINE_COMPLETE=<shell>_complete`` (click's protocol);
``EngineGroup.get_command`` then hands each command it loads to ``add_completions``. A
completion never fails: whatever goes wrong while listing, the answer is just shorter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

#: the environment variable of click's completion protocol for ``prog_name="pyengine"``
COMPLETE_VAR = "_PYENGINE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def _names(ctx: click.Context, kind: str) -> list[str]:
    """The names (and short IDs) of every object of ``kind``; empty on any failure."""
    from pyengine.cli import cli_state

    try:
        state = cli_state(ctx)
        if kind == "container":
            out = []
            for summary in state.containers().list(all_=True):
                out += [n.lstrip("/") for n in summary.get("Names") or []]
            return out
        if kind == "image":
            out = []
            for summary in state.images().list():
                out += [t for t in summary.get("RepoTags") or [] if t != "<none>:<none>"]
            return out
        if kind == "network":
            return [doc["Name"] for doc in state.networks().list()]
        if kind == "volume":
            return [doc["Name"] for doc in state.volumes().list()]
    except Exception:  # noqa: BLE001 - a completion must never fail; it offers less
        return []
    return []


def _completer(*kinds: str) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        seen: list[str] = []
        for kind in kinds:
            for name in _names(ctx, kind):
                if name.startswith(incomplete) and name not in seen:
                    seen.append(name)
        return [CompletionItem(name) for name in seen]
    return complete


containers = _completer("container")
images = _completer("image")
networks = _completer("network")
volumes = _completer("volume")
objects = _completer("container", "image", "network", "volume")

#: (command path below ``pyengine``, argument name) -> its completer; a path ending in ``*``
#: stands for every command of that group
ARGUMENTS: dict[tuple[str, str], Callable[..., list[CompletionItem]]] = {
    **{(path, name): containers for path in (
        "start", "stop", "kill", "restart", "rm", "wait", "pause", "unpause", "logs", "port", "top", "stats",
        "rename", "exec", "attach", "update", "commit", "diff", "export", "container *")
       for name in ("container", "containers", "container_ref")},
    ("inspect", "containers"): objects,
    **{(path, name): images for path in ("run", "create", "rmi", "tag", "history", "save", "push", "images",
                                         "image *")
       for name in ("image", "image_ref", "image_refs", "source", "name", "reference")},
    ("image import", "source"): lambda ctx, param, incomplete: [],  # a file, not an image
    **{("network *", name): networks for name in ("name", "names")},
    ("network connect", "container"): containers,
    ("network disconnect", "container"): containers,
    ("network create", "name"): lambda ctx, param, incomplete: [],
    **{("volume *", name): volumes for name in ("name", "names")},
    ("volume create", "name"): lambda ctx, param, incomplete: [],
}


def _lookup(path: str, name: str) -> Callable[..., list[CompletionItem]] | None:
    if (path, name) in ARGUMENTS:
        return ARGUMENTS[(path, name)]
    group = path.rpartition(" ")[0]
    return ARGUMENTS.get((f"{group} *", name)) if group else None


def add_completions(command: click.Command, path: str) -> None:
    """Give the arguments of ``command`` (and of its sub-commands) their completers."""
    for param in command.params:
        if not isinstance(param, click.Argument):
            continue
        completer = _lookup(path, param.name or "")
        if completer is not None:
            # an instance's own shell_complete, as click's shell_complete= argument would set
            param.shell_complete = _bound(completer, param)  # type: ignore[method-assign]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            add_completions(sub, f"{path} {name}")


def _bound(completer: Callable[..., list[CompletionItem]], param: click.Parameter) -> Any:
    def shell_complete(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        return completer(ctx, param, incomplete)
    return shell_complete


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash: eval "$(pyengine completion bash)"   (in ~/.bashrc)
    zsh:  eval "$(pyengine completion zsh)"    (in ~/.zshrc)
    fish: pyengine completion fish > ~/.config/fish/completions/pyengine.fish
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root().command
    completer_class = get_completion_class(shell)
    assert completer_class is not None  # SHELLS are click's own
    click.echo(completer_class(root, {}, "pyengine", COMPLETE_VAR).source(), nl=False)
