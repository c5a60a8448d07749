"""Multivariate log-ratio calibration (MLC: Weltje et al. 2015): every content log-ratio from all intensity
log-ratios at once, so the predicted composition is closed.

The composition is the content targets (CaCO3, TOC, element contents such as `Ca (wt%)`) plus the remainder r to
100 wt%. Each part's additive log-ratio z_j = ln(x_j / r) is a linear model of the centred log-ratios of the
intensity parts: ridge (its strength) or PLS (its component count), both offered and chosen per coordinate on the
validation rows by the RMSE of its content in wt% (the coordinate closed with the other parts as measured there):
in log-ratio units a coordinate that is good on average may blow up where exp() magnifies it. The back-transform
x_j = 100 exp(z_j) / (1 + sum_k exp(z_k)) gives parts that are never negative and, with the remainder, sum to 100.

Missing lab values (TOC is missing on ~15 % of samples): coordinate j is fitted on the rows where part j is
measured; on such a row a missing other part k enters the remainder as part k's training median.

Uncertainty: K-fold cross-validation (baseline.mlc.cv_folds) on the training rows, with the chosen hyperparameters,
gives the residuals of each coordinate; their covariance (pairwise over rows where both parts are measured) is
carried to wt% by Monte Carlo: z is drawn around the prediction, closed, and the quantiles of the draws bound
`predict_interval`. The residual sd per coordinate is in selected_params (`cv_sd_logratio`).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from coremax.baselines.base import _plain, register
from coremax.baselines.logratio import LogRatioBaseline, closed
from coremax.data.ratios import REPLACE
from coremax.config.ranges import check_range
from coremax.errors import UserError
from coremax.stats.metrics import rmse
from coremax.stats.weighting import choose_share, share_weights

RIDGE_ALPHAS = (1e-6, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)  # on clr features in log units, not standardised
PLS_COMPONENTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15)
DRAWS = 2000  # Monte Carlo draws per row for predict_interval (quantile error about 0.01 at level 0.9)


@register("mlc")
class Mlc(LogRatioBaseline):
    """Closed compositions of the content targets from the clr of the intensity parts (ridge or PLS per
    coordinate), with cross-validated prediction intervals."""

    config_keys = ("cv_folds",)

    def __init__(self, cv_folds: int, alphas=RIDGE_ALPHAS, components=PLS_COMPONENTS):
        super().__init__()
        check_range("baseline.mlc.cv_folds", cv_folds)
        self.cv_folds = int(cv_folds)
        self.alphas, self.components = tuple(float(a) for a in alphas), tuple(int(k) for k in components)

    # -- the per-coordinate grid, used by Baseline._choose and _predict_without ----------------------------
    def _grid(self, n_train, n_features):
        limit = min(n_train - 1, n_features - 1)  # clr columns sum to 0: rank n_features - 1
        return [{"model": "ridge", "alpha": a} for a in self.alphas] + \
            [{"model": "pls", "n_components": k} for k in sorted({min(k, limit) for k in self.components}) if k >= 1]

    def _fit_one(self, f, y, params, w=None):
        if params["model"] == "ridge":
            return Ridge(alpha=params["alpha"]).fit(f, y, sample_weight=w)
        from coremax.baselines.pls import Pls  # deferred: at the top it would register pls before nmf_svr
        return Pls()._fit_one(f, y, {"n_components": params["n_components"]}, w)  # weights as repeated rows

    def fit(self, X_train, Y_train, X_val, Y_val, targets, X_unlabelled=None, new_rows=None, settings=None,
            contents=None) -> "Mlc":
        """See LogRatioBaseline (X_unlabelled and settings are not used). Every target must be in `contents`
        (default: CaCO3, TOC and `<name> (wt%)`); the new cores' rows weigh per coordinate what
        `stats.weighting` chooses."""
        Y_train, Y_val = self._start(X_train, Y_train, X_val, Y_val, targets)
        self._composition(Y_train, contents)
        z_tr, z_va = self._coordinates(Y_train), self._coordinates(Y_val)
        f_tr, f_va = self.feature_space(X_train), self.feature_space(X_val)
        new = np.zeros(len(f_tr), bool) if new_rows is None else np.asarray(new_rows, bool)
        self.models, self.selected, residuals = [], {}, np.full(z_tr.shape, np.nan)
        for j, t in enumerate(self.targets):
            tr, va = ~np.isnan(z_tr[:, j]), ~np.isnan(z_va[:, j])
            self._rows(t, int(tr.sum()), int(va.sum()))
            f, z = f_tr[tr], z_tr[tr, j]

            def fit_with(w, f=f, z=z, f_va=f_va[va], j=j, va=va):
                best = self._choose_in_wt(f, z, f_va, Y_val[va], j, w)  # (val RMSE, params, model)
                return [best], np.array([best[0] ** 2]), lambda i: [self._predict_without(f, z, best[1], w, i)]
            (score, params, model), share, loo = choose_share(new[tr], z, fit_with)
            w = None if not share else share_weights(new[tr], share)
            residuals[tr, j] = self._cv_residuals(f, z, params, w)
            self.models.append(model)
            self.selected[t] = {**{k: _plain(v) for k, v in params.items()}, "val_rmse_chosen_on": float(score),
                                "cv_sd_logratio": float(np.sqrt(np.mean(residuals[tr, j] ** 2))),
                                "cv_folds": min(self.cv_folds, int(tr.sum())),
                                "median_for_missing": float(self.medians[j])}
            if share is not None:
                self.selected[t].update(new_core_share=share, new_core_loo_rmse=loo)
        self.cv_cov = _pairwise_cov(residuals)
        pred = self.predict(X_val)
        for j, t in enumerate(self.targets):
            va = ~np.isnan(Y_val[:, j])
            self.selected[t] = {**self.selected[t], "val_rmse": rmse(Y_val[va, j], pred[va, j]),
                                **self._part_record()}
        return self

    def _choose_in_wt(self, f, z, f_va, y_va: np.ndarray, j: int, w) -> tuple[float, dict, object]:
        """(validation RMSE in wt%, hyperparameters, model) of the grid point that predicts content j best on the
        validation rows, its coordinate closed with the other parts as measured there: an error in log-ratio
        units would let a coordinate that is good on average blow up where exp() magnifies it."""
        best = None
        for params in self._grid(len(z), f.shape[1]):
            model = self._fit_one(f, z, params, w)
            score = rmse(y_va[:, j], self.content_closed_as_measured(np.ravel(model.predict(f_va)), y_va, j))
            if best is None or score < best[0]:
                best = (score, params, model)
        return best

    def content_closed_as_measured(self, z: np.ndarray, measured: np.ndarray, j: int) -> np.ndarray:
        """Content j in wt% of its coordinate z on rows whose contents were `measured`: closed with the other
        parts as measured there, not as predicted, so a coordinate is judged alone."""
        filled = self._filled(measured)
        rest = np.maximum(100.0 - filled.sum(axis=1), REPLACE * self.rest_limit)
        others = (np.delete(filled, j, axis=1).sum(axis=1)) / rest  # sum over k != j of exp(z_k)
        e = np.exp(np.clip(z, -50, 50))
        return 100.0 * e / (1.0 + e + others)

    def _coordinates(self, Y: np.ndarray) -> np.ndarray:
        """z_j = ln(x_j / r) per row (NaN where part j is not measured)."""
        logs, rest = self._logratios(Y)
        return logs - rest[:, None]

    def _cv_residuals(self, f, z, params, w) -> np.ndarray:
        """Each training row's residual from a model with the chosen hyperparameters fitted without its fold."""
        out = np.empty(len(z))
        folds = KFold(n_splits=min(self.cv_folds, len(z)), shuffle=True, random_state=0)
        for keep, held in folds.split(f):
            fold = params if params["model"] != "pls" else \
                {**params, "n_components": min(params["n_components"], len(keep) - 1)}  # a fold has fewer rows
            model = self._fit_one(f[keep], z[keep], fold, None if w is None else w[keep])
            out[held] = z[held] - np.ravel(model.predict(f[held]))
        return out

    # -- prediction --------------------------------------------------------------------------------------------
    def _z(self, X) -> np.ndarray:
        if not self.models:
            raise UserError(f"The {self.method} baseline has not been fitted; run the baseline stage first.")
        f = self.feature_space(X)
        return np.column_stack([np.ravel(m.predict(f)) for m in self.models]).reshape(len(f), len(self.models))

    def predict(self, X, remainder: bool = False) -> np.ndarray:
        """Contents in wt% (rows, targets), closed; `remainder=True` adds the remainder as a last column."""
        parts, rest = closed(self._z(X))
        return np.column_stack([parts, rest]) if remainder else parts

    def predict_interval(self, X, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi), each (rows, targets) in wt%: the central `level` interval of each content, from Monte Carlo
        draws of the log-ratio coordinates with their cross-validated residual covariance, closed (seeded: the
        same call gives the same bounds)."""
        if not 0.0 < float(level) < 1.0:
            raise UserError(f"The interval level {level!r} must lie between 0 and 1 (e.g. 0.9).")
        z = self._z(X)
        vals, vecs = np.linalg.eigh(self.cv_cov)
        root = vecs * np.sqrt(np.clip(vals, 0.0, None))  # cov = root @ root.T
        noise = np.random.default_rng(0).standard_normal((DRAWS, z.shape[1])) @ root.T
        q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
        lo, hi = np.empty_like(z), np.empty_like(z)
        for start in range(0, len(z), 256):  # draws of 256 rows at a time: memory stays ~ 256 x DRAWS x targets
            rows = slice(start, start + 256)
            draws = (z[rows, None, :] + noise[None]).reshape(-1, z.shape[1])
            parts = closed(draws)[0].reshape(-1, DRAWS, z.shape[1])
            lo[rows], hi[rows] = np.quantile(parts, q, axis=1)
        return lo, hi

    def log_contrast(self, target: str) -> dict:
        """Coordinate ln(x_target / r) as intercept + sum_i c_i ln(I_i), the c_i summing to 0 (a function of
        intensity ratios only): {"intercept": b, part: c_i, ...}."""
        j = self.targets.index(target)
        f = np.vstack([np.zeros(len(self.parts)), np.eye(len(self.parts))])
        z = np.ravel(self.models[j].predict(f))
        c = z[1:] - z[0]
        return {"intercept": float(z[0]), **dict(zip(self.parts, (float(v) for v in c - c.mean())))}


def _pairwise_cov(res: np.ndarray) -> np.ndarray:
    """Covariance of residual columns with NaN gaps: each variance on its own rows, each correlation on the rows
    both columns have (0 with fewer than 3)."""
    k = res.shape[1]
    sd = np.sqrt(np.nanmean(res ** 2, axis=0))
    corr = np.eye(k)
    for a in range(k):
        for b in range(a + 1, k):
            both = ~np.isnan(res[:, a]) & ~np.isnan(res[:, b])
            if both.sum() >= 3 and sd[a] > 0 and sd[b] > 0:
                ra, rb = res[both, a], res[both, b]
                corr[a, b] = corr[b, a] = np.clip(np.mean(ra * rb) / np.sqrt(np.mean(ra**2) * np.mean(rb**2)), -1, 1)
    return corr * np.outer(sd, sd)
