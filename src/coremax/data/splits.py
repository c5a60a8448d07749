"""Which rows a data set trains, validates and tests on: test cores held out whole, validation by core (across
scanner settings), section or row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.bulk import labelled_mask
from coremax.errors import UserError

SPLIT_BY = ("auto", "core", "section", "row")
MIN_CORES_TO_SPLIT_BY_CORE = 4  # "auto" validates on whole cores when at least this many non-test cores exist


def choose_test_cores(test_cores, manifest: dict, meta: pd.DataFrame, targets: pd.DataFrame, seed: int,
                       raw: Path) -> list[str]:
    """--test-cores, else the archive's manifest, else a seeded ~15 % of the labelled cores."""
    if test_cores is None:
        test_cores = manifest.get("test_cores")
    if test_cores is None:
        labelled = sorted(meta.loc[labelled_mask(targets, targets.columns), "core"].unique())
        k = max(1, round(0.15 * len(labelled))) if len(labelled) > 2 else 0
        test_cores = np.random.default_rng(seed).choice(labelled, size=k, replace=False).tolist()
    cores = sorted(meta["core"].unique())
    unknown = [c for c in test_cores if c not in cores]
    if unknown:
        raise UserError(f"--test-cores names {unknown[0]!r}, which has no spectra under {raw}; cores found: "
                        f"{', '.join(cores[:10])}{' ...' if len(cores) > 10 else ''}.")
    if set(cores) <= set(test_cores):
        raise UserError("--test-cores holds out every core, leaving nothing to train on; name fewer cores.")
    return sorted(test_cores)


def resolve_split_by(split_by: str, cores: int) -> str:
    """"auto": by core (every choice is judged on cores the model never saw) when there are enough cores."""
    if split_by != "auto":
        return split_by
    return "core" if cores >= MIN_CORES_TO_SPLIT_BY_CORE else "row"


def split_rows(df: pd.DataFrame, split: float, split_by: str, seed: int,
                labelled: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of train rows: a `split` fraction of rows, or of whole sections or cores. By core, with
    `labelled` (rows with a lab sample, when the data set has a bulk file), validation cores are drawn among cores
    that have one, so a raw folder mixing labelled and unlabelled cores still validates on lab samples; the groups
    without any stay in training (pretraining reads their spectra)."""
    if split_by == "row":  # the same spot scanned twice stays on one side
        keys = pd.factorize(df["core"].astype(str) + "@" + df["depth_mm"].round(1).astype(str))[0]
    elif split_by == "section":
        keys = pd.factorize(df["core"].astype(str) + "/" + df["section"].astype(str))[0]
    else:
        keys = pd.factorize(df["core"])[0]
    rng = np.random.default_rng(seed)
    groups = rng.permutation(np.unique(keys))
    n_train = int(round(split * len(groups)))
    if len(groups) > 1:  # keep at least one group on each side
        n_train = min(max(n_train, 1), len(groups) - 1)
    n_val = len(groups) - n_train
    if labelled is not None and n_val and split_by == "core":
        with_labels = np.unique(keys[labelled])
        if len(with_labels) < 2:
            raise UserError(f"Only {len(with_labels)} non-test core of the data set has lab samples, so none can "
                            "be held out for validation and another kept for training; add labelled cores, or "
                            "use --split-by row.")
        groups = groups[np.isin(groups, with_labels)]  # cores without a lab sample are never validation cores
        n_val = min(n_val, len(groups) - 1)  # at least one labelled group stays in training
    if split_by == "core" and "scanner" in df.columns:
        val = _validation_cores_across_scanners(df, keys, groups, n_val)
    else:
        val = groups[len(groups) - n_val:]
    return np.isin(keys, val, invert=True)


def _validation_cores_across_scanners(df: pd.DataFrame, keys: np.ndarray, groups: np.ndarray, n_val: int) -> list:
    """Validation cores drawn across scanner settings (a setting not yet in validation first, then the one with
    the most cores), never the last training core of a setting: a random draw can otherwise put every core of
    one head into validation, and the model would then be trained without that head and selected on it."""
    scanner = pd.Series(df["scanner"].astype(str).to_numpy(), index=keys).groupby(level=0).first()
    left = {s: [g for g in groups if scanner[g] == s] for s in scanner.unique()}  # in the seeded order
    val: list = []
    while len(val) < n_val:
        used = pd.Series([scanner[g] for g in val], dtype=object).value_counts()
        spare = sorted((s for s in left if len(left[s]) > 1), key=lambda s: (used.get(s, 0), -len(left[s])))
        pool = spare or [s for s in left if left[s]]
        val.append(left[pool[0]].pop())
    return val
