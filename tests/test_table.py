"""Compiled spectra tables (scripts/preprocess.py --table --info): the same data set as from the .spe folders."""

import shutil

import numpy as np
import pandas as pd
import pytest

from coremax.cli import preprocess_main
from coremax.data.dataset import build_dataset, load_arrays, load_info
from coremax.data.raw import read_folder
from coremax.errors import UserError

INFO = ["source_file", "core", "depth_mm", "section", "section_start_mm", "position_mm", "kv", "current_ma",
        "live_time_s", "real_time_s", "filter", "scanner", "total_cps", "slit_dc_mm", "slit_cc_mm", "date"]


def _export(data_root, folder, fmt="parquet", names=lambda i: str(i)):
    """The embedded test archive as a compiled table + info table, beside its manifest, bulk and truth files."""
    source = data_root / "datasets" / "external" / "synthetic"
    meta, counts, _ = read_folder(source / "raw")
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("manifest.toml", "bulk.csv", "truth.csv"):
        shutil.copy(source / f, folder / f)
    spectra = pd.concat([meta[["source_file"]], pd.DataFrame(counts, columns=[names(i) for i in range(counts.shape[1])])],
                        axis=1)
    table = folder / f"spectra.{fmt}"
    spectra.to_parquet(table) if fmt == "parquet" else spectra.to_csv(table, index=False)
    meta[INFO].to_csv(folder / "info.csv", index=False)
    return table, folder / "info.csv"


def test_a_table_builds_the_same_data_set_as_the_spe_folders(data_root, tmp_path):
    table, info = _export(data_root, tmp_path / "archive")
    preprocess_main(["--data-root", str(data_root), "--table", str(table), "--info", str(info), "--name", "tab",
                     "--split=0.8"])
    a, b = load_info(data_root, "synthetic"), load_info(data_root, "tab")
    assert a["cores"] == b["cores"] and a["counts"]["labelled_test"] == b["counts"]["labelled_test"]
    for split in ("train", "val", "test"):
        (ma, xa), (mb, xb) = load_arrays(data_root, "synthetic", split), load_arrays(data_root, "tab", split)
        assert np.array_equal(np.asarray(xa), np.asarray(xb))  # identical counts, row by row
        cols = ["core", "depth_mm", "source_file", "CaCO3", "TOC"]
        pd.testing.assert_frame_equal(ma[cols], mb[cols])


def test_channels_by_name_or_position_and_a_csv(data_root, tmp_path):
    table, info = _export(data_root, tmp_path / "csv", fmt="csv", names=lambda i: f"ch{i:04d}")
    build_dataset(data_root, "tab-csv", table=table, info_table=info, split=0.8)
    spectra = pd.read_csv(table)
    spectra.columns = ["source_file"] + [f"counts {chr(65 + i % 26)}{i}x" for i in range(spectra.shape[1] - 1)]
    spectra.drop(columns=["source_file"]).to_csv(tmp_path / "csv" / "nameless.csv", index=False)  # row order only
    build_dataset(data_root, "tab-pos", table=tmp_path / "csv" / "nameless.csv", info_table=info, split=0.8)
    for name in ("tab-csv", "tab-pos"):
        assert np.array_equal(np.asarray(load_arrays(data_root, "synthetic", "test")[1]),
                              np.asarray(load_arrays(data_root, name, "test")[1]))


def test_bad_tables_end_in_one_sentence(data_root, tmp_path, capsys):
    table, info = _export(data_root, tmp_path / "bad", fmt="csv")
    good = pd.read_csv(table)
    cases = []
    broken = good.astype({"7": float})
    broken.loc[3, "7"] = 2.5
    broken.to_csv(tmp_path / "frac.csv", index=False)
    cases.append((["--table", str(tmp_path / "frac.csv"), "--info", str(info)], "not a count"))
    good.drop(columns=["source_file"]).iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    cases.append((["--table", str(tmp_path / "short.csv"), "--info", str(info)], "rows"))
    pd.read_csv(info).drop(columns=["depth_mm"]).to_csv(tmp_path / "nodepth.csv", index=False)
    cases.append((["--table", str(table), "--info", str(tmp_path / "nodepth.csv")], "core and depth_mm"))
    cases.append((["--table", str(table)], "--info"))
    cases.append((["--table", str(tmp_path / "missing.csv"), "--info", str(info)], "does not exist"))
    for args, words in cases:
        with pytest.raises(SystemExit) as e:
            preprocess_main(["--data-root", str(data_root), "--name", "bad-table", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and "Traceback" not in err, err
        assert not (data_root / "datasets" / "bad-table").exists()
    with pytest.raises(UserError, match="not several"):
        build_dataset(data_root, "x", raw=tmp_path, table=table, info_table=info)
