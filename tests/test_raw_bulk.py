"""Raw folders (file names, depths, run selection by kV, bad files) and the bulk join (spellings, tolerance,
unmatched samples, clipping)."""

import numpy as np
import pandas as pd
import pytest

from coremax.data.bulk import match_bulk, read_bulk
from coremax.data.raw import parse_file_name, read_folder
from coremax.data.spe import read_spe, write_spe
from coremax.errors import UserError


@pytest.mark.parametrize("name, core, section, depth", [
    ("SO202-37-2_0937   10.0mm  10s  10kV 1000uA F1.spe", "SO202-37-2", "0937", 9370 + 10.0),  # cm, 4 digits
    ("PS75-056-1_0000    5.0mm  10s  10kV 150uA No-Filter.spe", "PS75-056-1", "0000", 5.0),
    ("GeoB_1234-5_150   12,5mm  20s  30kV 600uA Pd-thin.spe", "GeoB_1234-5", "150", 1500 + 12.5),  # cm, 3 digits
    ("M123_045000  100.0mm  10s  10kV 1000uA No-Filter.spe", "M123", "045000", 45000 + 100.0),  # mm, 6 digits
    ("M124_15000    3.0mm  10s  10kV 1000uA No-Filter.spe", "M124", "15000", 15000 + 3.0),  # mm, 5 digits
])
def test_depth_from_cm_and_mm_section_starts(name, core, section, depth):
    info = parse_file_name(name)
    assert info["core"] == core and info["section"] == section and info["depth_mm"] == pytest.approx(depth)


def test_file_name_settings_and_a_bad_name():
    info = parse_file_name("PS75-056-1_0000    5.0mm  20s  30kV 150uA No-Filter.spe")
    assert (info["name_live_time_s"], info["name_kv"], info["name_current_ua"], info["filter"]) == \
        (20.0, 30.0, 150.0, "No-Filter")
    with pytest.raises(UserError, match="spectrum1.spe: the file name does not follow"):
        parse_file_name("spectrum1.spe")


def make_raw(tmp_path, kvs=(10,), cores=("A-1", "B-2"), n=5):
    """Each spectrum is filled with (position index + kV), so tests can tell which file a row came from."""
    raw = tmp_path / "raw"
    for core in cores:
        for run, kv in enumerate(kvs, 1):
            for i in range(n):
                meta = {"live_time_s": 10.0, "real_time_s": 11.0, "kv": float(kv), "current_ma": 1.0, "spec_rem": "h",
                        "slit_cc_mm": 12.0}
                name = f"{core}_0010 {10.0 * i:5.1f}mm  10s  {kv}kV 1000uA No-Filter.spe"
                write_spe(raw / core / f"Run {run} at  {kv}kV" / name, np.full(2048, i + kv), meta)
    return raw


def test_raw_folder_reads_the_run_of_the_chosen_kv(tmp_path):
    raw = make_raw(tmp_path, kvs=(10, 30))
    meta, counts, skipped = read_folder(raw, kv=30, workers=1)
    assert len(meta) == 10 and set(meta["kv"]) == {30.0} and counts.shape == (10, 2048) and not skipped
    assert counts.dtype == np.int32  # exact counts (floats lose digits above 2**24)
    assert sorted(meta["depth_mm"].unique()) == [100.0, 110.0, 120.0, 130.0, 140.0]
    assert meta["source_file"].iloc[0].startswith("A-1/Run 2 at  30kV/A-1_0010")
    row = meta["depth_mm"].to_numpy() == 120.0
    assert np.all(counts[row] == 32)  # position index 2 + 30 kV
    assert meta["scanner"].nunique() == 1 and "h" in meta["scanner"].iloc[0]
    assert len(read_folder(raw, kv=10, workers=1)[0]) == 10


def test_process_pool_reads_the_same_table(tmp_path):
    raw = make_raw(tmp_path, n=120)  # enough files for the pool
    serial, counts1, _ = read_folder(raw, workers=1)
    pooled, counts2, _ = read_folder(raw, workers=2)
    pd.testing.assert_frame_equal(serial, pooled)
    assert np.array_equal(counts1, counts2) and len(serial) == 240


def test_mixed_kv_is_refused(tmp_path):
    raw = make_raw(tmp_path)
    odd = sorted((raw / "A-1" / "Run 1 at  10kV").iterdir())[0]
    meta, counts = read_spe(odd)
    odd.unlink()  # a 30 kV spectrum (its header and name say so) filed under the 10 kV run
    write_spe(odd.with_name(odd.name.replace("10kV", "30kV")), counts, {**meta, "kv": 30.0})
    with pytest.raises(UserError, match="mix 10, 30 kV.*A-1_0010"):
        read_folder(raw, kv=10)


