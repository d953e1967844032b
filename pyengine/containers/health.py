"""Healthchecks: a container's ``Config.Healthcheck`` (the image's HEALTHCHECK, or ``run
--health-*``), the schedule its monitor keeps, one check run inside the container as ``exec``
runs a command, and ``State.Health`` (Docker's Status, FailingStreak and last five results)
recorded in the container's state, with a ``health_status: ...`` event on each change.

Who runs what: the monitor (``pyengine.containers.monitor``, then ``pyengine-shim`` once it has
taken over) starts ``pyengine container health-run ID`` in its own process group on the
schedule (``HealthSchedule`` here; the shim has the same few lines in C) and kills the group
if it overstays; that command (``run_check``) execs the test in the container with pipes the
engine owns, enforces the timeout itself and records the result. Imports only the standard
library at module level: the monitor pays nothing for a container without a healthcheck.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyengine.errors import PyEngineError, UsageError

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers

#: Docker's defaults (seconds) and limits
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
#: results kept in State.Health.Log, and bytes of output kept per result
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
#: how long past its timeout a check's process may live before its monitor kills its group:
#: the check kills its own command at the timeout and records that; this is the backstop
KILL_GRACE = 2.0

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}


def parse_duration(text: str, flag: str) -> int:
    """A Go duration (``300ms``, ``1m30s``, ``0``) in nanoseconds; UsageError in Docker's words."""
    value = text.strip()
    sign = -1 if value.startswith("-") else 1
    value = value.lstrip("+-") if value[:1] in "+-" else value
    if value in ("0", ""):
        return 0
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(value):
        hint = "missing unit in duration" if value.replace(".", "", 1).isdigit() else "invalid duration"
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: time: {hint} "{text}"')
    return sign * int(total)


def healthcheck_from_flags(o: dict[str, Any]) -> dict[str, Any] | None:
    """``Config.Healthcheck`` from ``run``/``create``'s ``--health-*`` and ``--no-healthcheck``
    (None when none was given: the image's applies)."""
    durations = {"Interval": "health_interval", "Timeout": "health_timeout", "StartPeriod": "health_start_period",
                 "StartInterval": "health_start_interval"}
    given = [name for name in ("health_cmd", "health_retries", *durations.values()) if o.get(name) is not None]
    if o.get("no_healthcheck"):
        if given:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not given:
        return None
    check: dict[str, Any] = {}
    if o.get("health_cmd") is not None:
        check["Test"] = ["CMD-SHELL", o["health_cmd"]]
    for key, name in durations.items():
        if o.get(name) is not None:
            flag = "--" + name.replace("_", "-")
            check[key] = parse_duration(o[name], flag)
    if o.get("health_retries") is not None:
        check["Retries"] = int(o["health_retries"])
    check_config(check)
    return check


def check_config(check: Any) -> None:
    """Refuse a Healthcheck dockerd refuses (negative or sub-millisecond durations, negative
    retries, a Test that is not NONE, CMD or CMD-SHELL)."""
    if check is None:
        return
    if not isinstance(check, dict):
        raise UsageError("Healthcheck must be an object")
    test = check.get("Test")
    if test not in (None, []):
        if not isinstance(test, list) or not all(isinstance(part, str) for part in test):
            raise UsageError("Healthcheck.Test must be a list of strings")
        if test[0] not in ("NONE", "CMD", "CMD-SHELL"):
            raise UsageError(f"invalid Healthcheck.Test {test[0]!r}: use NONE, CMD or CMD-SHELL")
        if test[0] != "NONE" and len(test) < 2:
            raise UsageError(f"Healthcheck.Test {test[0]} needs a command")
    flags = {"Interval": "--health-interval", "Timeout": "--health-timeout", "StartPeriod": "--health-start-period",
             "StartInterval": "--health-start-interval"}
    for key, flag in flags.items():
        value = check.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"Healthcheck.{key} must be an integer of nanoseconds")
        if value < 0:
            raise UsageError(f"{flag} cannot be negative")
        if 0 < value < 1_000_000:
            raise UsageError(f"{key} in Healthcheck cannot be less than 1ms")
    retries = check.get("Retries") or 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError("--health-retries cannot be negative")


def merge_healthcheck(image: dict[str, Any] | None, user: dict[str, Any] | None) -> dict[str, Any] | None:
    """The container's Healthcheck as Docker merges it: the user's fields over the image's (an
    empty Test, a zero duration or zero retries take the image's)."""
    if not user:
        return dict(image) if image else None
    if not image:
        return dict(user)
    merged = dict(user)
    if not merged.get("Test"):
        merged["Test"] = image.get("Test")
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
        if not merged.get(key) and image.get(key):
            merged[key] = image[key]
    return {k: v for k, v in merged.items() if v is not None}


