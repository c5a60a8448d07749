"""The published approach (Lee et al. 2022): spectra as shares of total counts, NMF weights, standardised, then an
RBF support-vector regressor per target. With baseline.features = "elements" the element table's net peak areas
(clipped at 0) take the place of the counts: NMF of each row's shares of its total area."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from coremax.baselines.base import Baseline, TargetScaled, features_inputs, register


@register("nmf_svr")
class NmfSvr(Baseline):
    """NMF weights of total-count-normalised spectra, standardised, then an RBF SVR per target."""

    config_keys = ("n_components", "features")

    def __init__(self, n_components: int, C=(1.0, 10.0, 100.0),
                 gamma=(0.01, 0.03, 0.1, 0.3, 1.0), epsilon=(0.05, 0.2), max_iter: int = 1000, *,
                 features: str):
        super().__init__()
        self.n_components = int(n_components)
        self.inputs = features_inputs(self.method, features)
        # gamma values are multiples of 1/n_components, the "scale" default for standardised features;
        # C stops at 100 because C=1000 fits can take 20 s each on 1,500 rows
        self.grid = {"C": tuple(C), "gamma": tuple(gamma), "epsilon": tuple(epsilon)}
        self.max_iter = int(max_iter)

    @staticmethod
    def _shares(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, None)
        return x / np.maximum(x.sum(axis=1, keepdims=True), 1.0)

    def _fit_features(self, x, unlabelled=None):
        # an element table may hold fewer parts than baseline.nmf_svr.n_components: NMF cannot find more than there are
        k = min(self.n_components, x.shape[1]) if self.inputs == "elements" else self.n_components
        self.nmf = NMF(n_components=k, init="nndsvda", max_iter=self.max_iter, tol=1e-4,
                       random_state=0)
        every = x if unlabelled is None else np.concatenate([x, unlabelled])
        with warnings.catch_warnings():
            # a loose NMF fit is still a usable feature map; the SVR grid on val rows judges the result
            warnings.simplefilter("ignore", ConvergenceWarning)
            w = self.nmf.fit_transform(self._shares(every))
        self.scaler = StandardScaler().fit(w)  # standardised over every spectrum it saw
        return self.scaler.transform(w[:len(x)])

    def _features(self, x):
        return self.scaler.transform(self.nmf.transform(self._shares(x)))

    def _grid(self, n_train, n_features):
        keys = list(self.grid)
        return [dict(zip(keys, v)) for v in itertools.product(*self.grid.values())]

    def _fit_one(self, f, y, params, w=None):
        svr = SVR(kernel="rbf", C=params["C"], gamma=params["gamma"] / f.shape[1], epsilon=params["epsilon"])
        return TargetScaled(svr, y, f, w)  # a row's weight scales its C
