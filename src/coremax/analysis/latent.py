"""What the pretrained encoder has learnt: class-token or mean-token embeddings, their PCA, ridge linear probes,
and the spike-and-slab code of a model pretrained with model.latent = "vsc": which dimensions are active and
which channels (emission lines) each one follows."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
import torch

from coremax import config as configlib
from coremax.data.dataset import load_split, spectra_array
from coremax.engine.data import prepare_data
from coremax.engine.inference import run_batches
from coremax.engine.runtime import setup
from coremax.engine.tasks import PretrainTask
from coremax.eval.predictor import load_network
from coremax.experiment import Experiment

from coremax.analysis.spectra import emission_lines, label_lines
from coremax.plotting import new_figure, save
from coremax.errors import UserError
from coremax.stats.metrics import regression_metrics

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))


def _batched(module, transform, x, fn, batch_size: int) -> list[tuple[np.ndarray, ...]]:
    """fn(transform(batch)) over batches of raw-count spectra x (n, L), `module` in eval mode, no gradients:
    per batch, the tensor or tuple of tensors fn returns, as float64 arrays."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return [tuple(r.astype(np.float64) for r in part) for part in run_batches(module, x, fn, transform, batch_size)]


def embeddings(model_or_encoder, transform, x, batch_size: int = 256, pool: str = "cls") -> np.ndarray:
    """Embeddings (n, D) of raw-count spectra x (n, L) by `encoder(transform(x))`: its class token (pool="cls")
    or the mean of its patch tokens (pool="mean", what the fine-tuning head and the sparse code read).
    Takes a VitX encoder or any model with an `.encoder` (MaX, Regressor); runs in eval mode, no gradients."""
    if pool not in ("cls", "mean"):
        raise UserError(f"pool = {pool!r} is not known; use \"cls\" or \"mean\".")
    encoder = getattr(model_or_encoder, "encoder", model_or_encoder)

    def pooled(xb):
        tokens = encoder(xb)
        return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(dim=1)

    parts = _batched(encoder, transform, x, pooled, batch_size)
    return np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, encoder.embed_dim))


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


