"""The label-budget study's tables (coremax.study): test RMSE and R^2 per protocol, method and label count, the
best in bold beside the floor, R^2 per test core, and where the best MSM-based method stands against the best
classical calibration."""

from __future__ import annotations

import pandas as pd

from coremax.study_methods import PROTOCOLS, SELECTIONS, baseline_methods, methods, neural_methods


def summarise(summary: pd.DataFrame, scope: str = "all") -> pd.DataFrame:
    """Mean (and spread over seeds) of test R^2 and RMSE per protocol, method, label count and target, over all
    test cores (scope "all") or one test core (scope = its name)."""
    if "scope" in summary.columns:
        summary = summary[summary["scope"] == scope]
    used = [k for k in summary.columns if k != "selection" or summary[k].ne("").any()]  # blank off new-cores-labels
    keys = [k for k in ("protocol", "target", "k_per_core", "selection", "n_labels", "method") if k in used]
    g = summary.groupby(keys)
    return g.agg(r2=("r2", "mean"), r2_sd=("r2", "std"), rmse=("rmse", "mean"), rmse_sd=("rmse", "std"),
                 seeds=("seed", "nunique")).reset_index()


def _cell(r) -> str:
    return f"{r.rmse:.2f} ± {0 if pd.isna(r.rmse_sd) else r.rmse_sd:.2f} (R² {r.r2:.3f})"


def markdown_table(summary: pd.DataFrame, protocol: str = "new-cores") -> str:
    """The results table of one protocol (docs/results/label-budget.md): per target and label count (and, for new-cores-labels, way the k samples
    were chosen), each method's mean test RMSE +- sd over seeds and mean R^2, the best in bold, and the floor on
    the same rows; then R^2 per test core at the largest label count (first selection of the study)."""
    s = summarise(summary)
    labels = PROTOCOLS[protocol][2]
    row_key = "k_per_core" if labels else "n_labels"
    keys = ["target", row_key] + (["selection"] if labels and "selection" in s.columns else [])
    shown = [m for m in methods() if m in set(s["method"])]
    has_floor = "floor" in set(s["method"])
    head = "k per test core" + (" | chosen by" if len(keys) > 2 else "") if labels else "labels"
    lines = [f"Protocol `{protocol}`: test RMSE (wt%), mean ± sd over seeds (mean R²)", "",
             f"| target | {head} | " + " | ".join(shown) + (" | floor |" if has_floor else " |"),
             "|---|---|" + "---|" * (len(keys) - 2 + len(shown) + has_floor)]
    order = {m: i for i, m in enumerate(SELECTIONS)}
    groups = sorted(s.groupby(keys), key=lambda g: tuple(order.get(v, v) if i == 2 else v
                                                         for i, v in enumerate(g[0])))
    for key, part in groups:
        part = part.set_index("method")
        best = part.loc[shown, "rmse"].idxmin()
        cells = [f"**{_cell(part.loc[m])}**" if m == best else _cell(part.loc[m]) for m in shown]
        if has_floor:
            cells.append(f"{part.loc['floor'].rmse:.2f} (R² {part.loc['floor'].r2:.3f})")
        lines.append("| " + " | ".join(str(v) for v in key) + " | " + " | ".join(cells) + " |")
    cores = sorted(set(summary.get("scope", pd.Series(dtype=str))) - {"all"})
    if cores:  # R^2 per test core: where a target transfers and where it does not
        first = summary[summary["selection"] == summary["selection"].iloc[0]] if "selection" in summary else summary
        # The largest label count; with samples of the test cores, every k (each core's own calibration).
        counts = sorted(first[row_key].unique()) if labels else [first[row_key].max()]
        by_k = len(counts) > 1  # a k column
        what = "each k per test core" if by_k else f"{head.split(' |')[0]} = {counts[0]}"
        lines += ["", f"R² per test core with {what} (mean over seeds):", "",
                  "| target | core | " + ("k | " if by_k else "") + " | ".join(shown) + " |",
                  "|---|---|" + "---|" * (len(shown) + by_k)]
        unscored = False
        for core in cores:
            per = summarise(first, core)
            for (target, count), part in per[per[row_key].isin(counts)].groupby(["target", row_key]):
                part = part.set_index("method")
                r2 = [part.loc[m].r2 if m in part.index else None for m in shown]
                unscored |= any(v is not None and pd.isna(v) for v in r2)
                lines.append(f"| {target} | {core} | " + (f"{count} | " if by_k else "") + " | ".join(
                    "" if v is None else "–" if pd.isna(v) else f"{v:.3f}" for v in r2) + " |")
        if unscored:
            lines += ["", "–: no lab sample of that core left to score (it has at most k of them, all trained on)."]
    return "\n".join(lines) + "\n"


def method_family(method: str) -> str:
    """"msm" for the methods that start from the pretraining, "classical" for the baselines, "" otherwise
    (scratch: the same network from a random start, neither)."""
    neural = neural_methods()
    if method in neural:
        return "msm" if neural[method][1] else ""
    return "classical" if method in baseline_methods() else ""


def standing_table(summary: pd.DataFrame, protocol: str = "new-cores") -> str:
    """Where MSM stands (one protocol): per target and label count, the best MSM-based method's and the best
    classical calibration's mean test RMSE, and which is ahead; empty when the study ran no method of either."""
    s = summarise(summary[summary["protocol"] == protocol]) if "protocol" in summary else summarise(summary)
    s = s.assign(family=s["method"].map(method_family))
    if not {"msm", "classical"} <= set(s["family"]):
        return ""
    row_key = "k_per_core" if PROTOCOLS[protocol][2] else "n_labels"
    keys = ["target", row_key] + (["selection"] if "selection" in s.columns and PROTOCOLS[protocol][2] else [])
    lines = [f"Protocol `{protocol}`: the best MSM-based method against the best classical calibration (test RMSE, "
             "wt%, mean over seeds)", "",
             f"| target | {row_key.replace('_', ' ')} | " + ("chosen by | " if len(keys) > 2 else "")
             + "best MSM-based | best classical | ahead |", "|---|---|" + "---|" * (len(keys) + 1)]
    for key, part in s.groupby(keys):
        best = {f: part[part["family"] == f].nsmallest(1, "rmse").iloc[0] for f in ("msm", "classical")}
        ahead = "MSM" if best["msm"].rmse < best["classical"].rmse else "classical"
        cells = [f"{best[f].method} {best[f].rmse:.2f}" for f in ("msm", "classical")]
        lines.append("| " + " | ".join(str(v) for v in key) + " | " + " | ".join(cells) + f" | {ahead} |")
    return "\n".join(lines) + "\n"
