"""The search behind issue 39's mlc targets, on the cores that are not test cores: how mlc's TOC coordinate scores
on the validation cores over its grid, how every linear log-ratio model of TOC scores on each non-test core held
out in turn, what the field's own selection (cross-validation across cores, as MLC software does) would give, and
how mlc fares on gross window counts (the crude probe's input) instead of the element table's fitted areas.

    python docs/mlc_search.py --data-root data --dataset synthetic     # prints the Markdown tables (seconds)

Test RMSE appears only in the last two tables, after each rule or input made its choices without it.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from coremax.baselines.logratio import closed
from coremax.baselines.mlc import Mlc
from coremax.data.dataset import load_split, spectra_array
from coremax.data.elements import peak_groups
from coremax.data.ratios import REPLACE
from coremax.stats.metrics import rmse

TARGETS = ["CaCO3", "TOC"]
GRID = [{"model": "ridge", "alpha": a} for a in (1.0, 10.0, 100.0, 300.0, 1000.0)] + \
    [{"model": "pls", "n_components": k} for k in (1, 2, 4, 8)]
HELD_OUT_ALPHAS = (0.1, 1.0, 10.0, 100.0)
# The crude probe's windows (issue 39): +-0.09 keV around these lines (keV), and the scatter window 8-9.5 keV
WINDOW_LINES = {"Al": 1.487, "Si": 1.740, "S": 2.308, "Cl": 2.622, "Rh L": 2.697, "K": 3.314, "Ca": 3.692,
                "Ti": 4.511, "Mn": 5.899, "Fe": 6.404}


def labelled(data_root, dataset: str) -> dict[str, pd.DataFrame]:
    """The labelled rows of each split, in the split's order (the order data.max_labels draws from)."""
    out = {}
    for split in ("train", "val", "test"):
        frame = load_split(data_root, dataset, split)
        out[split] = frame[frame[TARGETS].notna().any(axis=1)].reset_index(drop=True)
    return out


def _y(frame) -> np.ndarray:
    return frame[TARGETS].to_numpy(np.float64)


def grid_on_validation(lab) -> list[tuple[str, float]]:
    """mlc's TOC coordinate at each grid point (all labels): validation RMSE in wt%."""
    mlc = Mlc(cv_folds=5).fit(lab["train"], _y(lab["train"]), lab["val"], _y(lab["val"]), TARGETS)
    z, f, f_va, y_va = mlc._coordinates(_y(lab["train"])), mlc.feature_space(lab["train"]), \
        mlc.feature_space(lab["val"]), _y(lab["val"])
    tr, va = ~np.isnan(z[:, 1]), ~np.isnan(y_va[:, 1])
    def score(p):
        z_va = np.ravel(mlc._fit_one(f[tr], z[tr, 1], p).predict(f_va[va]))
        return rmse(y_va[va, 1], mlc.content_closed_as_measured(z_va, y_va[va], 1))
    return [(_name(p), score(p)) for p in GRID]


def every_fitted_line() -> dict[str, float]:
    """The strongest line (keV) of every part the element fit reports at 10 kV (coh: the tube's Rh L lines)."""
    peaks = peak_groups(10.0)
    return {name: max(group, key=lambda line: line[1])[0] for name, group in zip(peaks.names, peaks.lines)}


def window_clr(frame, lines: dict | None = None) -> np.ndarray:
    """The centred log-ratios of gross window counts (+-0.09 keV around `lines`, default the crude probe's, and
    the scatter window), each row on its own energy calibration."""
    counts = spectra_array(frame)
    energy = frame["offset_kev"].to_numpy()[:, None] + frame["gain_kev"].to_numpy()[:, None] * np.arange(counts.shape[1])
    windows = [np.abs(energy - e) <= 0.09 for e in (lines or WINDOW_LINES).values()] + \
        [(energy >= 8.0) & (energy <= 9.5)]
    logs = np.log(np.maximum(np.column_stack([np.where(w, counts, 0).sum(axis=1) for w in windows]), 1.0))
    return logs - logs.mean(axis=1, keepdims=True)