@dataclass(frozen=True)
class Schedule:
    """A container's effective healthcheck, in seconds."""

    command: list[str]
    interval: float
    timeout: float
    retries: int
    start_period: float
    start_interval: float

    def interval_at(self, since_start: float) -> float:
        """The wait before the next check, ``since_start`` seconds after the container started."""
        return self.start_interval if since_start < self.start_period else self.interval


def schedule_of(config: dict[str, Any]) -> Schedule | None:
    """The container's healthcheck schedule, None when it has none (or ``NONE``)."""
    check = config.get("Healthcheck") or {}
    test = check.get("Test") or []
    if not test or test[0] == "NONE" or len(test) < 2:
        return None
    command = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])

    def seconds(key: str, default: float) -> float:
        value = check.get(key) or 0
        return value / 1e9 if value > 0 else default

    return Schedule(command=command, interval=seconds("Interval", DEFAULT_INTERVAL),
                    timeout=seconds("Timeout", DEFAULT_TIMEOUT), retries=int(check.get("Retries") or DEFAULT_RETRIES),
                    start_period=seconds("StartPeriod", 0.0),
                    start_interval=seconds("StartInterval", DEFAULT_START_INTERVAL))


def initial_health(config: dict[str, Any]) -> dict[str, Any]:
    """State.Health at a start: ``starting`` with no streak and no log; {} without a healthcheck."""
    if schedule_of(config) is None:
        return {}
    return {"Status": STARTING, "FailingStreak": 0, "Log": []}


def status_suffix(health: dict[str, Any] | None) -> str:
    """What ``ps`` appends to ``Up ...``: `` (healthy)``, `` (unhealthy)``, `` (health: starting)``."""
    status = (health or {}).get("Status")
    if not status:
        return ""
    return " (health: starting)" if status == STARTING else f" ({status})"


def filter_value(health: dict[str, Any] | None) -> str:
    """The container's value for ``ps --filter health=``: starting, healthy, unhealthy or none."""
    return (health or {}).get("Status") or "none"


def health_command(containers: Containers, container_id: str) -> list[str]:
    """What a monitor runs for one check: ``pyengine [global options] container health-run ID``."""
    from pyengine.containers.monitor import resume_command

    argv = resume_command(containers, container_id, 0.0, 0.0)
    return [*argv[:argv.index("monitor-resume")], "health-run", container_id]


# -- the monitor's schedule (Python; pyengine-shim does the same once it has taken over) --------
class HealthSchedule:
    """When the monitor starts the next check, and the check's process while it runs."""

    def __init__(self, containers: Containers, container_id: str, config: dict[str, Any], started: float) -> None:
        self.schedule = schedule_of(config)
        self.started = started
        self.argv = health_command(containers, container_id) if self.schedule else []
        self.pid = 0
        self.pidfd: int | None = None
        self.kill_at = 0.0
        self.next_at = started + (self.schedule.interval_at(0.0) if self.schedule else 0.0)

    @property
    def active(self) -> bool:
        return self.schedule is not None

    def timeout(self, now: float) -> float | None:
        """Seconds until there is something to do (start a check, or kill one that overstays)."""
        if self.schedule is None:
            return None
        return max(0.0, (self.kill_at if self.pid else self.next_at) - now)

    def tick(self, now: float) -> None:
        """Start the check that is due; kill the process group of one that overstays."""
        if self.schedule is None:
            return
        if self.pid:
            if now >= self.kill_at:
                _kill_group(self.pid)
            return
        if now < self.next_at:
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs at once
            try:
                os.setpgid(0, 0)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):  # the monitor ignores them
                    signal.signal(signum, signal.SIG_DFL)
                os.execv(self.argv[0], self.argv)
            finally:
                os._exit(127)
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.kill_at = now + self.schedule.timeout + KILL_GRACE

    def reap(self, now: float) -> None:
        """The check's process ended: reap it; the next check is an interval from now."""
        if not self.pid:
            return
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.pid, self.pidfd = 0, None
        assert self.schedule is not None
        self.next_at = now + self.schedule.interval_at(now - self.started)

    def stop(self) -> None:
        """The container ended: end a running check."""
        if self.pid:
            _kill_group(self.pid)
            self.reap(time.monotonic())

    def shim_args(self, now: float) -> list[str]:
        """pyengine-shim's options to keep this schedule (whole milliseconds)."""
        if self.schedule is None:
            return []
        s = self.schedule
        left = max(0.0, self.started + s.start_period - now)
        return ["--health-interval-ms", str(_ms(s.interval)), "--health-start-interval-ms", str(_ms(s.start_interval)),
                "--health-start-left-ms", str(_ms(left)), "--health-timeout-ms", str(_ms(s.timeout + KILL_GRACE)),
                "--health-next-ms", str(_ms(max(0.0, self.next_at - now))),
                "--health-argv", str(len(self.argv)), *self.argv]


def _ms(seconds: float) -> int:
    return max(0, min(int(seconds * 1000), 0x7FFFFFFF))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- one check: ``pyengine container health-run ID`` ---------------------------------------------
