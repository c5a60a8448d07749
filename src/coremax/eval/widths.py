"""Interval widths per spectrum (suggest.py's half-widths and its `uncertain` method): normalised split-conformal
intervals (Lei et al. 2018). Each validation residual is divided by that row's embedding distance from the
training rows; a new spectrum's half-width is the conformal quantile of those ratios times its own distance.
The calibration is fitted once from the data set (an experiment) and stored in a model bundle, so a bundle
gives the same widths without the training rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coremax.engine.labels import labelled
from coremax.eval.shift import Distance
from coremax.stats.conformal import conformal_quantile

REFERENCE_ROWS = 500  # training rows whose embeddings give the distance's mean and sd (500 pin them; more cost time)
EPS = 1e-6            # added to every distance: a spectrum on the training mean keeps a non-zero width


@dataclass
class WidthCalibration:
    """The training embeddings' mean and sd (`Distance`) and the conformal quantile of the normalised
    validation residuals per target."""
    distance: Distance
    q: np.ndarray

    @classmethod
    def fit(cls, pred, train: pd.DataFrame, val: pd.DataFrame, level: float) -> "WidthCalibration":
        """From the training rows (a fixed sample of REFERENCE_ROWS) and the labelled validation rows."""
        train = train.sample(min(len(train), REFERENCE_ROWS), random_state=0)
        val = labelled(val, pred.targets)
        e_val = pred.embed(val)  # each set embedded once: the embeddings are most of the time this takes
        dist = Distance.fit(pred.embed(train), e_val)
        s_val, p_val = dist(e_val) + EPS, pred.bounded(val)
        q = np.array([conformal_quantile(np.abs(val[t].to_numpy(np.float64) - p_val[:, j]) / s_val, 1 - level)
                      for j, t in enumerate(pred.targets)])
        return cls(dist, q)

    def half_widths(self, e_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(half-widths (n, T), width score (n,)) of rows embedded as `e_rows`; the score is the half-width
        relative to its mean, averaged over targets (what `uncertain` ranks)."""
        half = (self.distance(e_rows) + EPS)[:, None] * self.q[None]
        return half, (half / np.maximum(half.mean(0), 1e-12)).mean(1)

    def to_json(self) -> dict:
        """Plain lists with their dtypes, so that the arrays read back bit for bit."""
        d = self.distance
        return {"mean": d.mean.tolist(), "std": d.std.tolist(), "dtype": str(np.asarray(d.mean).dtype),
                "threshold": d.threshold if np.isfinite(d.threshold) else "inf", "q": self.q.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "WidthCalibration":
        dtype = np.dtype(data["dtype"])
        dist = Distance(np.asarray(data["mean"], dtype=dtype), np.asarray(data["std"], dtype=dtype),
                        float(data["threshold"]))
        return cls(dist, np.asarray(data["q"], dtype=np.float64))