def held_out_cores(lab) -> list[tuple[str, float, float]]:
    """TOC of each non-test core predicted by models fitted on the other non-test cores: (model, pooled RMSE,
    mean of the per-core RMSEs). The lab's mlc (closed alr coordinates) beside a ridge on TOC itself, on the element
    table's parts and on the crude probe's window counts."""
    rows = pd.concat([lab["train"], lab["val"]], ignore_index=True)
    y, cores = _y(rows), rows["core"].to_numpy()
    mlc = Mlc(cv_folds=5).fit(lab["train"], _y(lab["train"]), lab["val"], _y(lab["val"]), TARGETS)
    f, windows = mlc.feature_space(rows), window_clr(rows)

    def direct(a):
        return lambda ftr, ytr, fte: Ridge(alpha=a).fit(ftr[~np.isnan(ytr[:, 1])], ytr[~np.isnan(ytr[:, 1]), 1]) \
            .predict(fte)

    def closed_alr(a):
        def fit_predict(ftr, ytr, fte):
            full = np.where(np.isnan(ytr), np.nanmedian(ytr, axis=0), ytr)
            rest = np.maximum(100.0 - full.sum(axis=1), REPLACE * mlc.rest_limit)
            zs = [Ridge(alpha=b).fit(ftr[ok], np.log(np.maximum(full[ok, j], 0.01) / rest[ok])).predict(fte)
                  for j, b in ((0, 10.0), (1, a)) for ok in [~np.isnan(ytr[:, j])]]
            return closed(np.column_stack(zs))[0][:, 1]
        return fit_predict
    out = []
    for label, fit_predict, x in [*((f"crude probe (window counts), alpha {a:g}", direct(a), windows)
                                    for a in HELD_OUT_ALPHAS),
                                  *((f"ridge on TOC, alpha {a:g}", direct(a), f) for a in HELD_OUT_ALPHAS),
                                  *((f"mlc (closed alr), TOC alpha {a:g}", closed_alr(a), f) for a in HELD_OUT_ALPHAS)]:
        pred = np.full(len(rows), np.nan)
        for core in np.unique(cores):
            pred[cores == core] = fit_predict(x[cores != core], y[cores != core], x[cores == core])
        ok = ~np.isnan(y[:, 1])
        per_core = [rmse(y[ok & (cores == c), 1], pred[ok & (cores == c)]) for c in np.unique(cores[ok])]
        out.append((label, rmse(y[ok, 1], pred[ok]), float(np.mean(per_core))))
    return out


def selection_rules(lab, budgets=(10, 50, 100, 0), seeds=(0, 1, 2)) -> list[tuple]:
    """mlc with each coordinate's grid point chosen on the validation cores (as shipped) or on every non-test core
    (each train core held out in turn, plus the validation cores): per budget, the test RMSE of each rule, mean
    over seeds. Labels drawn as data.max_labels draws them."""
    out = []
    for k in budgets:
        scores = {"validation cores": [], "every non-test core": []}
        for seed in seeds if k else seeds[:1]:
            for rule, score in _both_rules(drawn(lab["train"], k, seed), lab).items():
                scores[rule].append(score)
        out.append((k or len(lab["train"]), *(np.mean(scores[r], axis=0) for r in scores)))
    return out


def drawn(train, k: int, seed: int):
    """The training rows a budget of `k` labels keeps (0: all), drawn as data.max_labels draws them."""
    if k and k < len(train):
        train = train.iloc[np.sort(np.random.default_rng(seed).choice(len(train), size=k, replace=False))]
    return train.reset_index(drop=True)


