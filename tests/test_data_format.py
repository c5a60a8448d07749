"""Avaatech .spe reading (format variants, errors), file names and depths, raw folders, bulk matching."""

import numpy as np
import pandas as pd
import pytest

from coremax.data.bulk import match_bulk, read_bulk
from coremax.data.raw import parse_file_name, read_folder
from coremax.data.spe import format_spe, parse_spe, read_spe, write_spe
from coremax.errors import UserError

FULL = """$SPEC_ID:
SO202-37-2 937
$SPEC_REM:
head B
$DATE_MEA:
03-14-2019 10:22:05
$MEAS_TIM:
10 11
$ACC_VOLT:
10
$TUBE_CUR:
1,000
$Core_ID:
SO202-37-2
$Section_ID:
0937
$Depth:
10,5
$Run_ID:
1
$X_Position:
10.0
$Y_Position:
0
$Replicate_ID:
1
$Slit_DC:
10
$Slit_CC:
12
$TotalCPS:
12345
$USER_ID:
lab
$EXTRA_KEY:
whatever
$DATA:
0 {last}
{counts}
"""

SHORT = """$SPEC_ID:
old head
$DATE_MEA:
05-02-2006 08:00:00
$MEAS_TIM:
30 32
$DATA:
0 {last}
{counts}
"""


def text(template=FULL, n=2048, per_line=1, newline="\n"):
    counts = np.arange(n) % 97
    rows = [" ".join(map(str, counts[i:i + per_line])) for i in range(0, n, per_line)]
    return template.format(last=n - 1, counts="\n".join(rows)).replace("\n", newline), counts


@pytest.mark.parametrize("per_line", [1, 8, 2048])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_full_header_any_counts_per_line_and_crlf(per_line, newline):
    t, counts = text(per_line=per_line, newline=newline)
    meta, c = parse_spe(t)
    assert np.array_equal(c, counts)
    assert meta["live_time_s"] == 10 and meta["real_time_s"] == 11 and meta["kv"] == 10
    assert meta["current_ma"] == 1.0  # decimal comma
    assert meta["header_depth"] == 10.5 and meta["slit_cc_mm"] == 12 and meta["total_cps"] == 12345
    assert meta["date"] == "2019-03-14T10:22:05" and meta["spec_rem"] == "head B"
    assert meta["spectrum_length"] == 2048


def test_short_header_and_missing_optional_keys():
    meta, c = parse_spe(text(SHORT)[0])
    assert meta["live_time_s"] == 30 and np.isnan(meta["kv"]) and meta["core_id"] == ""
    assert len(c) == 2048


def test_keys_found_by_name_not_position():
    t, _ = text()
    # Drop an optional key (and its value) from the middle: everything after it is still read.
    t = t.replace("$Run_ID:\n1\n", "")
    meta, _ = parse_spe(t)
    assert meta["run_id"] == "" and meta["x_position"] == 10.0 and meta["total_cps"] == 12345


def test_short_spectrum_is_padded_and_long_one_refused():
    meta, c = parse_spe(text(n=1024)[0])
    assert len(c) == 2048 and meta["spectrum_length"] == 1024 and not c[1024:].any()
    long_text, _ = text(n=4096)
    with pytest.raises(UserError, match="beyond channel 2047"):
        parse_spe(long_text, "long.spe")
    zero_tail = FULL.format(last=4095, counts="\n".join(["5"] * 2048 + ["0"] * 2048))
    assert len(parse_spe(zero_tail)[1]) == 2048


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.replace("\n17\n", "\n1x7\n", 1), r"bad\.spe, line \d+: '1x7' is not a count"),
    (lambda t: t.replace("$DATA:\n0 2047", "$DATA:\n0 3000"), r"bad\.spe, line \d+: the channel range says 3001"),
    (lambda t: t.replace("$DATA:", "$DATTA:"), r"bad\.spe: no \$DATA: line"),
    (lambda t: t.replace("$ACC_VOLT:\n10", "$ACC_VOLT:\nten"), r"bad\.spe, line 10: cannot read a number for \$ACC_VOLT"),
])
def test_malformed_file_names_file_and_line(damage, message):
    with pytest.raises(UserError, match=message):
        parse_spe(damage(text()[0]), "bad.spe")


def test_writer_round_trip(tmp_path):
    counts = np.random.default_rng(0).poisson(50, 2048).astype(float)
    meta = {"live_time_s": 10.0, "real_time_s": 10.8, "kv": 10.0, "current_ma": 0.15, "core_id": "X",
            "slit_cc_mm": 12.0, "total_cps": counts.sum() / 10, "spec_rem": "head C", "date": "2019-03-14T10:22:05"}
    path = write_spe(tmp_path / "a.spe", counts, meta)
    back, c = read_spe(path)
    assert np.array_equal(c, counts) and back["kv"] == 10 and back["current_ma"] == 0.15
    assert back["date"] == meta["date"] and "\r\n" in path.read_bytes().decode()
    assert "$Run_ID:" not in format_spe(counts, meta)  # empty keys are left out


