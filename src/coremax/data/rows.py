"""What every reader of a table of spectra or lab samples refuses in its rows, whatever the layout: a core name
that a later stage would refuse (it names folders and figures: coremax.paths.check_name) and a negative depth."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from coremax.errors import UserError
from coremax.paths import check_name


def check_rows(df: pd.DataFrame, where: Callable[[object], str]) -> None:
    """Refuse the first row of `df` whose core name check_name refuses or whose depth_mm is negative (composite
    depths count down from the core top, 0 mm); `where(label)` names the file and the line of the row whose index
    label is `label`."""
    cores = df["core"].astype(str).to_numpy()
    for name in pd.unique(cores):  # each name once, in the order of the file
        try:
            check_name(name, "core")
        except UserError:
            check_name(name, "core", where(df.index[np.flatnonzero(cores == name)[0]]))  # the same, naming the row
    depths = pd.to_numeric(df["depth_mm"], errors="coerce").to_numpy(float)
    negative = np.flatnonzero(depths < 0)
    if len(negative):
        raise UserError(f"{where(df.index[negative[0]])}: depth_mm is {depths[negative[0]]:g}, a negative depth; "
                        "depths count down from the core top (0 mm): fix that row or leave it out.")
