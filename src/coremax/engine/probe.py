"""A closed-form head on a frozen encoder: ridge regression of each normalised target on the pooled embedding,
its strength chosen on the validation rows (whole validation cores), as the baselines choose theirs.

`finetune.mode = "ridge"` keeps it as the model (a probe: seconds on a CPU, no gradient step, and the pretrained
features are not distorted by a few labels); `"lp_ft"` starts full fine-tuning from it (linear probe, then
fine-tune: Kumar et al. 2022, who find the head trained first keeps fine-tuning from wrecking the features).

With `finetune.epo` the head may also be blind to the scanner (`stats.epo`); its weights then have no part along the
removed directions, so they read raw embeddings unchanged: nothing about the setting is needed at prediction.
"""

from __future__ import annotations

import numpy as np
import torch

from coremax.data.ratios import ElementRatios
from coremax.engine.data import ArrayData
from coremax.errors import UserError
from coremax.stats.epo import blind, setting_directions, versions
from coremax.stats.weighting import choose_share

# Ridge strengths tried, in units of the mean eigenvalue of the train features' scatter matrix (scale-free).
ALPHAS = np.logspace(-5, 1, 13)
EMBED_BATCH = 256
SIDE_WEIGHTS = (0.0, 1.0, 3.0, 10.0, 30.0)  # finetune.elements: the ratios' scale beside the embedding, chosen on val


def embed(task, model, rows: ArrayData) -> np.ndarray:
    """The pooled embeddings the head reads, (n, D), of clean (unaugmented) inputs."""
    return task.outputs(model, rows, EMBED_BATCH, features=True).double().numpy()


def ridge_path(f: np.ndarray, y: np.ndarray, alphas: np.ndarray, w: np.ndarray | None = None,
               loo: bool = False) -> tuple[np.ndarray, ...]:
    """Ridge weights (len(alphas), D) and intercepts for every strength, from one SVD of the (weighted-)centred
    features; `w` weighs the rows (None = equal). With `loo`, also each row's leave-one-out prediction
    (n, len(alphas)): the fit without that row (the other rows' weights and the penalty kept), in closed form."""
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    mu, ybar = w @ f / w.sum(), w @ y / w.sum()
    root = np.sqrt(w)
    u, s, vt = np.linalg.svd((f - mu) * root[:, None], full_matrices=False)
    scale = (s ** 2).sum() / f.shape[1]
    penalty = np.asarray(alphas, dtype=np.float64)[:, None] * scale  # (alphas, 1)
    z = (y - ybar) * root
    uty = u.T @ z
    weights = np.stack([vt.T @ (s / (s ** 2 + lam) * uty) for lam in penalty])
    if not loo:
        return weights, ybar - weights @ mu
    # e_i / (1 - h_ii), h_ii = w_i / sum(w) + sum_k u_ik^2 s_k^2 / (s_k^2 + penalty), over the directions the
    # centred features span (centring leaves a null one when rows <= features); both written as sums of
    # non-negative parts, so they stay accurate when the fit nearly interpolates.
    span = s > s.max(initial=0) * len(s) * np.finfo(float).eps
    u, s, uty = u[:, span], s[span], uty[span]
    shrink = penalty / (s ** 2 + penalty)  # (alphas, rank): 1 - filter factor
    outside = np.clip(1 - w / w.sum() - (u ** 2).sum(1), 0, None)  # the row's part beyond the span
    resid = (z - u @ uty)[:, None] + (u * uty) @ shrink.T  # weighted residuals (n, alphas)
    one_minus_h = outside[:, None] + (u ** 2) @ shrink.T
    return weights, ybar - weights @ mu, y[:, None] - resid / root[:, None] / one_minus_h


def fit_ridge(f: np.ndarray, y: np.ndarray, f_va: np.ndarray, y_va: np.ndarray,
              new: np.ndarray, directions: np.ndarray | None = None) -> tuple[np.ndarray, float, dict]:
    """Ridge weights and intercept for one target, the strength chosen on the validation rows and, with new
    cores' samples among the rows (`new`), with their weight share by `stats.weighting`'s rule; with `directions`
    (`stats.epo.setting_directions`), the features without them are candidates too; and what was chosen."""
    offered = versions(directions)

    def fit_with(w):
        results, val_mse, loo = [], [], []
        for d in offered:
            ws, bs, left_out = ridge_path(blind(f, d), y, ALPHAS, w, loo=True)
            ws = blind(ws, d)  # exactly outside the directions: the raw features give the same predictions
            mse = (((f_va @ ws.T + bs) - y_va[:, None]) ** 2).mean(0)
            results += [(k, d is not None, ws[k], float(bs[k]), float(np.sqrt(mse[k]))) for k in range(len(ALPHAS))]
            val_mse.append(mse)
            loo.append(left_out)
        loo = np.concatenate(loo, axis=1)
        return results, np.concatenate(val_mse), lambda i: loo[i]
    (k, epo, weight, bias, err), share, loo_rmse = choose_share(new, y, fit_with)
    chosen = {"alpha": float(ALPHAS[k]), "val_nrmse": err, **({"epo": epo} if len(offered) > 1 else {})}
    return weight, bias, chosen if share is None else {**chosen, "new_core_share": share, "new_core_loo_nrmse": loo_rmse}


