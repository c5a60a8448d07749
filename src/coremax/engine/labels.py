"""Which rows carry labels: the labelled rows of a split, the data.test_labels rows of each test core (the
same rows for training and evaluation), and the targets a data set can offer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from coremax.data.bulk import labelled_mask
from coremax.errors import UserError
from coremax.paths import inside

Rows = tuple  # (metadata and targets DataFrame, counts (rows, window) memory-mapped or in memory)


def labelled(df: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    return df[labelled_mask(df, targets)]


def labelled_rows(rows: Rows, targets: list[str]) -> Rows:
    keep = labelled_mask(rows[0], targets)
    return rows[0][keep], rows[1][keep]


def core_label_mask(meta: pd.DataFrame, targets: list[str], k: int, seed: int, chosen=None) -> np.ndarray:
    """data.test_labels: which test rows are the k lab samples per test core that join the training labels:
    seeded random depths among each core's labelled rows, or the source files `chosen` (data.test_label_rows).
    Training and evaluation both call this, so the rows trained on are exactly the rows left out of the test
    metrics, for every method of one seed."""
    mask = np.zeros(len(meta), dtype=bool)
    if not k:
        return mask
    has = labelled_mask(meta, targets)
    cores = meta["core"].to_numpy()
    if chosen is not None:
        files = meta["source_file"].astype(str).to_numpy()
        mask = np.isin(files, list(chosen)) & has
        missing = sorted(set(chosen) - set(files[mask]))
        per_core = pd.Series(cores[mask]).value_counts()
        if missing or (per_core > k).any():
            why = f"{missing[0]!r}, which is not a labelled test row" if missing else \
                f"{per_core.max()} rows of core {per_core.idxmax()}, more than data.test_labels = {k}"
            raise UserError(f"data.test_label_rows lists {why}; choose the rows again with this data set "
                            "(scripts/label_budget.py does) or clear data.test_label_rows.")
        return mask
    rng = np.random.default_rng([seed, k])
    for core in sorted(set(cores)):
        rows = np.flatnonzero(has & (cores == core))
        mask[rng.choice(rows, size=min(k, len(rows)), replace=False)] = True
    return mask


def chosen_test_rows(data_root, path: str, k: int, seed: int) -> set[str] | None:
    """The source files data.test_label_rows lists for this seed and k: a CSV under the data root with columns
    seed, k, source_file (written by the label-budget study's sample suggestion); None for "" (random)."""
    if not path or not k:
        return None
    file = inside(data_root, path, "data.test_label_rows file")
    try:
        table = pd.read_csv(file)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise UserError(f"data.test_label_rows = {path!r} cannot be read ({str(e).splitlines()[0]}); give a CSV "
                        "of seed, k, source_file under the data root.") from None
    if not {"seed", "k", "source_file"} <= set(table.columns):
        raise UserError(f"data.test_label_rows = {path!r} needs columns seed, k and source_file.")
    rows = table[(table["seed"] == seed) & (table["k"] == k)]
    if rows.empty:
        raise UserError(f"data.test_label_rows = {path!r} lists no rows for seed {seed} and k {k}; choose them "
                        "for this seed and k first.")
    return set(rows["source_file"].astype(str))


def check_targets(targets: list[str], info: dict, dataset: str) -> None:
    """data.targets must name measured columns of the data set (info.toml lists them under [targets])."""
    available = list(info.get("targets", {}))
    missing = [t for t in targets if t not in available]
    if missing or not targets or len(set(targets)) < len(targets):
        raise UserError(f"data.targets = {targets} but the data set {dataset!r} has no target "
                        f"{missing[0] if missing else '(none or a repeated one given)'}; choose from {available}"
                        f"{'' if available else ' (it was built without a bulk file)'}.")
