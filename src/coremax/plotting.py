"""The one figure style of every PNG CoreMAX writes (evaluation, studies, sweeps, notebooks' helpers): an Agg
`Figure` built directly, never through pyplot (no global registry fills up over a long study, no display is
needed), saved atomically at one DPI."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coremax.io import atomic_path

DPI = 120


def new_figure(nrows: int, ncols: int, width: float, height: float, **subplot_kw):
    """A constrained-layout figure of nrows x ncols panels, each width x height inches; axes always 2-D."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def save(fig: Figure, path) -> Path:
    """Write the figure as a PNG atomically (folders made as needed) and return the path."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()
    return path
