"""structlog set-up, in one place: JSON lines to the experiment's log file, readable lines on the console."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import structlog


class _JsonLines:
    """Processor that appends each event as one JSON line (flushed, so a crash loses nothing)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")

    def __call__(self, logger, method_name, event_dict):
        self.file.write(json.dumps(event_dict, default=str) + "\n")
        self.file.flush()
        return event_dict

    def close(self):
        self.file.close()


_sink: _JsonLines | None = None


def configure(json_path: str | Path | None = None, level: str = "info", stream=None) -> None:
    """(Re)configure logging; `json_path=None` logs to the console only (other ranks, scripts)."""
    global _sink
    if _sink is not None:
        _sink.close()
        _sink = None
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
    ]
    if json_path is not None:
        _sink = _JsonLines(Path(json_path))
        processors.append(_sink)
    processors.append(structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def bind(**fields) -> None:
    """Fields carried by every later event (the experiment name, the stage)."""
    structlog.contextvars.bind_contextvars(**fields)


def get_logger(**fields):
    return structlog.get_logger().bind(**fields)


def close() -> None:
    """Close the experiment's log file and go back to console-only logging."""
    configure(None)
    structlog.contextvars.clear_contextvars()