def run_check(containers: Containers, container_id: str) -> dict[str, Any] | None:
    """Run the container's test once inside it (as ``exec`` does, with the engine's pipes),
    kill it at the timeout, and record the result; the result, or None when the container
    has no healthcheck or is not running (nothing is recorded then)."""
    from pyengine.containers.store import now_iso
    from pyengine.errors import Conflict, NotFound

    try:
        record = containers.get(container_id)
    except NotFound:
        return None
    schedule = schedule_of(record.config)
    if schedule is None or record.state.status != "running":
        return None
    started_at = record.state.started_at
    start = now_iso()
    try:
        session = containers.exec(record.id, schedule.command)
    except (Conflict, NotFound):
        return None  # stopped or paused meanwhile: no result, as Docker's probe is cancelled
    except PyEngineError as exc:
        result = {"Start": start, "End": now_iso(), "ExitCode": -1, "Output": str(exc)}
    else:
        code, output = _collect(session, schedule.timeout)
        if code is None:
            output = f"Health check exceeded timeout ({_go_duration(schedule.timeout)})"
            code = -1
        result = {"Start": start, "End": now_iso(), "ExitCode": code, "Output": output}
    record_result(containers, record.id, started_at, schedule, result)
    return result


def _collect(session: Any, timeout: float) -> tuple[int | None, str]:
    """The command's exit code and its stdout+stderr (the first MAX_OUTPUT bytes); (None, ...)
    when it ran past ``timeout`` (it is killed)."""
    deadline = time.monotonic() + timeout
    pipes = [fd for fd in (session.stdout_r, session.stderr_r) if fd is not None]
    output = bytearray()
    pidfd = os.pidfd_open(session.pid)
    exited_at: float | None = None
    try:
        while pipes:
            now = time.monotonic()
            if now >= deadline:
                session.kill(signal.SIGKILL)
                session.close()
                session.wait()
                return None, output[:MAX_OUTPUT].decode(errors="replace")
            wait_for = deadline - now if exited_at is None else min(deadline - now, exited_at + 0.2 - now)
            ready, _, _ = select.select([*pipes, *([pidfd] if exited_at is None else [])], [], [], max(0.0, wait_for))
            if not ready and exited_at is not None:
                break  # it exited; a background child holds the pipes open
            for fd in ready:
                if fd == pidfd:
                    exited_at = time.monotonic()
                    continue
                data = os.read(fd, 65536)
                if not data:
                    pipes.remove(fd)
                elif len(output) < MAX_OUTPUT:
                    output += data
    finally:
        os.close(pidfd)
    if exited_at is None and time.monotonic() >= deadline:
        session.kill(signal.SIGKILL)
    session.close()
    code = session.wait()
    return code, output[:MAX_OUTPUT].decode(errors="replace")


def _go_duration(seconds: float) -> str:
    """Go's Duration.String() for the common cases: ``300ms``, ``30s``, ``1m30s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:g}s"
    return f"{int(minutes)}m{text}" if minutes else text


def record_result(containers: Containers, container_id: str, started_at: str, schedule: Schedule,
                  result: dict[str, Any]) -> None:
    """Add a check's result to State.Health (Docker's rules: a pass makes it healthy, a failure
    counts towards ``retries`` except while ``starting`` within the start period) and record
    ``health_status: <status>`` when the status changed. A result of an earlier run of the
    container (it restarted while the check ran) is dropped."""
    from pyengine.containers.inspect import rfc3339, unix_seconds
    from pyengine.errors import NotFound

    try:
        with containers.store.container_lock(container_id):
            record = containers.store.load(container_id)
            state = record.state
            if state.status != "running" or state.started_at != started_at:
                return
            health = dict(state.health or initial_health(record.config))
            before = health.get("Status")
            entry = {"Start": rfc3339(result["Start"]), "End": rfc3339(result["End"]),
                     "ExitCode": result["ExitCode"], "Output": result["Output"]}
            health["Log"] = [*(health.get("Log") or []), entry][-MAX_LOG_ENTRIES:]
            if result["ExitCode"] == 0:
                health["FailingStreak"] = 0
                health["Status"] = HEALTHY
            else:
                since_start = unix_seconds(result["Start"]) - unix_seconds(started_at)
                if not (health.get("Status") == STARTING and since_start < schedule.start_period):
                    health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
                    if health["FailingStreak"] >= schedule.retries:
                        health["Status"] = UNHEALTHY
            state.health = health
            containers.store.save_state(container_id, state)
    except NotFound:
        return
    if health["Status"] != before:
        containers.emit(record, f"health_status: {health['Status']}")


def health_run_main(containers: Containers, container_id: str) -> None:
    """The body of ``pyengine container health-run``: one check; never a traceback (the
    monitor's log gets one line)."""
    try:
        run_check(containers, container_id)
    except PyEngineError as exc:
        print(f"pyengine: health check of {container_id[:12]}: {exc}", file=sys.stderr)
