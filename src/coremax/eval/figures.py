"""Evaluation figures as PNG files (style and atomic saving in coremax.plotting); each returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from coremax.plotting import new_figure, save

def _metric_row(metrics, target: str) -> dict:
    """The metrics of one target from a metrics_table-like DataFrame (scope "all") or a {target: dict}."""
    if isinstance(metrics, pd.DataFrame):
        rows = metrics[metrics["target"] == target]
        if "scope" in rows.columns:
            rows = rows[rows["scope"] == "all"]
        return rows.iloc[0].to_dict() if len(rows) else {}
    return dict((metrics or {}).get(target, {}))


def plot_pred_vs_measured(df: pd.DataFrame, targets, metrics, path) -> Path:
    """Predicted against measured wt%, one panel per target, with the 1:1 line and R^2/RMSE/MAE."""
    fig, axes = new_figure(1, len(targets), 4.0, 4.0)
    for ax, t in zip(axes[0], targets):
        keep = df[t].notna()
        y, p = df.loc[keep, t].to_numpy(float), df.loc[keep, f"{t}_pred"].to_numpy(float)
        ax.scatter(y, p, s=10, alpha=0.6, edgecolors="none")
        both = np.concatenate([y, p])
        lo, hi = (both.min(), both.max()) if both.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=1, ls="--", label="1:1")
        ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), aspect="equal",
               xlabel=f"measured {t} (wt%)", ylabel=f"predicted {t} (wt%)", title=t)
        m = _metric_row(metrics, t)
        text = "\n".join(f"{label} = {m[key]:.3g}" for key, label in
                         [("r2", "$R^2$"), ("rmse", "RMSE"), ("mae", "MAE")] if key in m)
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", ha="left", fontsize=9,
                bbox=dict(boxstyle="round", facecolor="white", alpha=0.8))
    return save(fig, path)


def plot_profiles(pred_df: pd.DataFrame, meas_df: pd.DataFrame, targets, path, core,
                  depth: str = "depth_mm") -> Path:
    """Down-core profile of one core: predictions along every spectrum (with interval band) and measurements."""
    fig, axes = new_figure(1, len(targets), 3.0, 7.0)
    pred_df = pred_df.sort_values(depth)
    for ax, t in zip(axes[0], targets):
        d = pred_df[depth].to_numpy(float)
        if f"{t}_lo" in pred_df.columns and f"{t}_hi" in pred_df.columns:
            ax.fill_betweenx(d, pred_df[f"{t}_lo"].to_numpy(float), pred_df[f"{t}_hi"].to_numpy(float),
                             alpha=0.25, linewidth=0, label="interval")
        ax.plot(pred_df[f"{t}_pred"].to_numpy(float), d, lw=1, label="predicted")
        if t in meas_df.columns:
            m = meas_df[meas_df[t].notna()]
            ax.scatter(m[t].to_numpy(float), m[depth].to_numpy(float), s=18, color="k", zorder=3,
                       label="measured")
        ax.set(xlabel=f"{t} (wt%)", title=t)
        ax.yaxis.set_inverted(True)  # depth grows downwards
    axes[0][0].legend(fontsize=8, loc="best")
    axes[0][0].set_ylabel("depth (mm)")
    fig.suptitle(f"core {core}")
    return save(fig, path)


def plot_reconstructions(x, recon, mask, patch_size: int, path, energy_kev=None, max_spectra: int = 4) -> Path:
    """A few spectra with their reconstruction drawn over them; masked patches are shaded.

    `mask` is per patch (n, L / patch_size) or per channel (n, L); truthy = masked. Tensors work too.
    """
    x = np.asarray(x, dtype=float).reshape(len(x), -1)[:max_spectra]
    recon = np.asarray(recon, dtype=float).reshape(len(recon), -1)[:max_spectra]
    mask = np.asarray(mask).astype(bool).reshape(len(mask), -1)[:max_spectra]
    length = x.shape[1]
    if mask.shape[1] != length:
        mask = np.repeat(mask, patch_size, axis=1)[:, :length]
    xs = np.arange(length, dtype=float) if energy_kev is None else np.asarray(energy_kev, dtype=float)
    edges = np.append(xs, 2 * xs[-1] - xs[-2])  # channel i spans [edges[i], edges[i + 1])
    fig, axes = new_figure(len(x), 1, 9.0, 2.2)
    for i, ax in enumerate(axes[:, 0]):
        runs = np.flatnonzero(np.diff(np.r_[0, mask[i].astype(int), 0])).reshape(-1, 2)  # [start, stop) pairs
        for k, (start, stop) in enumerate(runs):
            ax.axvspan(edges[start], edges[stop], color="0.6", alpha=0.3, linewidth=0,
                       label="masked" if k == 0 else None)
        ax.plot(xs, x[i], lw=0.8, color="k", label="input")
        ax.plot(xs, recon[i], lw=0.8, color="tab:red", label="reconstruction")
        ax.set_xlim(xs[0], xs[-1])
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("channel" if energy_kev is None else "energy (keV)")
    return save(fig, path)


def plot_label_budget(summary_df: pd.DataFrame, path, x: str = "n_labels") -> Path:
    """Test R^2 and RMSE against the number of labels (column `x`: training labels, or labels per test core),
    per target and method; mean over seeds, min-max bars."""
    df = summary_df[summary_df[x] > 0]  # a log axis has no place for zero
    targets = list(dict.fromkeys(df["target"]))
    fig, axes = new_figure(2, max(len(targets), 1), 4.5, 3.2)
    stats = df.groupby(["target", "method", x])[["r2", "rmse"]].agg(["mean", "min", "max"])
    for col, t in enumerate(targets):
        axes[0, col].set_title(t)
        for row, metric in enumerate(["r2", "rmse"]):
            ax = axes[row, col]
            for method, s in stats.loc[t].groupby(level="method"):
                s = s.droplevel("method")
                mean = s[(metric, "mean")].to_numpy(float)
                # clipped: the mean of equal values can exceed their max by a rounding error
                err = np.clip(np.vstack([mean - s[(metric, "min")].to_numpy(float),
                                         s[(metric, "max")].to_numpy(float) - mean]), 0, None)
                ax.errorbar(s.index.to_numpy(float), mean, yerr=err, marker="o", ms=4, capsize=3, label=method)
            ax.set_xscale("log")
            ax.set(xlabel="labelled spectra" if x == "n_labels" else "labels per test core",
                   ylabel="test $R^2$" if metric == "r2" else "test RMSE (wt%)")
            ax.grid(True, which="both", alpha=0.3)
    if targets:
        axes[0, 0].legend(fontsize=8)
    return save(fig, path)


def plot_sweep(summary: pd.DataFrame, metrics, path) -> Path:
    """Each sweep point's mean validation metric with its sd over seeds, one panel per metric."""
    metrics = [m for m in metrics if m in summary.columns]
    fig, axes = new_figure(1, max(len(metrics), 1), 4.5, 3.2)
    for col, m in enumerate(metrics):
        ax = axes[0, col]
        ax.errorbar(summary["point"], summary[m], yerr=summary[f"{m}_sd"].fillna(0), marker="o", ls="", capsize=3)
        ax.set(xlabel="sweep point", ylabel=m, title=m)
        ax.grid(True, alpha=0.3)
    return save(fig, path)


