"""Bad input gets Docker's answer (issue 13, item 12): one line saying what is wrong, and the
docker CLI's exit status; nothing is created.

A flag that `run`, `create` or `exec` cannot read is Docker's shape: `pyengine: error: <what>`,
then `See 'pyengine run --help'.`, status 125 (1 for missing arguments, as docker's). A value
Docker's daemon refuses is refused by the engine in its words, status 125, and the daemon's
`POST /containers/create` answers the same message with a 400.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar
from imagebuild import store_snapshot

from conftest import EngineEnv, need_root

pytestmark = [pytest.mark.root]

RUN_HINT = "See 'pyengine run --help'."
CPUS = os.cpu_count() or 1

#: (command line, exit status, stderr lines): flags the command line itself cannot read
FLAG_ERRORS = [
    (["run", "--bogus-flag", "busybox"], 125, ["unknown flag: --bogus-flag", RUN_HINT]),
    (["create", "--bogus-flag", "busybox"], 125, ["unknown flag: --bogus-flag", "See 'pyengine create --help'."]),
    (["container", "run", "--bogus", "busybox"], 125, ["unknown flag: --bogus",
                                                      "See 'pyengine container run --help'."]),
    (["exec", "--bogus", "c", "sh"], 125, ["unknown flag: --bogus", "See 'pyengine exec --help'."]),
    (["run", "-z", "busybox"], 125, ["unknown shorthand flag: 'z' in -z", RUN_HINT]),
    (["run", "--cpus", "abc", "busybox"], 125,
     ['invalid argument "abc" for "--cpus" flag: \'abc\' is not a valid float', RUN_HINT]),
    (["run", "--pids-limit", "abc", "busybox"], 125,
     ['invalid argument "abc" for "--pids-limit" flag: \'abc\' is not a valid integer', RUN_HINT]),
    (["run", "--pids-limit=abc", "busybox"], 125,
     ['invalid argument "abc" for "--pids-limit" flag: \'abc\' is not a valid integer', RUN_HINT]),
    (["run", "--blkio-weight", "5", "busybox"], 125,
     ['invalid argument "5" for "--blkio-weight" flag: 5 is not in the range 10<=x<=1000', RUN_HINT]),
    (["run", "--cpus"], 125, ["flag needs an argument: --cpus", RUN_HINT]),
    (["run"], 1, ["'pyengine run' requires at least 1 argument", RUN_HINT]),
    (["exec", "c"], 1, ["'pyengine exec' requires at least 2 arguments", "See 'pyengine exec --help'."]),
    (["run", "--restart", "bogus", "busybox"], 125,
     ['invalid argument "bogus" for "--restart" flag: unknown policy \'bogus\'; use one of \'no\', \'always\', '
      "'on-failure', or 'unless-stopped'", RUN_HINT]),
    (["run", "--restart", "always:3", "busybox"], 125,
     ['invalid argument "always:3" for "--restart" flag: maximum retry count must be a whole number, and only '
      "on-failure takes one", RUN_HINT]),
    (["run", "-p", "abc", "busybox"], 125,
     ['invalid argument "abc" for "--publish" flag: \'abc\' is not a port number (1-65535)', RUN_HINT]),
    (["run", "-p", "8080:99999", "busybox"], 125,
     ['invalid argument "8080:99999" for "--publish" flag: \'99999\' is not a port number (1-65535)', RUN_HINT]),
    (["run", "--ulimit", "bogus", "busybox"], 125,
     ['invalid argument "bogus" for "--ulimit" flag: invalid ulimit argument: bogus', RUN_HINT]),
    (["run", "--ulimit", "bogus=1:2", "busybox"], 125,
     ['invalid argument "bogus=1:2" for "--ulimit" flag: invalid ulimit type: bogus', RUN_HINT]),
    (["run", "--ulimit", "nofile=10:5", "busybox"], 125,
     ['invalid argument "nofile=10:5" for "--ulimit" flag: ulimit soft limit must be less than or equal to hard '
      "limit: 10 > 5", RUN_HINT]),
    (["run", "--memory-swap", "abc", "busybox"], 125,
     ['invalid argument "abc" for "--memory-swap" flag: invalid size: \'abc\'', RUN_HINT]),
    (["run", "-m", "lots", "busybox"], 125, ['invalid argument "lots" for "--memory" flag: invalid size: \'lots\'',
                                            RUN_HINT]),
    (["run", "-v", "relative", "busybox"], 125,
     ['invalid argument "relative" for "--volume" flag: invalid volume specification: \'relative\': use '
      "HOST:CTR[:ro|rw] or NAME:CTR[:ro|rw]", RUN_HINT]),
    (["run", "-v", "data:relative", "busybox"], 125,
     ['invalid argument "data:relative" for "--volume" flag: invalid volume specification: \'data:relative\': '
      "invalid mount path: 'relative' mount path must be absolute", RUN_HINT]),
]

#: (command line, exit status, the one line): values the engine refuses, as dockerd does
VALUE_ERRORS = [
    (["run", "--tmpfs", "relative", "busybox", "true"], 125,
     "invalid mount path: 'relative' mount path must be absolute"),
    (["run", "--tmpfs", "/", "busybox", "true"], 125, "invalid specification: destination can't be '/'"),
    (["run", "-w", "relative", "busybox", "true"], 125,
     "the working directory 'relative' is invalid, it needs to be an absolute path"),
    (["create", "-w", "relative", "busybox", "true"], 125,
     "the working directory 'relative' is invalid, it needs to be an absolute path"),
    (["run", "-m", "1", "busybox", "true"], 125, "Minimum memory limit allowed is 6MB"),
    (["run", "-m", "5m", "busybox", "true"], 125, "Minimum memory limit allowed is 6MB"),
    (["run", "--memory-reservation", "1k", "busybox", "true"], 125, "Minimum memory reservation allowed is 6MB"),
    (["run", "-m", "64m", "--memory-swap", "32m", "busybox", "true"], 125,
     "Minimum memoryswap limit should be larger than memory limit, see usage"),
    (["run", "--memory-swap", "64m", "busybox", "true"], 125,
     "You should always set the Memory limit when using Memoryswap limit, see usage"),
    (["run", "-m", "32m", "--memory-reservation", "64m", "busybox", "true"], 125,
     "Minimum memory limit can not be less than memory reservation limit, see usage"),
    (["run", "--cpus", "0.5", "--cpu-period", "100000", "busybox", "true"], 125,
     "Conflicting options: Nano CPUs and CPU Period cannot both be set"),
    (["run", "--cpus", str(CPUS + 1), "busybox", "true"], 125,
     f"Range of CPUs is from 0.01 to {CPUS}.00, as there are only {CPUS} CPUs available"),
    (["run", "--cpu-period", "10", "busybox", "true"], 125,
     "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"),
    (["run", "--cpu-quota", "10", "busybox", "true"], 125, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
    (["run", "--log-opt", "max-size=abc", "busybox", "true"], 125,
     "invalid log opt 'max-size=abc' for json-file log driver: invalid size: 'abc' (a number with an optional unit "
     "k, m, g: 10m)"),
    (["run", "--log-opt", "max-file=0", "busybox", "true"], 125,
     "invalid log opt 'max-file=0' for json-file log driver: max-file must be a whole number of 1 or more"),
    (["run", "--log-opt", "bogus=1", "busybox", "true"], 125, "unknown log opt 'bogus' for json-file log driver"),
    (["run", "--log-opt", "compress=true", "busybox", "true"], 125,
     "log opt 'compress' of the json-file log driver is not supported by pyengine (it applies max-size, max-file)"),
    (["run", "--stop-signal", "BOGUS", "busybox", "true"], 125, "Invalid signal: BOGUS"),
    (["run", "BusyBox", "true"], 125, "invalid reference format: repository name must be lowercase: 'BusyBox'"),
    (["create", "Bad/Name"], 125, "invalid reference format: repository name must be lowercase: 'Bad/Name'"),
    (["run", "--security-opt", "bogus", "busybox", "true"], 125, 'invalid --security-opt 1: "bogus"'),
    (["load", "-i", "/etc/passwd"], 1, "/etc/passwd: not a valid image archive (not a tar archive, plain or "
                                       "compressed)"),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    """One engine with a busybox image for the whole table (every case changes nothing)."""
    need_root()
    root = tmp_path_factory.mktemp("input") / "engine"
    data_root, run_root = root / "data", root / "run"
    data_root.mkdir(parents=True)
    run_root.mkdir()
    config_path = root / "config.toml"
    config_path.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYENGINE_")}
    env.update({"PYENGINE_DATA_ROOT": str(data_root), "PYENGINE_RUN_ROOT": str(run_root),
                "PYENGINE_CONFIG": str(config_path), "PYENGINE_NETWORK_DEFAULT": "none",
                "PYENGINE_FORK_SOCKET": os.environ["PYENGINE_FORK_SOCKET"]})
    engine = EngineEnv(root, data_root, run_root, config_path, env)
    engine.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest", check=True)
    return engine


def _refused(engine: EngineEnv, args: list[str], status: int) -> list[str]:
    before = store_snapshot(engine.data_root)
    result = engine.run(*args)
    assert result.returncode == status, (args, result.returncode, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    assert store_snapshot(engine.data_root) == before, f"{args} changed the stores"
    return result.stderr.splitlines()


@pytest.mark.parametrize(("args", "status", "lines"), FLAG_ERRORS, ids=[" ".join(c[0]) for c in FLAG_ERRORS])
def test_bad_flag_is_docker_shaped(engine: EngineEnv, args: list[str], status: int, lines: list[str]) -> None:
    assert _refused(engine, args, status) == [f"pyengine: error: {lines[0]}", *lines[1:]]


@pytest.mark.parametrize(("args", "status", "line"), VALUE_ERRORS, ids=[" ".join(c[0]) for c in VALUE_ERRORS])
def test_bad_value_is_one_line_in_dockers_words(engine: EngineEnv, args: list[str], status: int, line: str) -> None:
    assert _refused(engine, args, status) == [f"pyengine: error: {line}"]


def test_good_values_next_to_the_bad_ones_still_run(engine: EngineEnv) -> None:
    result = engine.run("run", "--rm", "-w", "/tmp", "-m", "6m", "--memory-swap", "-1", "--tmpfs", "/scratch:size=1m",
                        "--log-opt", "max-size=1m", "--log-opt", "max-file=2", "--restart", "no", "--ulimit",
                        "nofile=64:64", "--stop-signal", "SIGINT", "busybox", "sh", "-c", "pwd; ulimit -n", check=True)
    assert result.stdout.split() == ["/tmp", "64"]


def test_other_commands_keep_clicks_usage_error(engine: EngineEnv) -> None:
    result = engine.run("images", "--bogus")
    assert result.returncode == 2
    assert "No such option '--bogus'" in result.stderr


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


#: (Config additions, HostConfig, the message): the daemon refuses what the CLI refuses
API_CASES = [
    ({}, {"Memory": 1}, "Minimum memory limit allowed is 6MB"),
    ({}, {"Tmpfs": {"relative": ""}}, "invalid mount path: 'relative' mount path must be absolute"),
    ({"WorkingDir": "relative"}, {}, "the working directory 'relative' is invalid, it needs to be an absolute path"),
    ({}, {"LogConfig": {"Type": "json-file", "Config": {"max-size": "abc"}}},
     "invalid log opt 'max-size=abc' for json-file log driver: invalid size: 'abc' (a number with an optional unit "
     "k, m, g: 10m)"),
    ({}, {"LogConfig": {"Type": "syslog", "Config": {}}},
     "log driver 'syslog' is not supported by pyengine: it writes json-file logs only"),
    ({}, {"RestartPolicy": {"Name": "bogus"}},
     "invalid restart policy: unknown policy 'bogus'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"),
    ({}, {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}},
     "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ({}, {"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]},
     "ulimit soft limit must be less than or equal to hard limit: 10 > 5"),
    ({}, {"PortBindings": {"abc/tcp": [{"HostPort": "80"}]}}, 'invalid port specification: "abc/tcp"'),
    ({}, {"Binds": ["data:relative"]}, "invalid volume specification: 'data:relative': invalid mount config for "
                                       "type \"volume\": invalid mount path: 'relative' mount path must be absolute"),
    ({"StopSignal": "BOGUS"}, {}, "Invalid signal: BOGUS"),
]


def test_daemon_create_answers_400_with_the_same_message(engine: EngineEnv) -> None:
    from daemon_support import start_daemon

    daemon = start_daemon(engine)
    try:
        before = store_snapshot(engine.data_root)
        for config, host, message in API_CASES:
            body = json.dumps({"Image": "busybox", "Cmd": ["true"], **config, "HostConfig": host})
            connection = _UnixConnection(daemon.socket_path)
            connection.request("POST", "/v1.45/containers/create", body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read() or b"{}")
            connection.close()
            assert (response.status, answer.get("message")) == (400, message), (config, host)
        # and the CLI as the daemon's client says it as daemonless: one line, status 125
        for args, status, line in VALUE_ERRORS[:3]:
            remote = engine.run(*args, env={"PYENGINE_HOST": daemon.url})
            assert (remote.returncode, remote.stderr.splitlines()) == (status, [f"pyengine: error: {line}"]), args
        assert store_snapshot(engine.data_root) == before
    finally:
        assert daemon.stop() == 0