def test_no_files_of_that_kv(tmp_path):
    with pytest.raises(UserError, match="No .spe files of a 50 kV run"):
        read_folder(make_raw(tmp_path), kv=50)


def test_bad_file_fails_naming_it_or_is_listed_when_skipped(tmp_path):
    raw = make_raw(tmp_path)
    bad = raw / "B-2" / "Run 1 at  10kV" / "B-2_0010  99.0mm  10s  10kV 1000uA No-Filter.spe"
    bad.write_text("$SPEC_ID:\nx\n$DATA:\n0 2047\n1 2 3\n")
    with pytest.raises(UserError, match=r"B-2_0010  99.0mm.*line 4: the channel range says 2048"):
        read_folder(raw, on_error="fail")
    meta, counts, skipped = read_folder(raw, on_error="skip")
    assert len(meta) == len(counts) == 10
    assert [s["file"] for s in skipped] == ["B-2/Run 1 at  10kV/B-2_0010  99.0mm  10s  10kV 1000uA No-Filter.spe"]
    assert "channel range" in skipped[0]["reason"]


def write_bulk(tmp_path, text):
    path = tmp_path / "bulk.csv"
    path.write_text(text)
    return read_bulk(path)


def test_bulk_column_spellings_and_nan_kept(tmp_path):
    bulk = write_bulk(tmp_path, "core,mid_depth_mm,CaCO3%,TOC (wt%),comment\nA,102,55.0,0.5,x\nA,130,40.0,,y\n")
    assert list(bulk.columns) == ["core", "depth_mm", "CaCO3", "TOC"]
    assert bulk["depth_mm"].tolist() == [102.0, 130.0] and np.isnan(bulk["TOC"].iloc[1])
    only_toc = write_bulk(tmp_path, "Core,depth_mm,toc\nA,5,1.5\n")
    assert list(only_toc.columns) == ["core", "depth_mm", "TOC"]


META = pd.DataFrame({"core": ["A"] * 7, "depth_mm": [100.0, 110, 120, 130, 140, 150, 160]})


def test_bulk_matching_tolerance_unmatched_and_clipping(tmp_path):
    bulk = write_bulk(tmp_path, "core,depth_mm,CaCO3,TOC\nA,102,55.0,0.5\nA,130,40.0,\nA,161,-1.5,0.2\n"
                                "B,100,10.0,1.0\nA,103,54.0,0.6\nA,175,30.0,0.4\n")
    targets, unmatched, clipped = match_bulk(META, bulk, tolerance_mm=5)
    assert clipped == 1
    assert targets["CaCO3"].iloc[0] == 55.0  # 102 mm beats 103 mm for the 100 mm spectrum
    assert targets["CaCO3"].iloc[3] == 40.0 and np.isnan(targets["TOC"].iloc[3])  # TOC not measured stays NaN
    assert targets["CaCO3"].iloc[6] == 0.0 and targets["TOC"].iloc[6] == 0.2  # -1.5 clipped to 0
    assert targets["CaCO3"].notna().sum() == 3 and targets["CaCO3"].isna().iloc[[1, 2, 4, 5]].all()
    reasons = dict(zip(unmatched["depth_mm"], unmatched["reason"]))
    assert len(unmatched) == 3
    assert reasons[100.0] == "no spectra of this core"
    assert "nearer to the same spectrum" in reasons[103.0]
    assert reasons[175.0] == "nearest spectrum 15.0 mm away"
    strict, unmatched_strict, _ = match_bulk(META, bulk, tolerance_mm=1)
    assert strict["CaCO3"].notna().sum() == 2 and len(unmatched_strict) == 4  # only 130 and 161 within 1 mm


def test_bulk_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="needs columns core, depth_mm"):
        write_bulk(tmp_path, "core,depth\nA,1\n")
    with pytest.raises(UserError, match="line 3: CaCO3 = 'abc' is not a number"):
        write_bulk(tmp_path, "core,depth_mm,CaCO3\nA,1,2\nA,2,abc\n")
    with pytest.raises(UserError, match="does not exist"):
        read_bulk(tmp_path / "nope.csv")


@pytest.mark.parametrize("value", ["inf", "150", "-inf"])
def test_absurd_bulk_values_are_refused(tmp_path, value):
    path = tmp_path / "bulk.csv"
    path.write_text(f"core,depth_mm,CaCO3,TOC\nA,10,20,0.5\nA,20,{value},0.4\n")
    with pytest.raises(UserError, match=r"line 3: CaCO3 .* not a possible"):
        read_bulk(path)