def plot_suggestions(profile: pd.DataFrame, chosen: pd.DataFrame, targets, path, core,
                     sampled: pd.DataFrame | None = None) -> Path:
    """Down-core profile of one core (`<t>_pred`, with `<t>_lo`/`<t>_hi` as a band where there are intervals)
    with the suggested depths marked by their rank, and depths already sampled dashed."""
    fig, axes = new_figure(1, len(targets), 3.0, 7.0)
    profile = profile.sort_values("depth_mm")
    d = profile["depth_mm"].to_numpy(float)
    for ax, t in zip(axes[0], targets):
        if f"{t}_lo" in profile.columns:
            ax.fill_betweenx(d, profile[f"{t}_lo"].to_numpy(float), profile[f"{t}_hi"].to_numpy(float),
                             alpha=0.25, linewidth=0, label="interval")
        ax.plot(profile[f"{t}_pred"].to_numpy(float), d, lw=1, label="predicted" if f"{t}_lo" in profile else t)
        for depth in ([] if sampled is None else sampled["depth_mm"]):
            ax.axhline(depth, color="0.5", lw=0.8, ls="--")
        for depth, rank in zip(chosen["depth_mm"], chosen["rank"]):
            ax.axhline(depth, color="C3", lw=1.0)
            ax.text(1.0, depth, f" {rank}", color="C3", fontsize=7, va="center", transform=ax.get_yaxis_transform())
        ax.set(xlabel=t if t == "PC1" else f"{t} (wt%)", title=t)
        ax.yaxis.set_inverted(True)  # depth grows downwards
    axes[0][0].set_ylabel("depth (mm)")
    fig.suptitle(f"core {core}: {len(chosen)} depths to sample (red){'' if sampled is None else ', sampled (dashed)'}")
    return save(fig, path)