def _both_rules(train, lab) -> dict[str, np.ndarray]:
    y_tr, y_va = _y(train), _y(lab["val"])
    mlc = Mlc(cv_folds=5).fit(train, y_tr, lab["val"], y_va, TARGETS)
    f, f_va, f_te = (mlc.feature_space(x) for x in (train, lab["val"], lab["test"]))
    z, cores = mlc._coordinates(y_tr), train["core"].to_numpy()
    chosen = {"validation cores": [], "every non-test core": []}
    for j in range(len(TARGETS)):
        tr, va = ~np.isnan(z[:, j]), ~np.isnan(y_va[:, j])
        grid, val_sq, all_sq = mlc._grid(int(tr.sum()), f.shape[1]), [], []
        for p in grid:
            z_va = np.ravel(mlc._fit_one(f[tr], z[tr, j], p).predict(f_va[va]))
            val = (y_va[va, j] - mlc.content_closed_as_measured(z_va, y_va[va], j)) ** 2
            held = [val]
            for core in np.unique(cores[tr]):
                keep, out = tr & (cores != core), tr & (cores == core)
                if keep.sum() >= 3 and p.get("n_components", 0) < keep.sum() - 1:
                    z_out = np.ravel(mlc._fit_one(f[keep], z[keep, j], p).predict(f[out]))
                    held.append((y_tr[out, j] - mlc.content_closed_as_measured(z_out, y_tr[out], j)) ** 2)
            val_sq.append(val.mean())
            all_sq.append(np.concatenate(held).mean())
        chosen["validation cores"].append(grid[int(np.argmin(val_sq))])
        chosen["every non-test core"].append(grid[int(np.argmin(all_sq))])
    out = {}
    for rule, params in chosen.items():
        zs = [np.ravel(mlc._fit_one(f[~np.isnan(z[:, j])], z[~np.isnan(z[:, j]), j], p).predict(f_te))
              for j, p in enumerate(params)]
        pred = closed(np.column_stack(zs))[0]
        out[rule] = np.array(_rmse_each(lab["test"], pred))
    return out


def window_inputs(lab, budgets=(10, 50, 100, 0), seeds=(0, 1, 2)) -> list[tuple]:
    """mlc as shipped (every coordinate chosen on the validation cores) on three inputs: the element table's
    fitted areas, the gross counts of the crude probe's windows, and a window at every fitted line. Per budget
    and input: (labels, input, validation RMSE CaCO3, TOC, test RMSE CaCO3, TOC), means over the study's draws."""
    inputs = {"fitted areas": None, "crude probe's windows": WINDOW_LINES, "a window at every fitted line":
              every_fitted_line()}
    out = []
    for k in budgets:
        for label, lines in inputs.items():
            scores = []
            for seed in seeds if k else seeds[:1]:
                train = drawn(lab["train"], k, seed)
                mlc = Mlc(cv_folds=5) if lines is None else _on_windows(lines)
                mlc.fit(train, _y(train), lab["val"], _y(lab["val"]), TARGETS)
                scores.append([_rmse_each(lab[s], mlc.predict(lab[s])) for s in ("val", "test")])
            out.append((k or len(lab["train"]), label, *np.mean(scores, axis=0).ravel()))
    return out


def _on_windows(lines: dict) -> Mlc:
    """An mlc whose intensity parts are gross window counts instead of the element table's areas."""
    mlc = Mlc(cv_folds=5)
    mlc.feature_space = lambda frame: window_clr(frame, lines)
    return mlc


def _rmse_each(frame, pred) -> list[float]:
    """Per target, the RMSE on the rows of `frame` where it was measured."""
    y = _y(frame)
    return [rmse(y[~np.isnan(y[:, j]), j], pred[~np.isnan(y[:, j]), j]) for j in range(len(TARGETS))]


def _name(p: dict) -> str:
    return f"ridge, alpha {p['alpha']:g}" if p["model"] == "ridge" else f"PLS, {p['n_components']} components"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--dataset", default="synthetic")
    args = parser.parse_args(argv)
    lab = labelled(args.data_root, args.dataset)
    print("| mlc TOC coordinate | validation RMSE |\n|---|---|")
    print("\n".join(f"| {n} | {s:.3f} |" for n, s in grid_on_validation(lab)))
    print("\n| model of TOC | pooled RMSE, each non-test core held out | mean per core |\n|---|---|---|")
    print("\n".join(f"| {n} | {a:.3f} | {b:.3f} |" for n, a, b in held_out_cores(lab)))
    print("\n| labels | test RMSE CaCO3, TOC: chosen on validation cores | chosen on every non-test core |\n|---|---|---|")
    print("\n".join(f"| {k} | {a[0]:.2f}, {a[1]:.3f} | {b[0]:.2f}, {b[1]:.3f} |" for k, a, b in selection_rules(lab)))
    print("\n| labels | mlc's intensities | validation RMSE CaCO3, TOC | test RMSE CaCO3, TOC |\n|---|---|---|---|")
    print("\n".join(f"| {k} | {n} | {a:.2f}, {b:.3f} | {c:.2f}, {d:.3f} |" for k, n, a, b, c, d in window_inputs(lab)))


if __name__ == "__main__":
    main()
