"""structlog set-up, in one place: JSON lines to the experiment's log file (every event, every field), short
readable lines on the console (one per event; `--quiet`: warnings only, `--verbose`: every field)."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import structlog

from coremax.paths import refuse_links


class _JsonLines:
    """Processor that appends each event as one JSON line (flushed, so a crash loses nothing)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        refuse_links(path)
        # O_NOFOLLOW: a symlink put in the file's place after the check is refused by the system itself
        self.file = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666), "a",
                              encoding="utf-8")

    def __call__(self, logger, method_name, event_dict):
        # strict JSON: a NaN or infinite number is written as null, which every JSON reader accepts
        self.file.write(json.dumps(_finite(event_dict), default=str, allow_nan=False) + "\n")
        self.file.flush()
        return event_dict

    def close(self):
        self.file.close()


def _finite(value):
    """`value` with every NaN or infinite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _console_without_tracebacks(logger, method_name, event_dict):
    """An event with a traceback (a run that failed or was stopped) stays in the log file: on the console the
    command says it in one sentence, or Python prints the traceback of an error that is a bug."""
    if "exception" in event_dict:
        raise structlog.DropEvent
    return event_dict


# What the console shows, set once per command (--quiet, --verbose); the log file always gets every event whole.
_console = {"quiet": False, "verbose": False}
WIDTH = 150  # characters of a console line beyond which its fields are cut


def set_console(quiet: bool = False, verbose: bool = False) -> None:
    _console.update(quiet=quiet, verbose=verbose)
    sink, level, _ = _stack[-1] if _stack else (None, "info", {})
    _apply(sink, level)


def console_quiet() -> bool:
    return _console["quiet"]


def _console_level(logger, method_name, event_dict):
    if _console["quiet"] and event_dict.get("level") in ("debug", "info"):
        raise structlog.DropEvent
    return event_dict


def _short(value) -> str:
    """A field's value as the console shows it: numbers to 4 significant digits, long lists and tables counted."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(_finite(value), default=str) if isinstance(value, (dict, list, tuple)) else str(value)
    if len(text) > 40 and isinstance(value, (dict, list, tuple)):
        return f"[{len(value)} {'keys' if isinstance(value, dict) else 'items'}]"
    return text


def _epoch_line(e: dict) -> str:
    """One training epoch: loss, validation loss and RMSE per target, speed."""
    parts = [f"epoch {e.get('epoch')}"]
    for key, name in (("train_loss", "loss"), ("val_loss", "val loss")):
        if isinstance(e.get(key), float) and math.isfinite(e[key]):
            parts.append(f"{name} {e[key]:.4g}")
    rmse = [f"{k[len('val_rmse_'):]} {v:.3g}" for k, v in e.items() if k.startswith("val_rmse_")
            and isinstance(v, float)]
    if rmse:
        parts.append("val RMSE " + ", ".join(rmse))
    if isinstance(e.get("spectra_per_s"), float) and math.isfinite(e["spectra_per_s"]):
        parts.append(f"{e['spectra_per_s']:.0f} spectra/s")
    return "  ".join(parts) + ("  (best)" if e.get("best") else "")


def _compact(logger, method_name, event_dict) -> str:
    """The console line of an event: its name and fields, the time stamp and the run's bound names left to the
    log file; an epoch as one short line."""
    e = {k: v for k, v in event_dict.items() if k not in ("timestamp", "experiment", "sweep", "study")}
    event, level = e.pop("event", ""), e.pop("level", "info")
    text = _epoch_line(e) if event == "epoch" else " ".join([event, *(f"{k}={_short(v)}" for k, v in e.items())])
    text = text if len(text) <= WIDTH else text[:WIDTH - 3] + "..."
    return text if level == "info" else f"{level}: {text}"


# Runs nest (a study runs experiments inside its own run): each level has its own file and bound fields.
_stack: list[tuple[_JsonLines | None, str, dict]] = []


def _apply(sink: _JsonLines | None, level: str, stream=None) -> None:
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
    ]
    if sink is not None:
        processors += [sink, _console_without_tracebacks]
    processors.append(_console_level)
    processors.append(structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
                      if _console["verbose"] else _compact)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def push(json_path: str | Path | None = None, level: str = "info", **fields) -> None:
    """Log to `json_path` (None: console only) with `fields` on every event, until the matching pop()."""
    sink = _JsonLines(Path(json_path)) if json_path is not None else None
    _stack.append((sink, level, fields))
    _apply(sink, level)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**fields)


def pop() -> None:
    """Close the innermost log file and return to the enclosing one (or to the console)."""
    sink, _, _ = _stack.pop()
    if sink is not None:
        sink.close()
    structlog.contextvars.clear_contextvars()
    if _stack:
        sink, level, fields = _stack[-1]
        _apply(sink, level)
        structlog.contextvars.bind_contextvars(**fields)
    else:
        _apply(None, "info")


def get_logger(**fields):
    return structlog.get_logger().bind(**fields)


class Scalars:
    """TensorBoard scalars from the same numbers as the `epoch` events (runtime.tensorboard); a no-op when
    `folder` is None (the option off, or a rank other than 0)."""

    def __init__(self, folder: Path | None):
        self.writer = None
        if folder is not None:
            from torch.utils.tensorboard import SummaryWriter  # optional package, checked by runtime.setup

            self.writer = SummaryWriter(str(folder))

    def write(self, row: dict, epoch: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and value == value:  # NaN (no MFU) left out
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
