"""The calibration of countless papers: a target as a straight line of one log-ratio of intensities, e.g. CaCO3 =
a + b ln(Ca/Ti), optionally with a second log-ratio term, fitted by (weighted) least squares.

Per target the validation rows choose the pair (baseline.ratio.pair = "": every unordered pair of parts; the
second term of baseline.ratio.terms = 2 greedily, given the first) and the scale the line is fitted on: wt% or the
logit ln(y / (100 - y)) for contents (whose lines then bend to stay within 0-100), as measured for other targets. The
new cores' samples weigh what `stats.weighting` chooses, as in the other baselines.
"""

from __future__ import annotations

import itertools

import numpy as np

from coremax.baselines.base import _plain, register
from coremax.baselines.logratio import LogRatioBaseline, default_contents, logit
from coremax.config.ranges import check_range
from coremax.errors import UserError
from coremax.stats.metrics import rmse
from coremax.stats.weighting import choose_share


def parse_pair(text: str) -> tuple[str, ...]:
    """baseline.ratio.pair: "" -> () (search every pair), "Ca/Ti" -> ("Ca", "Ti")."""
    if not str(text).strip():
        return ()
    names = tuple(p.strip() for p in str(text).split("/"))
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise UserError(f"baseline.ratio.pair = {text!r} must name two different parts as 'Ca/Ti', or be empty to "
                        "try every pair.")
    return names


def _unscale(z: np.ndarray, scale: str) -> np.ndarray:
    return 100.0 / (1.0 + np.exp(-z)) if scale == "logit" else z


def _design(logs: np.ndarray, pairs) -> np.ndarray:
    """[1, ln(x_a / x_b) for each pair (a, b) of column indices]."""
    return np.column_stack([np.ones(len(logs)), *(logs[:, a] - logs[:, b] for a, b in pairs)])


