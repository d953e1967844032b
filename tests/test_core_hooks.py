"""Every hook, exercised for real: through PluginHost's typed wrappers with registered test
plugins, and for the registration and command hooks also through the CLI with a plugin found by
its entry point. A meta-test keeps docs/hooks.md and these tests in step with the hookspecs."""

from __future__ import annotations

import ast
import inspect
import re

import click
import pytest
import structlog
from click.testing import CliRunner
from core_helpers import REPO_ROOT, info_json, make_plugin, plugins_json

from pyengine.drivers import DriverSpec
from pyengine.drivers.registry import Credentials
from pyengine.plugin import hookimpl, spec
from pyengine.plugin.manager import PluginHost


def hookspecs() -> dict[str, object]:
    return {name: fn for name, fn in vars(spec).items()
            if name.startswith("pyengine_") and hasattr(fn, "pyengine_spec")}


def signature_text(name: str, fn: object) -> str:
    """``name(param: type, ...) -> type`` as docs/hooks.md writes it."""
    sig = inspect.signature(fn)  # annotations are strings: the spec module defers them
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def test_every_hookspec_has_a_docs_heading_with_its_signature_and_a_test():
    specs = hookspecs()
    assert len(specs) >= 8
    docs = (REPO_ROOT / "docs" / "hooks.md").read_text()
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", docs, flags=re.M | re.S))
    test_names = set()
    for path in (REPO_ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                test_names.add(node.name)
    problems = []
    for name, fn in specs.items():
        if name not in sections:
            problems.append(f"docs/hooks.md has no heading '## {name}'")
        elif signature_text(name, fn) not in sections[name]:
            problems.append(f"docs/hooks.md: section {name} lacks the signature {signature_text(name, fn)}")
        if fn.pyengine_spec["firstresult"] and name in sections and "first non-None" not in sections[name]:
            problems.append(f"docs/hooks.md: {name} is firstresult but its section does not say so")
        if not any(name in t for t in test_names):
            problems.append(f"no test function whose name contains {name}")
    for heading in sections:
        if heading.startswith("pyengine_") and heading not in specs:
            problems.append(f"docs/hooks.md documents {heading}, which is no hook")
    assert not problems, "\n".join(problems)


# -- registration hooks ------------------------------------------------------------------------

REGISTERING_PLUGIN = """
from pyengine.drivers import DriverSpec
from pyengine.plugin import hookimpl


class Unused:
    def __init__(self, ctx):
        raise AssertionError("info must not start a {kind} driver it only lists")


@hookimpl
def {hook}(register):
    register(DriverSpec(name="testdrv-{kind}", factory=Unused, description="from a test plugin"))
"""


def check_registration_hook(hook: str, kind: str, engine_env, tmp_path) -> None:
    # In process, through the typed wrapper.
    class Plugin:
        pass

    def impl(register):
        register(DriverSpec(name=f"inproc-{kind}", factory=object))

    setattr(Plugin, hook, staticmethod(hookimpl(impl)))
    host = PluginHost()
    host.register(Plugin(), "inproc")
    (registered,) = host.specs(kind)
    assert (registered.name, registered.kind, registered.plugin) == (f"inproc-{kind}", kind, "inproc")
    assert host.records["inproc"].hooks == [hook]
    assert [d.name for d in host.records["inproc"].drivers] == [f"inproc-{kind}"]

    # Through the CLI, found by its entry point: `info` shows the driver.
    env = make_plugin(tmp_path / "site", "registers", REGISTERING_PLUGIN.format(hook=hook, kind=kind))
    data = info_json(engine_env, **env)
    assert {"kind": kind, "name": f"testdrv-{kind}", "plugin": "registers", "state": "ok",
            "reason": ""} in data["drivers"]
    assert plugins_json(engine_env, **env)["registers"]["hooks"] == [hook]


def test_hook_pyengine_register_storage_drivers_driver_shown_by_info(engine_env, tmp_path):
    check_registration_hook("pyengine_register_storage_drivers", "storage", engine_env, tmp_path)


def test_hook_pyengine_register_network_drivers_driver_shown_by_info(engine_env, tmp_path):
    check_registration_hook("pyengine_register_network_drivers", "network", engine_env, tmp_path)


def test_hook_pyengine_register_isolators_isolator_shown_by_info(engine_env, tmp_path):
    check_registration_hook("pyengine_register_isolators", "isolation", engine_env, tmp_path)


def test_hook_pyengine_register_registries_registry_shown_by_info(engine_env, tmp_path):
    check_registration_hook("pyengine_register_registries", "registry", engine_env, tmp_path)


def test_hook_pyengine_register_storage_drivers_rejects_what_is_not_a_driverspec():
    class Plugin:
        @hookimpl
        def pyengine_register_storage_drivers(self, register):
            register({"name": "dict-is-not-a-spec"})

    host = PluginHost()
    host.register(Plugin(), "sloppy")
    assert host.specs("storage") == []
    assert host.records["sloppy"].state == "error: TypeError: register() takes a DriverSpec, not dict"


# -- pyengine_add_commands ---------------------------------------------------------------------

def test_hook_pyengine_add_commands_wrapper_adds_a_working_command_and_refuses_a_clash():
    @click.command("hello")
    @click.argument("who")
    def hello(who):
        click.echo(f"hello {who}")

    @click.command("status")
    def fake_status():
        click.echo("hijacked")

    class Greeter:
        @hookimpl
        def pyengine_add_commands(self, cli):
            cli.add_command(hello)

    class Hijacker:
        @hookimpl
        def pyengine_add_commands(self, cli):
            cli.add_command(click.Command("extra", callback=lambda: None))
            cli.add_command(fake_status)

    @click.group()
    def group():
        pass

    @group.command("status")
    def status():
        click.echo("the real status")

    host = PluginHost()
    host.register(Greeter(), "greeter")
    host.register(Hijacker(), "hijacker")
    host.add_commands(group)
    runner = CliRunner()
    assert runner.invoke(group, ["hello", "world"]).output == "hello world\n"
    assert runner.invoke(group, ["status"]).output == "the real status\n"
    # The clashing plugin's other commands are withdrawn too: it is all or nothing.
    assert "extra" not in group.commands
    assert host.records["greeter"].state == "ok"
    assert host.records["hijacker"].state == "error: ValueError: command 'status' already exists"


COMMAND_PLUGIN = """
import click
from pyengine.plugin import hookimpl


@click.command("hello")
@click.option("--shout", is_flag=True)
@click.argument("who")
def hello(who, shout):
    \"\"\"Greet WHO.\"\"\"
    text = f"hello {who}"
    click.echo(text.upper() if shout else text)


@hookimpl
def pyengine_add_commands(cli):
    cli.add_command(hello)
"""

CLASHING_PLUGIN = """
import click
from pyengine.plugin import hookimpl


@hookimpl
def pyengine_add_commands(cli):
    cli.add_command(click.Command("info", callback=lambda: click.echo("not the real info")))
"""


def test_hook_pyengine_add_commands_command_reachable_via_cli_and_clash_is_plugin_error(engine_env, tmp_path):
    env = make_plugin(tmp_path / "site", "greeter", COMMAND_PLUGIN)
    make_plugin(tmp_path / "site", "clasher", CLASHING_PLUGIN)
    result = engine_env.run("hello", "--shout", "world", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HELLO WORLD\n"
    assert "hello" in engine_env.run("--help", env=env, check=True).stdout

    # `info` is built in (imported lazily): the plugin's command never replaces it.
    info = engine_env.run("info", "--format", "json", env=env)
    assert info.returncode == 0 and info.stdout.startswith("{")
    listed = plugins_json(engine_env, **env)
    assert listed["clasher"]["state"] == "error: ValueError: command 'info' already exists"
    assert listed["greeter"]["state"] == "ok"
    assert listed["greeter"]["hooks"] == ["pyengine_add_commands"]


# -- pyengine_container_event ------------------------------------------------------------------

def test_hook_pyengine_container_event_reaches_every_plugin_despite_one_raising():
    seen: dict[str, list] = {"first": [], "last": []}

    def recorder(label):
        class Recorder:
            @hookimpl
            def pyengine_container_event(self, event, container_id, attributes):
                seen[label].append((event, container_id, dict(attributes)))
        return Recorder()

    class Raiser:
        @hookimpl
        def pyengine_container_event(self, event, container_id, attributes):
            raise RuntimeError("observer down")

    host = PluginHost()
    # Registered before and after the raiser, so it is called both before and after it.
    host.register(recorder("first"), "first")
    host.register(Raiser(), "raiser")
    host.register(recorder("last"), "last")
    with structlog.testing.capture_logs() as logs:
        host.emit_container_event("die", "c0ffee", {"exitCode": "3", "name": "web"})
        host.emit_container_event("destroy", "c0ffee", {"name": "web"})
    expected = [("die", "c0ffee", {"exitCode": "3", "name": "web"}), ("destroy", "c0ffee", {"name": "web"})]
    assert seen == {"first": expected, "last": expected}
    failures = [e for e in logs if e["event"] == "plugin.event_hook_failed"]
    assert [(e["plugin"], e["hook_event"], e["reason"]) for e in failures] == [
        ("raiser", "die", "RuntimeError: observer down"), ("raiser", "destroy", "RuntimeError: observer down")]
    assert host.records["raiser"].state == "ok"  # an observer's bad day does not disable it


# -- pyengine_get_registry_credentials ---------------------------------------------------------

def test_hook_pyengine_get_registry_credentials_stops_at_first_answer():
    asked: list[str] = []

    def helper(label, answers):
        class Helper:
            @hookimpl
            def pyengine_get_registry_credentials(self, registry):
                asked.append(label)
                return answers.get(registry)
        return Helper()

    host = PluginHost()
    # pluggy calls the last registered first: "vault" answers before "keychain".
    host.register(helper("keychain", {"127.0.0.1:5000": Credentials("kc", "kc-secret"),
                                      "ghcr.io": Credentials("gh", "gh-token")}), "keychain")
    host.register(helper("vault", {"127.0.0.1:5000": Credentials("vault", "s3cret")}), "vault")
    host.register(helper("silent", {}), "silent")

    assert host.registry_credentials("127.0.0.1:5000") == Credentials("vault", "s3cret")
    assert asked == ["silent", "vault"]  # keychain was never asked
    asked.clear()
    assert host.registry_credentials("ghcr.io") == Credentials("gh", "gh-token")
    assert asked == ["silent", "vault", "keychain"]
    assert host.registry_credentials("docker.io") is None


def test_hook_pyengine_get_registry_credentials_none_without_plugins():
    assert PluginHost().registry_credentials("docker.io") is None


# -- pyengine_authorize_request ----------------------------------------------------------------

def test_hook_pyengine_authorize_request_returns_the_first_refusal():
    asked: list[str] = []

    class AllowAll:
        @hookimpl
        def pyengine_authorize_request(self, method, path, user):
            asked.append("allow-all")
            return None

    class NoDeletes:
        @hookimpl
        def pyengine_authorize_request(self, method, path, user):
            asked.append("no-deletes")
            return "deleting is not allowed here" if method == "DELETE" else None

    class OnlyAdmins:
        @hookimpl
        def pyengine_authorize_request(self, method, path, user):
            asked.append("only-admins")
            return None if user == "admin" else f"user {user} may not {method} {path}"

    host = PluginHost()
    host.register(OnlyAdmins(), "only-admins")
    host.register(NoDeletes(), "no-deletes")
    host.register(AllowAll(), "allow-all")

    assert host.authorize_request("GET", "/containers/json", "admin") is None
    assert asked == ["allow-all", "no-deletes", "only-admins"]
    asked.clear()
    assert host.authorize_request("DELETE", "/containers/abc", "bob") == "deleting is not allowed here"
    assert asked == ["allow-all", "no-deletes"]  # the first refusal ends the round
    assert host.authorize_request("POST", "/containers/create", "bob") == "user bob may not POST /containers/create"


@pytest.mark.parametrize("hook", sorted(hookspecs()))
def test_a_plugin_implementing_a_hook_lists_it(hook):
    """Every hook is accepted by the manager when spelled right (and shows in ``hooks``)."""
    params = list(inspect.signature(hookspecs()[hook]).parameters)
    namespace = {}
    exec(f"def {hook}({', '.join(params)}):\n    return None", namespace)  # noqa: S102 - a test plugin
    plugin = type("Plugin", (), {hook: staticmethod(hookimpl(namespace[hook]))})()
    host = PluginHost()
    host.register(plugin, "one-hook")
    assert host.records["one-hook"].state == "ok"
    assert host.records["one-hook"].hooks == [hook]
