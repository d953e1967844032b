"""Logging: structlog key/value events, console lines for people or JSON lines for machines,
both on stderr.

Everything in pyengine and its plugins logs through :func:`get_logger`. Importing structlog
costs about 50 ms (it pulls in asyncio), half of a container start's budget, so the loggers
returned here are lazy: an event below the configured level costs a comparison, and structlog
is imported and configured only when the first event passes the level.
"""

from __future__ import annotations

import sys
from typing import Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

_settings: dict[str, Any] = {"level": LEVELS["warning"], "format": "console", "configured": False}


def configure(level: str = "warning", fmt: str = "console") -> None:
    """Show events at ``level`` or above, rendered as ``fmt`` (``console`` or ``json``)."""
    _settings.update(level=LEVELS[level], format=fmt, configured=False)
    if "structlog" in sys.modules:
        _configure_structlog()


def _configure_structlog() -> None:
    import structlog

    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if _settings["format"] == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # Plain tracebacks: with rich installed (for progress bars) structlog would draw them
        # with rich, in another shape than the one people and tests know.
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                                        exception_formatter=structlog.dev.plain_traceback))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_settings["level"]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _settings["configured"] = True


class LazyLogger:
    """A structlog logger that does not exist until an event passes the level filter."""

    def __init__(self, name: str | None = None, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}

    def bind(self, **values: Any) -> LazyLogger:
        return LazyLogger(self._name, {**self._context, **values})

    def _emit(self, level: str, event: str, values: dict[str, Any]) -> None:
        if LEVELS[level] < _settings["level"]:
            return
        if not _settings["configured"]:
            _configure_structlog()
        import structlog

        logger = structlog.get_logger(self._name) if self._name else structlog.get_logger()
        getattr(logger.bind(**self._context), level)(event, **values)

    def debug(self, event: str, **values: Any) -> None:
        self._emit("debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._emit("info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._emit("warning", event, values)

    warn = warning

    def error(self, event: str, **values: Any) -> None:
        self._emit("error", event, values)

    def exception(self, event: str, **values: Any) -> None:
        values.setdefault("exc_info", True)
        self._emit("error", event, values)

    def critical(self, event: str, **values: Any) -> None:
        self._emit("critical", event, values)


def get_logger(name: str | None = None) -> LazyLogger:
    """The logger plugins and the core use: ``log.info("layer.applied", digest=..., ms=...)``."""
    return LazyLogger(name)
