"""The floor: how well the true composition under each scan spot predicts its bulk sample.

No calibration can beat it (lab error, the 1-2 cm a sample integrates and the depth registration remain), so
it is the room left for any method. It exists where the data set's archive has a `truth.csv` beside its raw
folder (the synthetic scanner writes one); real archives have none, and then there is no floor to report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coremax.data.dataset import load_info, load_split
from coremax.engine.labels import labelled
from coremax.stats.metrics import metrics_table


def truth_file(data_root, dataset: str) -> Path | None:
    """truth.csv beside the raw folder the data set was built from, or None."""
    raw = Path(load_info(data_root, dataset)["source"]["raw"])
    raw = raw if raw.is_absolute() else Path(data_root) / raw
    path = raw.parent / "truth.csv"
    return path if path.is_file() else None


def floor_metrics(data_root, dataset: str, targets, split: str = "test", exclude=frozenset()) -> pd.DataFrame | None:
    """Metrics (overall and per core) of the truth at each labelled spectrum's scan spot against its bulk
    value, in the same table as a model's, for the targets the truth holds; None when there are none.
    `exclude`: source files left out (the rows a data.test_labels run trained on), so the floor is on the same
    rows as the model's metrics."""
    path = truth_file(data_root, dataset)
    if path is None:
        return None
    truth = pd.read_csv(path, usecols=lambda c: c in {"source_file", *targets})
    targets = [t for t in targets if t in truth.columns]  # the truth knows the composition, not every lab column
    if not targets:
        return None
    rows = labelled(load_split(data_root, dataset, split), targets)[["core", "source_file", *targets]]
    rows = rows[~rows["source_file"].isin(exclude)]
    frame = rows.merge(truth.rename(columns={t: f"{t}_pred" for t in targets}), on="source_file", how="inner",
                       validate="many_to_one")
    return metrics_table(frame, targets)
