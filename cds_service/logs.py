"""Log output: one JSON object per line (``LOG_FORMAT=json``) or plain text for people.

``configure_logging`` is called once by ``cds-service serve`` (another host of
``create_app`` calls it too, or configures logging its own way): one handler on
the root logger writing to stderr, the service's loggers at INFO, libraries at
WARNING (urllib3 would log URLs, which hold patient ids, at DEBUG).

A log call adds structured fields with ``extra={"fields": {...}}``; they become
keys of the JSON object, or ``key=value`` pairs in text. What goes in is the
caller's responsibility: never a patient identifier, name, resource, token or JWT.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime

import orjson
from gunicorn.glogging import Logger as _GunicornBaseLogger

from cds_service.config import ENV_PREFIX, KEYS_BY_NAME, ConfigError

LOG_FORMATS = ("json", "text")
SERVICE_LOGGER = "cds_service"


def _timestamp(record: logging.LogRecord) -> str:
    instant = datetime.fromtimestamp(record.created, UTC)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``, the exception on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{key}={orjson.dumps(value, default=str).decode()}"
                         for key, value in _fields(record).items() if value is not None)
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        line = f"{line} {pairs}" if pairs else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _ServiceHandler(logging.StreamHandler):
    """The handler ``configure_logging`` installs (and replaces when called again)."""


def configure_logging(log_format: str | None = None) -> None:
    """Send log records to stderr as JSON lines or text; ``CDS_LOG_FORMAT`` when not given.

    Calling it again replaces the handler it installed, so it may run more than once.
    """
    if log_format is None:
        log_format = os.environ.get(ENV_PREFIX + "LOG_FORMAT", KEYS_BY_NAME["LOG_FORMAT"].default)
    log_format = log_format.strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                          f"not {log_format!r}")
    handler = _ServiceHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ServiceHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(SERVICE_LOGGER).setLevel(logging.INFO)


class GunicornLogger(_GunicornBaseLogger):
    """Gunicorn's own messages (start, workers booted or killed) through the root
    handler, so that they share the service's log format.

    Its setup also configures the service's logging, so that ``gunicorn -c
    deploy/gunicorn.conf.py`` logs like ``cds-service serve``.
    """

    def setup(self, cfg) -> None:
        super().setup(cfg)
        configure_logging()
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True
