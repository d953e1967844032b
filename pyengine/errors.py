"""The errors a user can meet: one hierarchy, each with the exit status the CLI returns.

Everything here is cheap to import; plugins raise these and the CLI turns them into one line.
"""

from __future__ import annotations

import errno


class PyEngineError(Exception):
    """Base of every error that reaches a user as one line and a non-zero exit status."""

    #: exit status of the CLI (125 is Docker's "the engine itself failed")
    exit_code = 125


class UsageError(PyEngineError):
    """The command line asked for something that cannot be (bad flag value, unknown driver)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration file or environment is invalid; names the file, line or key."""


class DriverNotSupported(PyEngineError):
    """Raised by a driver's probe or init when this host cannot run it; the reason says why.

    Selection skips such a driver and ``info``/``plugins`` show ``skip: <reason>``.
    """


class DriverError(PyEngineError):
    """A driver failed while doing its work (not a host limitation)."""


class PluginError(UsageError):
    """A plugin that was asked for by name is disabled, failed to load or failed to start."""


class NotFound(PyEngineError):
    """An image, container, layer, network or volume that was named does not exist."""

    exit_code = 1


class Conflict(PyEngineError):
    """The operation conflicts with the current state (name in use, layer in use, ...)."""

    exit_code = 1


class InvalidArchive(PyEngineError):
    """An archive, layer, manifest or blob is malformed, corrupt or malicious."""

    exit_code = 1


class NoSpace(PyEngineError):
    """The filesystem holding ``path`` is full (ENOSPC) or its quota is used up (EDQUOT)."""

    def __init__(self, path: object = None) -> None:
        self.path = str(path) if path else ""
        super().__init__(f"no space left on device: {self.path or 'the data root or run root'}")

    @staticmethod
    def is_full(exc: BaseException) -> bool:
        """True when ``exc`` is an OSError saying the filesystem is full or over quota."""
        return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Damaged(PyEngineError):
    """A record in the stores (a container's config or state, an image's config) is unreadable;
    the message names it and says how to get rid of it."""


class DockerfileError(PyEngineError):
    """A Dockerfile (or what it names in the build context) is invalid: ``Dockerfile:LINE: WHAT``.

    ``what`` is the bare reason, ``line`` the 1-based line it is about (None when no line
    applies), ``filename`` the Dockerfile's name as the user gave it.
    """

    exit_code = 1

    def __init__(self, what: str, line: int | None = None, filename: str = "Dockerfile") -> None:
        self.what = what
        self.line = line
        self.filename = filename
        super().__init__(f"{filename}:{line}: {what}" if line is not None else f"{filename}: {what}")

    def located(self, line: int, filename: str | None = None) -> DockerfileError:
        """The same error placed at ``line`` (for errors found below the parser, e.g. a COPY source)."""
        return DockerfileError(self.what, line, filename or self.filename)
