"""The floor: the true composition under each scan spot scored against its bulk sample, on a hand-made archive."""

import numpy as np
import pandas as pd
import pytest

from coremax.eval.floor import floor_metrics


def test_floor_on_a_hand_made_archive(tmp_path):
    root = tmp_path
    raw = root / "arch" / "raw"
    raw.mkdir(parents=True)
    files = [f"C{i}/Run 1 at  10kV/f{j}.spe" for i in range(2) for j in range(3)]
    pd.DataFrame({"source_file": files, "CaCO3": [10.0, 20, 30, 40, 50, 60], "TOC": [1.0] * 6}).to_csv(
        root / "arch" / "truth.csv", index=False)
    test = pd.DataFrame({"core": ["C0"] * 3 + ["C1"] * 3, "source_file": files,
                         "CaCO3": [12.0, np.nan, 30, 37, 50, 60], "TOC": [np.nan] * 6})
    (root / "datasets" / "h").mkdir(parents=True)
    test.to_parquet(root / "datasets" / "h" / "test.parquet")
    np.save(root / "datasets" / "h" / "test.npy", np.zeros((6, 4), np.int32))
    (root / "datasets" / "h" / "info.toml").write_text('[source]\nraw = "arch/raw"\n')
    floor = floor_metrics(root, "h", ["CaCO3"]).set_index("scope")
    # Errors 2, 0, -3, 0, 0 on the measured rows: RMSE sqrt(13/5); per core C0: sqrt(4/2).
    assert floor.loc["all", "n"] == 5 and floor.loc["all", "rmse"] == pytest.approx(np.sqrt(13 / 5))
    assert floor.loc["C0", "rmse"] == pytest.approx(np.sqrt(2.0)) and floor.loc["C1", "n"] == 3
    (root / "arch" / "truth.csv").unlink()
    assert floor_metrics(root, "h", ["CaCO3"]) is None