def test_one_core_folder_reads_like_the_archive(data_root):
    raw = data_root / "datasets" / "external" / "synthetic" / "raw"
    core = sorted(p for p in raw.iterdir() if p.is_dir())[0]
    whole, counts, _ = read_folder(raw, 10.0, 2048, workers=1)
    one, one_counts, _ = read_folder(core, 10.0, 2048, workers=1)
    mine = whole["core"] == core.name
    assert len(one) == mine.sum() > 0 and set(one["core"]) == {core.name}
    assert list(one["source_file"]) == list(whole.loc[mine, "source_file"])
    np.testing.assert_array_equal(one_counts, counts[mine.to_numpy()])


def test_an_empty_bulk_row_takes_no_spectrum():
    meta = pd.DataFrame({"core": ["A", "A"], "depth_mm": [10.0, 20.0]})
    bulk = pd.DataFrame({"core": ["A", "A"], "depth_mm": [14.0, 11.0], "CaCO3": [30.0, np.nan],
                         "TOC": [0.5, np.nan]})
    targets, unmatched, _ = match_bulk(meta, bulk, 5.0)
    assert targets.loc[0, "CaCO3"] == 30.0 and len(unmatched) == 0


def test_duplicate_bulk_samples_are_merged_or_refused(tmp_path):
    path = tmp_path / "bulk.csv"
    path.write_text("core,depth_mm,CaCO3,TOC\nA,10,20,0.5\nA,10,20,0.5\nA,30,25,0.4\n")
    assert len(read_bulk(path)) == 2
    path.write_text("core,depth_mm,CaCO3,TOC\nA,10,20,0.5\nA,10,35,0.5\n")
    with pytest.raises(UserError, match=r"core A at 10 mm twice .*lines 2, 3"):
        read_bulk(path)


def test_one_run_folder_reads_too(data_root):
    raw = data_root / "datasets" / "external" / "synthetic" / "raw"
    run = sorted(raw.glob("*/*"))[0]
    meta, counts, _ = read_folder(run, 10.0, 2048, workers=1)
    assert set(meta["core"]) == {run.parent.name} and all(f.count("/") == 2 for f in meta["source_file"])


def test_every_numeric_bulk_column_is_a_target(tmp_path):
    bulk = write_bulk(tmp_path, "core,depth_mm,CaCO3,Fe (wt%),d18O,sample,empty\n"
                                "A,10,20,3.5,-1.2,S1,\nA,20,30,,-0.8,S2,\n")
    assert list(bulk.columns) == ["core", "depth_mm", "CaCO3", "Fe", "d18O"]  # text and empty columns dropped
    assert bulk.attrs["contents"] == ["CaCO3", "Fe"]  # in wt%: checked to lie in 0-100, negatives clipped
    targets, _, clipped = match_bulk(pd.DataFrame({"core": ["A", "A"], "depth_mm": [10.0, 20.0]}), bulk, 5.0)
    assert clipped == 0 and targets["d18O"].tolist() == [-1.2, -0.8]  # an isotope ratio may be negative
    assert np.isnan(targets.loc[1, "Fe"])
    with pytest.raises(UserError, match=r"line 2: Fe .* content in wt%"):
        write_bulk(tmp_path, "core,depth_mm,Fe (wt%)\nA,10,120\n")
    with pytest.raises(UserError, match="two columns for 'Fe'"):
        write_bulk(tmp_path, "core,depth_mm,Fe,Fe (wt%)\nA,10,1,1\n")
    with pytest.raises(UserError, match=r"line 3: Fe = 'x' is not a number"):
        write_bulk(tmp_path, "core,depth_mm,Fe\nA,10,1\nA,20,x\nA,30,2\n")


def test_simulated_bulk_lists_element_contents(data_root):
    from coremax.data.dataset import load_info, load_split

    info = load_info(data_root, "synthetic")
    assert list(info["targets"]) == ["CaCO3", "TOC", "Ca", "Fe", "Si", "K"]
    df = load_split(data_root, "synthetic", "train").dropna(subset=["CaCO3", "Ca"])
    # Ca in the lab sample is mostly carbonate Ca (plus detrital Ca), each value with its own lab error.
    assert np.corrcoef(df["Ca"], df["CaCO3"])[0, 1] > 0.9 and df[["Fe", "Si", "K"]].gt(0).all().all()