@pytest.mark.parametrize("name, core, section, depth", [
    ("SO202-37-2_0937   10.0mm  10s  10kV 1000uA F1.spe", "SO202-37-2", "0937", 9370 + 10.0),
    ("PS75-056-1_0000    5.0mm  10s  10kV 150uA No-Filter.spe", "PS75-056-1", "0000", 5.0),
    ("GeoB_1234-5_150   12,5mm  20s  30kV 600uA Pd-thin.spe", "GeoB_1234-5", "150", 1500 + 12.5),
    ("M123_045000  100.0mm  10s  10kV 1000uA No-Filter.spe", "M123", "045000", 45000 + 100.0),
])
def test_depth_from_cm_and_mm_section_starts(name, core, section, depth):
    info = parse_file_name(name)
    assert info["core"] == core and info["section"] == section and info["depth_mm"] == pytest.approx(depth)


def test_bad_file_name():
    with pytest.raises(UserError, match="does not follow"):
        parse_file_name("spectrum1.spe")


def make_raw(tmp_path, kvs=(10,), cores=("A-1", "B-2"), n=5):
    raw = tmp_path / "raw"
    for core in cores:
        for run, kv in enumerate(kvs, 1):
            folder = raw / core / f"Run {run} at  {kv}kV"
            for i in range(n):
                meta = {"live_time_s": 10.0, "kv": float(kv), "current_ma": 1.0, "spec_rem": "h"}
                write_spe(folder / f"{core}_0010 {10.0 * i:5.1f}mm  10s  {kv}kV 1000uA No-Filter.spe",
                          np.full(2048, i + kv), meta)
    return raw


def test_raw_folder_selects_a_run_by_kv(tmp_path):
    raw = make_raw(tmp_path, kvs=(10, 30))
    meta, counts, skipped = read_folder(raw, kv=30)
    assert len(meta) == 10 and set(meta["kv"]) == {30.0} and counts.shape == (10, 2048) and not skipped
    assert sorted(meta["depth_mm"].unique()) == [100.0, 110.0, 120.0, 130.0, 140.0]
    assert meta["source_file"].iloc[0].startswith("A-1/Run 2 at  30kV/")


def test_mixed_kv_in_one_run_is_refused(tmp_path):
    raw = make_raw(tmp_path)
    odd = next((raw / "A-1" / "Run 1 at  10kV").iterdir())
    meta, counts = read_spe(odd)
    write_spe(odd, counts, {**meta, "kv": 30.0})
    with pytest.raises(UserError, match="mix 10, 30 kV"):
        read_folder(raw, kv=10)


def test_bad_file_fails_or_is_listed_when_skipped(tmp_path):
    raw = make_raw(tmp_path)
    bad = raw / "B-2" / "Run 1 at  10kV" / "B-2_0010  99.0mm  10s  10kV 1000uA No-Filter.spe"
    bad.write_text("$SPEC_ID:\nx\n$DATA:\n0 2047\n1 2 3\n")
    with pytest.raises(UserError, match="B-2_0010  99.0mm"):
        read_folder(raw, on_error="fail")
    meta, counts, skipped = read_folder(raw, on_error="skip")
    assert len(meta) == 10 and len(skipped) == 1 and "99.0mm" in skipped[0]["file"]


def test_bulk_spellings_matching_tolerance_and_clipping(tmp_path):
    csv = tmp_path / "bulk.csv"
    csv.write_text("core,mid_depth_mm,CaCO3%,TOC (wt%)\nA,102,55.0,0.5\nA,130,40.0,\nA,161,-1.5,0.2\n"
                   "B,100,10.0,1.0\nA,103,54.0,0.6\n")
    bulk = read_bulk(csv)
    assert list(bulk.columns) == ["core", "depth_mm", "CaCO3", "TOC"] and np.isnan(bulk["TOC"].iloc[1])
    meta = pd.DataFrame({"core": ["A"] * 7, "depth_mm": [100.0, 110, 120, 130, 140, 150, 160]})
    targets, unmatched, clipped = match_bulk(meta, bulk, tolerance_mm=5)
    assert clipped == 1
    assert targets["CaCO3"].iloc[0] == 55.0  # 102 mm beats 103 mm for the 100 mm spectrum
    assert targets["CaCO3"].iloc[3] == 40.0 and np.isnan(targets["TOC"].iloc[3])
    assert targets["CaCO3"].iloc[6] == 0.0 and targets["TOC"].iloc[6] == 0.2
    assert targets["CaCO3"].notna().sum() == 3
    reasons = sorted(unmatched["reason"])
    assert len(unmatched) == 2 and "no spectra of this core" in reasons
    assert any("nearer to the same spectrum" in r for r in reasons)
    strict, unmatched2, _ = match_bulk(meta, bulk, tolerance_mm=1)
    assert strict["CaCO3"].notna().sum() == 2  # 130 and 161 only


def test_bulk_errors_name_the_problem(tmp_path):
    csv = tmp_path / "bulk.csv"
    csv.write_text("core,depth\nA,1\n")
    with pytest.raises(UserError, match="needs columns core, depth_mm"):
        read_bulk(csv)
    csv.write_text("core,depth_mm,CaCO3\nA,1,abc\n")
    with pytest.raises(UserError, match="line 2: CaCO3 = 'abc'"):
        read_bulk(csv)