# -- the sparse code of a VSC pretraining -----------------------------------------------------------------------------
def sparse_codes(model, transform, x, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(gamma, mu), each (n, J): the spike probability and slab mean of each code dimension for raw-count spectra
    x (n, L), nothing masked (`MaX.sparse_code`); gamma * mu is the posterior mean of the code."""
    if not hasattr(model, "sparse_code"):
        raise UserError(f"A {type(model).__name__} has no sparse code; load the checkpoint of a pretrain experiment "
                        "with model.latent = \"vsc\".")
    parts = _batched(model, transform, x, model.sparse_code, batch_size)
    if not parts:
        return np.zeros((0, model.code.dim)), np.zeros((0, model.code.dim))
    mu, _, gamma = (np.concatenate(a) for a in zip(*parts))
    return gamma, mu


def active_fraction(gamma, threshold: float = 0.5) -> np.ndarray:
    """Per spectrum, the fraction (n,) of code dimensions whose spike probability exceeds `threshold`."""
    return (np.atleast_2d(np.asarray(gamma)) > threshold).mean(axis=1)


def code_channel_correlation(code, transform, x) -> np.ndarray:
    """Pearson correlation (J, W) over spectra between each code dimension (code: (n, J), e.g. gamma * mu) and each
    channel of the model's input transform(x) (n, W); 0 where either never varies (a dimension always off)."""
    code = np.asarray(code, dtype=np.float64)
    inputs = transform(torch.tensor(np.atleast_2d(np.asarray(x, dtype=np.float32)))).double().cpu().numpy()
    if len(code) != len(inputs) or len(code) < 2:
        raise UserError(f"{len(code)} codes for {len(inputs)} spectra; pass at least two spectra and their codes.")

    def standardised(a):
        sd = a.std(axis=0)
        return np.divide(a - a.mean(axis=0), sd, out=np.zeros_like(a), where=sd > 0)

    return standardised(code).T @ standardised(inputs) / len(code)


def _lines(kv: float, energy: np.ndarray) -> pd.DataFrame:
    """K-alpha and L-alpha lines on the energy axis (K-beta lines would crowd the labels)."""
    lines = emission_lines(kv=kv)
    shown = (lines["line"] != "Kb") & lines["energy_kev"].between(energy[0], energy[-1])
    return lines[shown].reset_index(drop=True)


def dimension_elements(corr, energy, dims, kv: float = 10.0, top: int = 3) -> pd.DataFrame:
    """Which elements' channels each code dimension follows: for every dimension of `dims`, the `top` emission
    lines at whose channel |r| (of `code_channel_correlation`) is largest, as 'Ca Ka +0.83'."""
    corr, energy = np.asarray(corr), np.asarray(energy, dtype=np.float64)
    lines = _lines(kv, energy)
    at = np.abs(energy[None, :] - lines["energy_kev"].to_numpy()[:, None]).argmin(axis=1)
    rows = []
    for j in dims:
        r = corr[j, at]
        order = np.argsort(-np.abs(r))[:top]
        rows.append({"dim": int(j), **{f"line {k + 1}": f"{lines.element[i]} {lines.line[i]} {r[i]:+.2f}"
                                       for k, i in enumerate(order)}})
    return pd.DataFrame(rows)


def plot_code_activity(gamma, path, threshold: float = 0.5, title: str = "") -> Path:
    """Two panels: a histogram of the number of active dimensions (gamma > threshold) per spectrum, and each
    dimension's mean gamma and fraction of spectra where it is active. Writes a PNG."""
    gamma = np.atleast_2d(np.asarray(gamma, dtype=np.float64))
    fig, axes = new_figure(1, 2, 5.0, 3.6)
    active = (gamma > threshold).sum(axis=1)
    axes[0, 0].hist(active, bins=np.arange(gamma.shape[1] + 2) - 0.5, color="C0")
    axes[0, 0].set(xlabel=f"active dimensions per spectrum (gamma > {threshold})", ylabel="spectra",
                   title=f"{title} mean {active.mean():.1f} of {gamma.shape[1]}".strip())
    dims = np.arange(gamma.shape[1])
    axes[0, 1].bar(dims, gamma.mean(axis=0), color="C0", label="mean gamma")
    axes[0, 1].plot(dims, (gamma > threshold).mean(axis=0), "o", ms=3, color="C3", label="fraction active")
    axes[0, 1].set(xlabel="code dimension", ylabel="activity", ylim=(0, 1.05))
    axes[0, 1].legend(fontsize=7)
    return save(fig, path)


def plot_code_channels(corr, energy, dims, path, kv: float = 10.0, title: str = "") -> Path:
    """The correlation of each dimension of `dims` with every input channel (rows) against energy, emission lines
    labelled: which part of the spectrum each active dimension follows. Writes a PNG."""
    corr, energy, dims = np.asarray(corr), np.asarray(energy, dtype=np.float64), list(dims)
    if corr.shape[1] != len(energy):
        raise UserError(f"The correlations have {corr.shape[1]} channels but the energy axis has {len(energy)}; "
                        "cut the axis to the model's data.channels window.")
    fig, axes = new_figure(1, 1, 10.0, 1.2 + 0.28 * max(len(dims), 1))
    ax = axes[0, 0]
    step = (energy[-1] - energy[0]) / max(len(energy) - 1, 1)
    image = ax.imshow(corr[dims] if dims else np.zeros((1, len(energy))), aspect="auto", cmap="RdBu_r", vmin=-1,
                      vmax=1, interpolation="nearest",
                      extent=(energy[0] - step / 2, energy[-1] + step / 2, max(len(dims), 1) - 0.5, -0.5))
    ax.set_yticks(range(len(dims)), [f"z{j}" for j in dims], fontsize=7)
    ax.set(xlabel="energy (keV)", xlim=(max(float(energy[0]), 0.5), min(float(energy[-1]), kv + 0.5)),
           title=title or "correlation of each active code dimension with the input channels")
    if not dims:  # a collapsed code: every spike off
        ax.text(0.5, 0.5, "no active dimension", transform=ax.transAxes, ha="center", va="center")
    label_lines(ax, _lines(kv, energy))
    fig.colorbar(image, ax=ax, label="r", fraction=0.03)
    return save(fig, path)


# -- plain against VSC, measured the same way -------------------------------------------------------------------------
class _Term(torch.nn.Module):
    """A MaX with one of its loss terms as the loss, so the trainer's validation measures that term alone."""

    def __init__(self, model, term: str):
        super().__init__()
        self.model, self.term = model, term

    def forward(self, x, aux_target=None):
        out = self.model.terms(x, aux_target=aux_target)
        return out[self.term], out["pred"], out["mask"]


def pretraining_scores(data_root, name: str, batch_size: int = 64) -> dict:
    """What a pretraining's latent gives, the same for plain and VSC: the reconstruction error (masked-patch MSE)
    and the KL on its validation rows with the trainer's fixed masks, the ridge probe R^2 (labelled train rows ->
    validation and test cores) of the mean patch token and, for VSC, of the code gamma * mu, and the fraction of
    active code dimensions (gamma > 0.5) per validation spectrum."""
    exp = Experiment.open(data_root, name)
    cfg = configlib.resolve(exp.config_file, [], frozen=True).to_dict()
    data = prepare_data(data_root, "pretrain", cfg["experiment"]["seed"], **cfg["data"])
    task = PretrainTask(data, setup(**{**cfg["runtime"], "device": "cpu"}))
    model, transform, _ = load_network(exp)
    vsc = getattr(model, "code", None) is not None
    row = {"experiment": name, "latent": "vsc" if vsc else "plain"}
    for term in ("recon", "kl"):
        row[f"val_{term}"] = task.validate(_Term(model, term).eval(), data.val, batch_size)["val_loss"]
    targets = cfg["data"]["targets"]
    split = {s: load_split(data_root, cfg["data"]["dataset"], s) for s in ("train", "val", "test")}
    x = {s: spectra_array(df) for s, df in split.items()}
    features = {"mean token": {s: embeddings(model, transform, x[s], pool="mean") for s in x}}
    if vsc:
        features["code"] = {}
        for s in x:
            gamma, mu = sparse_codes(model, transform, x[s])
            features["code"][s] = gamma * mu  # the posterior mean of the code
        gamma, _ = sparse_codes(model, task.transform, data.val.get(torch.arange(len(data.val))), batch_size)
        frac = active_fraction(gamma)
        row.update(active_mean=frac.mean(), active_sd=frac.std(), dims_ever_active=int((gamma > 0.5).any(0).sum()))
    for feature, f in features.items():
        for to in ("val", "test"):
            probe = linear_probe(f["train"], split["train"][targets], f[to], split[to][targets]).set_index("target")
            row.update({f"{to}_r2_{feature}_{t}": probe.loc[t, "r2"] for t in targets})
    return row

