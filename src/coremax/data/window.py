"""The channels a model reads from one spot: an energy window [first, end) of each run (tube voltage) of the spot,
joined run after run. A data set of several runs stores each spot's spectra side by side, run-major
((rows, runs x spectrum_length)); a one-run data set is the one-span case and reads exactly the slice it always
did, so one-run data sets, checkpoints and models are unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from coremax.data.shards import Shards
from coremax.errors import UserError


@dataclass(frozen=True)
class Window:
    spans: tuple[tuple[int, int], ...]  # per run, [first, end) within that run's spectrum
    length: int                          # channels per run as stored (data.spectrum_length)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(e - f for f, e in self.spans)

    @property
    def width(self) -> int:
        return sum(self.widths)

    @property
    def runs(self) -> int:
        return len(self.spans)

    def columns(self) -> list[slice]:
        """The stored columns of each run's span."""
        return [slice(r * self.length + f, r * self.length + e) for r, (f, e) in enumerate(self.spans)]

    def __call__(self, x):
        """The window of arrays or tensors (..., runs x length) -> (..., width); one run: a view, no copy."""
        parts = [x[..., c] for c in self.columns()]
        if len(parts) == 1:
            return parts[0]
        if isinstance(x, Shards):  # memory-mapped shards stay on disk: only the columns are chosen
            return x.pick(np.concatenate([np.arange(c.start, c.stop) for c in self.columns()]))
        return torch.cat(parts, dim=-1) if isinstance(x, torch.Tensor) else np.concatenate(parts, axis=-1)

    def map_runs(self, x: torch.Tensor, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        """fn(part, its first channel) of each run's part of a windowed batch, joined again: a per-spectrum
        normalisation or a calibration jitter must not mix the runs. One run: fn(x, first)."""
        if self.runs == 1:
            return fn(x, self.spans[0][0])
        parts = torch.split(x, list(self.widths), dim=-1)
        return torch.cat([fn(part, f) for part, (f, _) in zip(parts, self.spans)], dim=-1)

    def per_run(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """`fn` of a batch applied to each run's part (map_runs); one run: `fn` itself."""
        return fn if self.runs == 1 else (lambda x: self.map_runs(x, lambda part, _first: fn(part)))

    def state(self) -> dict:
        """What a checkpoint keeps of the window (from_state reads it back)."""
        return {"spans": [list(s) for s in self.spans], "length": self.length}

    @staticmethod
    def from_state(state: dict | None, data_config: dict) -> "Window":
        """A checkpoint's window; one written before several runs existed: data.channels of one run."""
        if state:
            return Window(tuple((int(f), int(e)) for f, e in state["spans"]), int(state["length"]))
        first, end = data_config["channels"]
        return Window(((int(first), int(end)),), int(data_config.get("spectrum_length", end)))


def as_window(channels) -> Window:
    """A Window, or the [first, end] of a one-run config (a window of one run needs no stored length)."""
    if isinstance(channels, Window):
        return channels
    first, end = (int(c) for c in channels)
    return Window(((first, end),), end)


def data_window(data_config: dict, info: dict) -> Window:
    """The window a stage reads from a data set: data.channels per run, or data.run_channels, for as many runs
    per spot as the data set holds (its info.toml `runs`; one when it has none)."""
    runs = len(info.get("runs", [])) or 1
    return make_window(data_config["channels"], data_config["spectrum_length"], runs,
                       data_config.get("run_channels", []))


def make_window(channels, spectrum_length: int, runs: int = 1, run_channels: Sequence = ()) -> Window:
    """The checked window of data.channels (one [first, end] for every run) or data.run_channels (one per run,
    in the data set's run order: ascending kV)."""
    spans = [channels] * runs if not run_channels else list(run_channels)
    key = "data.run_channels" if run_channels else "data.channels"
    if len(spans) != runs:
        raise UserError(f"{key} = {list(run_channels)} gives {len(spans)} windows for a data set of {runs} runs "
                        "per spot; give one [first, end] per run, in ascending kV order.")
    return Window(tuple(_span(s, spectrum_length, key) for s in spans), int(spectrum_length))


def _span(span, spectrum_length: int, key: str) -> tuple[int, int]:
    if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in span):
        raise UserError(f"{key} = {span!r} must be two integers [first, end] per window, e.g. [0, 512].")
    first, end = span
    if not 0 <= first < end <= spectrum_length:
        raise UserError(f"{key} = {list(span)} must satisfy 0 <= first < end <= data.spectrum_length "
                        f"({spectrum_length}); e.g. [0, 512] keeps the channels a 10 kV spectrum fills.")
    return int(first), int(end)
