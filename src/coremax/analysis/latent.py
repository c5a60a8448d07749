"""What the pretrained encoder has learnt: class-token embeddings, their PCA, and ridge linear probes."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
import torch

from coremax.analysis._model import evaluating

from coremax.plotting import new_figure, save
from coremax.errors import UserError
from coremax.eval.metrics import regression_metrics

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))


def embeddings(model_or_encoder, transform, x, batch_size: int = 256) -> np.ndarray:
    """Class-token embeddings (n, D) of raw-count spectra x (n, L): token 0 of `encoder(transform(x))`.
    Takes a VitX encoder or any model with an `.encoder` (MaX, Regressor); runs in eval mode, no gradients."""
    encoder = getattr(model_or_encoder, "encoder", model_or_encoder)
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    out = []
    with evaluating(encoder) as device, torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = transform(torch.tensor(x[start:start + batch_size], device=device))
            out.append(encoder(xb)[:, 0].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim))


def pca(emb: np.ndarray, n_components: int = 2, fit_on: np.ndarray | None = None):
    """Principal component scores (n, k) of `emb` and the explained variance ratio (k,), by SVD of the
    centred `fit_on` rows (default: emb itself)."""
    emb = np.asarray(emb, dtype=np.float64)
    ref = emb if fit_on is None else np.asarray(fit_on, dtype=np.float64)
    mean = ref.mean(axis=0)
    _, s, vt = np.linalg.svd(ref - mean, full_matrices=False)
    k = min(n_components, vt.shape[0])
    var = s ** 2
    ratio = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
    return (emb - mean) @ vt[:k].T, ratio


def _is_categorical(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or values.nunique(dropna=True) <= 6


def plot_embeddings(coords: np.ndarray, frame: pd.DataFrame, columns, path, explained=None, title: str = ""
                    ) -> Path:
    """2-D coordinates (n, 2) as scatter panels, one per column of `frame` (same rows): categories (core,
    scanner) with a legend, numbers (CaCO3, TOC) on a colour scale; rows with no value in grey. Writes a PNG."""
    coords = np.asarray(coords, dtype=np.float64)
    if len(coords) != len(frame):
        raise UserError(f"{len(coords)} embedding rows but {len(frame)} metadata rows; pass the frame the "
                        "spectra came from.")
    columns = [columns] if isinstance(columns, str) else list(columns)
    ncols = min(len(columns), 2)
    nrows = -(-len(columns) // ncols)
    fig, axes = new_figure(nrows, ncols, 5.0, 4.2)
    labels = ("PC 1", "PC 2") if explained is None else tuple(
        f"PC {k + 1} ({100 * r:.0f}%)" for k, r in enumerate(explained[:2]))
    for ax, col in zip(axes.ravel(), columns):
        values = frame[col].reset_index(drop=True)
        missing = values.isna().to_numpy()
        ax.scatter(coords[missing, 0], coords[missing, 1], s=6, color="0.8", label="no value")
        if _is_categorical(values):
            groups = values[~missing].groupby(values[~missing]).groups
            colours = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
            for k, (label, idx) in enumerate(groups.items()):
                short = str(label).split(" | ")[0]  # scanner descriptions: the head is enough
                ax.scatter(coords[idx, 0], coords[idx, 1], s=8, alpha=0.7, color=colours(k % 20), label=short)
            ax.legend(fontsize=6, markerscale=1.5)
        else:
            sc = ax.scatter(coords[~missing, 0], coords[~missing, 1], s=8, c=values[~missing].to_numpy(float),
                            cmap="viridis")
            fig.colorbar(sc, ax=ax, label=col)
        ax.set(xlabel=labels[0], ylabel=labels[1], title=f"{title} {col}".strip())
    for ax in axes.ravel()[len(columns):]:
        ax.set_visible(False)
    return save(fig, path)


def linear_probe(train_emb, y_train, test_emb, y_test, targets=None, alphas=RIDGE_ALPHAS) -> pd.DataFrame:
    """Ridge regression (RidgeCV over `alphas` on standardised features) from embeddings to each target,
    trained on the train rows with a value and scored on the test rows with a value.
    y_*: DataFrames (targets = their columns unless given) or arrays (n,) / (n, T).
    Returns one row per target: target, n_train, n_test, alpha, r2, rmse (NaN when too few rows)."""
    def as_frame(y, names):
        if isinstance(y, pd.DataFrame):
            return y.reset_index(drop=True)
        y = np.asarray(y, dtype=np.float64)
        y = y[:, None] if y.ndim == 1 else y
        return pd.DataFrame(y, columns=names or [f"y{k}" for k in range(y.shape[1])])

    y_tr, y_te = as_frame(y_train, targets), as_frame(y_test, targets)
    targets = list(targets or y_tr.columns)
    x_tr, x_te = np.asarray(train_emb, dtype=np.float64), np.asarray(test_emb, dtype=np.float64)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise UserError("Embeddings and targets differ in length; pass the rows the embeddings came from.")
    rows = []
    for t in targets:
        if t not in y_tr.columns or t not in y_te.columns:
            raise UserError(f"No target column {t!r}; the targets are {list(y_tr.columns)}.")
        tr, te = y_tr[t].notna().to_numpy(), y_te[t].notna().to_numpy()
        row = {"target": t, "n_train": int(tr.sum()), "n_test": int(te.sum()), "alpha": np.nan, "r2": np.nan,
               "rmse": np.nan}
        if tr.sum() >= 5 and te.sum() >= 2:
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.asarray(alphas)))
            model.fit(x_tr[tr], y_tr.loc[tr, t].to_numpy(float))
            pred = model.predict(x_te[te])
            truth = y_te.loc[te, t].to_numpy(float)
            m = regression_metrics(truth, pred)
            row.update(alpha=float(model[-1].alpha_), r2=m["r2"], rmse=m["rmse"])
        rows.append(row)
    return pd.DataFrame(rows)
