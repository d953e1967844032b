"""Shell completion: the scripts ``pyengine completion SHELL`` prints, and what click's
completion protocol (``_PYENGINE_COMPLETE``, ``COMP_WORDS``, ``COMP_CWORD``) answers through the
``pyengine`` command itself: commands, flags, and container, image, network and volume names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers

from conftest import EngineEnv

#: the installed ``pyengine`` launcher (the fork server's client), as a shell runs it
LAUNCHER = Path(sys.executable).with_name("pyengine")


def complete(engine: EngineEnv, line: str, shell: str = "bash", served: bool = True) -> list[str]:
    """What the shell's completion function gets for ``line`` (the cursor at its end)."""
    words = line.split(" ")
    env = dict(engine.env, _PYENGINE_COMPLETE=f"{shell}_complete", COMP_WORDS=line)
    env["COMP_CWORD"] = str(len(words) - 1) if shell != "fish" else words[-1]
    if not served:
        env["PYENGINE_FORK_SERVER"] = "0"
    result = subprocess.run([str(LAUNCHER)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if shell == "bash":  # "type,value" lines (one empty line when there is nothing to offer)
        return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]
    if shell == "zsh":  # type, value, help, one line each
        lines = result.stdout.splitlines()
        return [lines[i + 1] for i in range(0, len(lines), 3)]
    return [line.split(",", 1)[1].split("\t", 1)[0] for line in result.stdout.splitlines() if line]  # fish


@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = "vfs"
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest", check=True)
    yield engine_env
    remove_all_containers(engine_env.run)


@pytest.mark.parametrize(("shell", "marks"), [
    ("bash", ["_pyengine_completion()", "_PYENGINE_COMPLETE=bash_complete", "complete -o nosort -F"]),
    ("zsh", ["#compdef pyengine", "_PYENGINE_COMPLETE=zsh_complete", "compdef _pyengine_completion pyengine"]),
    ("fish", ["function _pyengine_completion", "_PYENGINE_COMPLETE=fish_complete", "complete --no-files "
              "--command pyengine"]),
])
def test_completion_prints_the_shells_script(engine_env: EngineEnv, shell: str, marks: list[str]) -> None:
    script = engine_env.run("completion", shell, check=True).stdout
    for mark in marks:
        assert mark in script, (mark, script)


def test_completion_of_an_unknown_shell_is_a_usage_error(engine_env: EngineEnv) -> None:
    result = engine_env.run("completion", "tcsh")
    assert result.returncode == 2 and "tcsh" in result.stderr and result.stdout == ""


def test_bash_script_completes_through_the_launcher(engine: EngineEnv) -> None:
    # the script as bash sources it, its function run as bash's programmable completion runs it
    engine.run("create", "--name", "scripted", "busybox", "true", check=True)
    script = engine.run("completion", "bash", check=True).stdout
    probe = (f'{script}\nCOMP_WORDS=(pyengine rm ""); COMP_CWORD=2; _pyengine_completion pyengine; '
             'printf "%s\\n" "${COMPREPLY[@]}"')
    env = dict(engine.env, PATH=f"{LAUNCHER.parent}:/usr/bin:/bin")
    result = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["scripted"]


@pytest.mark.parametrize("served", [True, False], ids=["fork-server", "in-process"])
def test_rm_completes_container_names(engine: EngineEnv, served: bool) -> None:
    engine.run("create", "--name", "web", "busybox", "true", check=True)
    engine.run("create", "--name", "worker", "busybox", "true", check=True)
    engine.run("create", "--name", "db", "busybox", "true", check=True)
    assert sorted(complete(engine, "pyengine rm ", served=served)) == ["db", "web", "worker"]
    assert sorted(complete(engine, "pyengine rm w", served=served)) == ["web", "worker"]
    assert complete(engine, "pyengine logs d", served=served) == ["db"]
    assert complete(engine, "pyengine container rm wo", served=served) == ["worker"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_commands_flags_and_names_in_every_shell(engine: EngineEnv, shell: str) -> None:
    engine.run("create", "--name", "web", "busybox", "true", check=True)
    engine.run("volume", "create", "data1", check=True)
    assert "network" in complete(engine, "pyengine netw", shell) and "ps" in complete(engine, "pyengine p", shell)
    assert complete(engine, "pyengine network ls", shell) == ["ls"]
    assert "--no-trunc" in complete(engine, "pyengine ps --no", shell)
    assert complete(engine, "pyengine image inspect bu", shell) == ["busybox:latest"]
    assert complete(engine, "pyengine run bus", shell) == ["busybox:latest"]
    assert complete(engine, "pyengine volume rm da", shell) == ["data1"]
    assert set(complete(engine, "pyengine network inspect ", shell)) >= {"host", "none"}
    assert complete(engine, "pyengine network connect none w", shell) == ["web"]
    # inspect takes any object
    assert set(complete(engine, "pyengine inspect ", shell)) >= {"web", "busybox:latest", "data1", "none"}


def test_completion_never_fails(engine_env: EngineEnv) -> None:
    # a broken config: the engine cannot start, so there is nothing to offer, and no error
    engine_env.write_config("this is [not toml\n")
    assert complete(engine_env, "pyengine rm ") == []
    assert complete(engine_env, "pyengine image rm ") == []
    assert "ps" in complete(engine_env, "pyengine p")
