"""Partial least squares on log1p counts standardised per channel, components chosen on the validation rows.
With baseline.features = "elements" the "channels" are the element table's net peak areas (clipped at 0)."""

from __future__ import annotations

import numpy as np
from sklearn.cross_decomposition import PLSRegression
from sklearn.preprocessing import StandardScaler

from coremax.baselines.base import Baseline, features_inputs, register


@register("pls")
class Pls(Baseline):
    """PLS regression on log1p counts standardised per channel with train statistics."""

    config_keys = ("features",)

    def __init__(self, components=(2, 3, 4, 5, 6, 8, 10, 12, 15, 20), *, features: str):
        super().__init__()
        self.components = tuple(int(k) for k in components)
        self.inputs = features_inputs(self.method, features)

    @staticmethod
    def _log(x: np.ndarray) -> np.ndarray:
        return np.log1p(np.clip(x, 0.0, None))

    def _fit_features(self, x, unlabelled=None):
        every = x if unlabelled is None else np.concatenate([x, unlabelled])
        self.scaler = StandardScaler().fit(self._log(every))
        return self._features(x)

    def _features(self, x):
        return self.scaler.transform(self._log(x))

    def feature_space(self, X) -> np.ndarray:
        """The PLS scores of every target's model: the directions that carry the targets."""
        f = self._features(self._cut(X))
        return np.hstack([m.transform(f) for m in self.models])

    def _grid(self, n_train, n_features):
        limit = min(n_train - 1, n_features)
        ks = sorted({min(k, limit) for k in self.components if k >= 1})
        return [{"n_components": k} for k in ks]

    def _fit_one(self, f, y, params, w=None):
        if w is not None:  # PLSRegression takes no weights: a row of weight w enters round(w / least weight) times
            copies = np.maximum(np.rint(w / w.min()), 1).astype(int)
            f, y = np.repeat(f, copies, axis=0), np.repeat(y, copies)
        return PLSRegression(n_components=params["n_components"], scale=False).fit(f, y)