def _lsq(d: np.ndarray, t: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    sw = np.ones(len(t)) if w is None else np.sqrt(w)
    return np.linalg.lstsq(d * sw[:, None], t * sw, rcond=None)[0]


@register("ratio")
class Ratio(LogRatioBaseline):
    """target = a + b ln(E1/E2) (+ c ln(E3/E4)), pair(s) and scale chosen on the validation rows."""

    config_keys = ("pair", "terms")

    def __init__(self, pair: str, terms: int):
        super().__init__()
        self.pair = parse_pair(pair)
        check_range("baseline.ratio.terms", terms)
        self.terms = int(terms)

    def fit(self, X_train, Y_train, X_val, Y_val, targets, X_unlabelled=None, new_rows=None, settings=None,
            contents=None) -> "Ratio":
        """See LogRatioBaseline (X_unlabelled and settings are not used); `contents` gets the logit scale."""
        Y_train, Y_val = self._start(X_train, Y_train, X_val, Y_val, targets)
        contents = default_contents(self.targets) if contents is None else [str(c) for c in contents]
        for p in self.pair:
            if p not in self.parts:
                why = "has no positive area in the training rows" if p in self.unused else \
                    f"is not a part of the element table (parts: {', '.join(self.parts)})"
                raise UserError(f"baseline.ratio.pair = {'/'.join(self.pair)!r} names {p!r}, which {why}; name two "
                                "parts that are, or leave it empty to try every pair.")
        l_tr, l_va = self._logs(X_train), self._logs(X_val)
        new = np.zeros(len(l_tr), bool) if new_rows is None else np.asarray(new_rows, bool)
        self.models, self.selected = [], {}
        for j, t in enumerate(self.targets):
            tr, va = ~np.isnan(Y_train[:, j]), ~np.isnan(Y_val[:, j])
            self._rows(t, int(tr.sum()), int(va.sum()))
            scales = ("wt%", "logit") if t in contents else ("linear",)
            f, y, f_va, y_va = l_tr[tr], Y_train[tr, j], l_va[va], Y_val[va, j]

            # one candidate per scale (its pairs chosen on the val rows) under the row weights w; choose_share
            # then weighs the new cores' rows (stats.weighting)
            def fit_with(w, f=f, y=y, f_va=f_va, y_va=y_va, scales=scales):
                found = [self._search(f, y, f_va, y_va, s, w) for s in scales]
                return found, np.array([m["val_rmse"] ** 2 for m in found]), \
                    lambda i: [self._without(f, y, m, w, i) for m in found]
            model, share, loo = choose_share(new[tr], y, fit_with)
            self.models.append(model)
            self.selected[t] = self._record(model)
            if share is not None:
                self.selected[t].update(new_core_share=share, new_core_loo_rmse=loo)
        return self

    def _search(self, f, y, f_va, y_va, scale: str, w) -> dict:
        """The pair(s) with the lowest validation RMSE (wt%) on this scale: the first among every pair (or
        baseline.ratio.pair), then the second given the first."""
        t = logit(y) if scale == "logit" else y
        index = {p: k for k, p in enumerate(self.parts)}
        every = list(itertools.combinations(range(len(self.parts)), 2))
        chosen, best = [], None
        for term in range(self.terms):
            offered = [(index[self.pair[0]], index[self.pair[1]])] if term == 0 and self.pair else \
                [p for p in every if p not in chosen and p[::-1] not in chosen]
            found = None
            for pair in offered:
                coef = _lsq(_design(f, chosen + [pair]), t, w)
                score = rmse(y_va, _unscale(_design(f_va, chosen + [pair]) @ coef, scale))
                if found is None or score < found[0]:
                    found = (score, pair, coef)
            if found is None:  # two parts make one pair: a second term has nothing left to take
                break
            best = found
            chosen.append(best[1])
        return {"pairs": [[self.parts[a], self.parts[b]] for a, b in chosen], "scale": scale,
                "coef": [float(c) for c in best[2]], "val_rmse": float(best[0])}

    def _columns(self, model: dict) -> list[tuple[int, int]]:
        index = {p: k for k, p in enumerate(self.parts)}
        return [(index[a], index[b]) for a, b in model["pairs"]]

    def _without(self, f, y, model: dict, w, i: int) -> float:
        """Row i predicted by the same pairs and scale fitted without it (leave-one-out over new rows)."""
        keep = np.arange(len(y)) != i
        t = logit(y) if model["scale"] == "logit" else y
        cols = self._columns(model)
        coef = _lsq(_design(f[keep], cols), t[keep], None if w is None else w[keep])
        return float(_unscale(_design(f[i:i + 1], cols) @ coef, model["scale"])[0])

    def _record(self, model: dict) -> dict:
        names = ["/".join(p) for p in model["pairs"]]
        out = {"pair": names[0], **{f"pair{k + 1}": n for k, n in enumerate(names[1:], 1)},
               "scale": model["scale"], "intercept": model["coef"][0], "slope": model["coef"][1],
               **{f"slope{k + 1}": c for k, c in enumerate(model["coef"][2:], 1)}, "val_rmse": model["val_rmse"]}
        used = list(dict.fromkeys(p for pair in model["pairs"] for p in pair))
        return {k: _plain(v) for k, v in {**out, **self._part_record(used)}.items()}

    def predict(self, X) -> np.ndarray:
        if not self.models:
            raise UserError(f"The {self.method} baseline has not been fitted; run the baseline stage first.")
        logs = self._logs(X)
        return np.column_stack([_unscale(_design(logs, self._columns(m)) @ np.asarray(m["coef"]), m["scale"])
                                for m in self.models]).reshape(len(logs), len(self.models))

    def feature_space(self, X) -> np.ndarray:
        """The log-ratios the targets' lines use (each pair once)."""
        logs = self._logs(X)
        cols = list(dict.fromkeys(c for m in self.models for c in self._columns(m)))
        return np.column_stack([logs[:, a] - logs[:, b] for a, b in cols])