def fit_ridge_head(task, model, spectra: ArrayData | None = None, elements: bool = False) -> tuple[dict, dict | None]:
    """Set `model.head` to the ridge solution per target (`fit_ridge`), blind to the scanner settings of
    `spectra` as a candidate when given (finetune.epo: `engine.data.setting_spectra`); returns what was chosen
    per target (normalised units) and, with `elements` (finetune.elements), the element head beside it.

    The element head: the rows' element log-ratios (coremax.data.ratios.ElementRatios, standardised) join the
    embedding in one ridge solve, scaled by each weight of SIDE_WEIGHTS times the embedding's typical feature sd
    (0: the plain probe), the weight chosen per target on the validation rows; its part of the solution is kept
    as `weight` (targets, parts), which prediction adds to the network's normalised output."""
    data = task.data
    f_tr, f_va = embed(task, model, data.train), embed(task, model, data.val)
    directions = None if spectra is None else \
        setting_directions(embed(task, model, spectra), spectra.frame["scanner"].to_numpy(str))
    y_tr, y_va = data.train.y.cpu().double().numpy(), data.val.y.cpu().double().numpy()
    new = data.new_core_rows()
    ratios = ElementRatios.fit(data.train.frame, "finetune.elements") if elements else None
    sides, typical = [(0.0, None, None)], float(np.sqrt(f_tr.var(axis=0).mean()))
    if ratios is not None:
        z_tr, z_va = typical * ratios(data.train.frame), typical * ratios(data.val.frame)  # each computed once
        sides = [(c, c * z_tr, c * z_va) for c in SIDE_WEIGHTS]
    dim = f_tr.shape[1]
    weight, bias, chosen = np.zeros((len(data.targets), dim)), np.zeros(len(data.targets)), {}
    side_weight = np.zeros((len(data.targets), len(ratios.parts) if ratios else 0))
    for j, t in enumerate(data.targets):
        tr, va = ~np.isnan(y_tr[:, j]), ~np.isnan(y_va[:, j])
        if tr.sum() < 2 or va.sum() < 1:
            raise UserError(f"finetune.mode = \"ridge\" needs at least 2 labelled train rows and 1 labelled validation "
                            f"row of {t!r}; it has {int(tr.sum())} and {int(va.sum())}: add labels or use mode full.")
        best = None
        for c, s_tr, s_va in sides:
            both_tr = f_tr if s_tr is None else np.hstack([f_tr, s_tr])
            both_va = f_va if s_va is None else np.hstack([f_va, s_va])
            d = directions if directions is None or s_tr is None else \
                np.vstack([directions, np.zeros((s_tr.shape[1], directions.shape[1]))])  # ratios are not blinded
            w, b, info = fit_ridge(both_tr[tr], y_tr[tr, j], both_va[va], y_va[va, j], new[tr], d)
            if best is None or info["val_nrmse"] < best[2]["val_nrmse"]:
                best = (w, b, {**info, **({"element_weight": c} if ratios else {})}, c)
        w, bias[j], chosen[t], c = best
        weight[j] = w[:dim]
        if ratios is not None:  # the same scaling as in the solve, folded into the weights
            side_weight[j] = w[dim:] * c * typical if c else 0.0
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    head = None if ratios is None else {**ratios.state(), "weight": side_weight.tolist()}
    return chosen, head


def element_head(state: dict | None):
    """rows -> the element head's addition to the network's normalised output (n, targets), or None."""
    if not state:
        return None
    ratios = ElementRatios(state["parts"], state["floor"], state["mean"], state["std"])
    weight = np.asarray(state["weight"], dtype=np.float64)
    return lambda rows: ratios(rows, "this model (its head reads element log-ratios)") @ weight.T
