"""Bad and hostile input to preprocessing ends in one sentence that names the file, the row and what to do (exit
status 2, no traceback), or in a read error of that one file that --on-error skip skips; nothing half-written."""

import resource

import numpy as np
import pandas as pd
import pytest

from coremax.cli import preprocess_main
from coremax.data.dataset import build_dataset, load_info
from coremax.data.raw import read_folder
from coremax.data.spe import format_spe, parse_spe, write_spe
from coremax.errors import UserError

RUN = "Run 1 at  10kV"
META = {"live_time_s": 10.0, "real_time_s": 11.0, "kv": 10.0, "current_ma": 1.0, "spec_rem": "h", "slit_cc_mm": 12.0}


def spe_name(core="A-1", pos=0.0, live="10", kv="10", current="1000"):
    return f"{core}_0010 {pos:5.1f}mm  {live}s  {kv}kV {current}uA No-Filter.spe"


@pytest.fixture
def raw(tmp_path):
    """Two cores of four spectra each (a few ms to read), and a bulk file whose samples match two of them."""
    raw = tmp_path / "raw"
    for core in ("A-1", "B-2"):
        for i in range(4):
            write_spe(raw / core / RUN / spe_name(core, 10.0 * i), np.full(2048, 5 + i), META)
    (tmp_path / "bulk.csv").write_text("core,depth_mm,CaCO3\nA-1,110,50\nB-2,120,40\n")
    return raw


def refused(capsys, root, *args) -> str:
    """The one line preprocess prints when it refuses; nothing was written under the data root's datasets/."""
    with pytest.raises(SystemExit) as e:
        preprocess_main(["--data-root", str(root), "--name", "bad", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    assert not (root / "datasets").is_dir() or not list((root / "datasets").iterdir())
    return err


def table_of(raw, tmp_path, text=None, info=None):
    """The raw folder as a spectra table and its info table (CSV); `text` and `info` change cells first."""
    meta, counts, _ = read_folder(raw, workers=1)
    spectra = pd.concat([meta[["source_file"]], pd.DataFrame(counts, columns=[str(i) for i in range(2048)])], axis=1)
    meta = meta[["source_file", "core", "depth_mm", "kv"]].copy()
    for (row, col), value in (text or {}).items():
        spectra[col] = spectra[col].astype(object)
        spectra.loc[row, col] = value
    for (row, col), value in (info or {}).items():
        meta[col] = meta[col].astype(object) if isinstance(value, str) else meta[col]
        meta.loc[row, col] = value
    spectra.to_csv(tmp_path / "spectra.csv", index=False)
    meta.to_csv(tmp_path / "info.csv", index=False)
    return ["--table", str(tmp_path / "spectra.csv"), "--info", str(tmp_path / "info.csv")]


def test_text_in_a_channel_column_names_the_file_the_line_and_the_column(raw, tmp_path, capsys):
    args = table_of(raw, tmp_path, text={(2, "7"): "abc", (5, "3"): "x"})
    err = refused(capsys, tmp_path / "root", *args)
    assert f"The spectra table {tmp_path / 'spectra.csv'}, line 4, column '7': 'abc' is not a count" in err
    assert "fix that cell" in err


def test_an_info_row_at_another_voltage_names_the_line_and_the_voltage(raw, tmp_path, capsys):
    err = refused(capsys, tmp_path / "root", *table_of(raw, tmp_path, info={(4, "kv"): 30.0}))
    assert f"The info table {tmp_path / 'info.csv'}, line 6: kv is 30, not the 10 kV of this data set" in err


@pytest.mark.parametrize("where", ["info", "bulk"])
def test_a_negative_depth_is_refused_naming_the_file_and_the_line(raw, tmp_path, capsys, where):
    if where == "info":
        args, path, line = table_of(raw, tmp_path, info={(1, "depth_mm"): -5.0}), tmp_path / "info.csv", 3
    else:
        path, line = tmp_path / "neg.csv", 3
        path.write_text("core,depth_mm,CaCO3\nA-1,110,50\nA-1,-5,40\n")
        args = ["--raw", str(raw), "--bulk", str(path)]
    err = refused(capsys, tmp_path / "root", *args, "--split-by", "row")
    assert f"{path}, line {line}: depth_mm is -5, a negative depth" in err


@pytest.mark.parametrize("split_by", ["row", "section", "core", "auto"])
def test_a_bulk_file_that_matches_no_spectrum_is_refused_in_every_split_mode(raw, tmp_path, capsys, split_by):
    bulk = tmp_path / "elsewhere.csv"
    bulk.write_text("core,depth_mm,CaCO3\nZZ-9,5,3\nA-1,9999,4\nB-2,300,5\n")
    err = refused(capsys, tmp_path / "root", "--raw", str(raw), "--bulk", str(bulk), "--split-by", split_by)
    assert f"None of the 3 samples of the bulk file {bulk} matched a spectrum within --match-mm 5 mm" in err
    assert "(e.g. core ZZ-9 at 5 mm: no spectra of this core)" in err and "core names and depths" in err
    assert "validation" not in err


def test_a_bulk_file_without_any_value_is_refused(raw, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("core,depth_mm,CaCO3\nA-1,110,\n")
    err = refused(capsys, tmp_path / "root", "--raw", str(raw), "--bulk", str(tmp_path / "empty.csv"))
    assert "has no measured value in any row" in err


@pytest.mark.parametrize("where, name", [("info", "x/../.."), ("bulk", "my core"), ("info", "..up"),
                                         ("bulk", "a\\b")])
def test_unsafe_core_names_are_refused_at_preprocessing(raw, tmp_path, capsys, where, name):
    if where == "info":
        args, path, line = table_of(raw, tmp_path, info={(5, "core"): name}), tmp_path / "info.csv", 7
    else:
        path, line = tmp_path / "names.csv", 3
        pd.DataFrame({"core": ["A-1", name], "depth_mm": [110, 120], "CaCO3": [50, 40]}).to_csv(path, index=False)
        args = ["--raw", str(raw), "--bulk", str(path)]
    err = refused(capsys, tmp_path / "root", *args)
    assert f"{path}, line {line}: the core name {name!r} is not allowed" in err


def test_an_unsafe_core_in_an_element_table_is_refused_at_preprocessing(tmp_path):
    from coremax.data.element_tables import write_element_table
    from test_element_tables import frames  # its third core is 'B 2', which the reader itself reads back

    path = write_element_table(*frames(), tmp_path / "lab.csv", "coremax")
    with pytest.raises(UserError) as e:
        build_dataset(tmp_path / "root", "bad", elements=[path])
    assert str(e.value).startswith("The element table lab.csv, row 3: the core name 'B 2' is not allowed")


def test_an_unsafe_core_in_a_spe_file_name_is_a_read_error_of_that_file(raw, tmp_path, capsys):
    bad = raw / "A-1" / RUN / spe_name("A 1", 50.0)
    write_spe(bad, np.ones(2048), META)
    err = refused(capsys, tmp_path / "root", "--raw", str(raw))
    assert f"{bad.name}: the core name 'A 1' is not allowed" in err
    _, _, skipped = read_folder(raw, on_error="skip", workers=1)
    assert [s["file"] for s in skipped] == [f"A-1/{RUN}/{bad.name}"]


def test_the_core_names_of_the_synthetic_archive_pass(data_root):
    from coremax.data.rows import check_rows

    cores = sorted(set().union(*load_info(data_root, "synthetic")["cores"].values()))
    check_rows(pd.DataFrame({"core": cores + ["SO201-11-1", "PS75_056.1"], "depth_mm": 0.0}), str)


def test_a_header_key_given_twice_with_different_values_is_a_read_error(raw, tmp_path, capsys):
    text = format_spe(np.ones(2048), META, newline="\n")
    twice = text.replace("$DATA:", "$MEAS_TIM:\n999 1000\n$DATA:")
    with pytest.raises(UserError, match=r"x.spe, line \d+: \$MEAS_TIM: is given twice with different values "
                                        r"\('10 11' at line \d+, '999 1000' at line \d+\)"):
        parse_spe(twice, "x.spe")
    assert parse_spe(text.replace("$DATA:", "$MEAS_TIM:\n10 11\n$DATA:"))[0]["live_time_s"] == 10  # the same: fine
    bad = raw / "B-2" / RUN / spe_name("B-2", 50.0)
    bad.write_text(twice)
    err = refused(capsys, tmp_path / "root", "--raw", str(raw))
    assert str(bad) in err and "$MEAS_TIM: is given twice" in err
    assert [s["file"] for s in read_folder(raw, on_error="skip", workers=1)[2]] == [f"B-2/{RUN}/{bad.name}"]


@pytest.mark.parametrize("setting, says", [
    ({"live_time_s": 999.0}, "a live time of 999 s ($MEAS_TIM:) but the file name says 10 s"),
    ({"kv": 30.0}, "a tube voltage of 30 kV ($ACC_VOLT:) but the file name says 10 kV"),
    ({"current_ma": 0.15}, "a tube current of 150 uA ($TUBE_CUR:) but the file name says 1000 uA"),
], ids=["live-time", "kv", "current"])
def test_a_header_that_contradicts_the_file_name_is_a_read_error(raw, setting, says):
    name = spe_name(pos=50.0)
    bad = raw / "A-1" / RUN / name
    write_spe(bad, np.ones(2048), {**META, **setting})
    with pytest.raises(UserError) as e:
        read_folder(raw, workers=1)
    assert str(e.value) == f"{bad}: the header says {says}; fix the one that is wrong or leave the file out."
    meta, _, skipped = read_folder(raw, on_error="skip", workers=1)
    assert len(meta) == 8 and [s["file"] for s in skipped] == [f"A-1/{RUN}/{name}"]


def test_a_folder_named_like_a_spe_file_is_a_read_error_of_that_path(raw, tmp_path, capsys):
    folder = raw / "A-1" / RUN / spe_name(pos=90.0)
    folder.mkdir()
    err = refused(capsys, tmp_path / "root", "--raw", str(raw))
    assert err == f"error: {folder} is a folder, not an .spe file; move it out of the run folder or rename it.\n"
    meta, _, skipped = read_folder(raw, on_error="skip", workers=1)
    assert len(meta) == 8 and skipped == [{"file": f"A-1/{RUN}/{folder.name}", "reason": err[7:-1]}]


def test_a_file_size_limit_names_the_file_being_written_and_leaves_nothing(raw, tmp_path):
    root = tmp_path / "root"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, hard))  # the counts of one split are 40 kB or more
    try:
        with pytest.raises(UserError) as e:
            build_dataset(root, "big", raw=raw, bulk=raw.parent / "bulk.csv", split_by="row", test_cores=[])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(e.value)
    assert message.startswith(f"Writing the data set stopped at {root / 'datasets' / 'big'}/"), message
    assert "(File too large), so none of it was kept; " in message and "ulimit -f" in message
    assert list((root / "datasets").iterdir()) == []  # neither the data set nor its temporary folder


def test_a_data_root_that_is_a_file_is_said_to_be_one(raw, tmp_path, capsys):
    root = tmp_path / "root"
    root.write_text("not a folder")
    err = refused(capsys, root, "--raw", str(raw))
    assert err == (f"error: The data root {str(root)!r} is a file, not a folder; pass --data-root with the folder "
                   "that holds datasets/ and experiments/ (or a new one).\n")
    with pytest.raises(UserError, match="is a file, not a folder"):
        load_info(root, "synthetic")


def test_spectra_too_short_for_the_element_fit_are_refused_in_one_sentence():
    from coremax.data.elements import fit_elements

    meta = pd.DataFrame({"core": ["A"] * 3, "kv": [10.0] * 3, "live_time_s": [10.0] * 3})
    with pytest.raises(UserError, match="8 channels, too few for the element fit"):
        fit_elements(np.ones((3, 8), np.int32), meta, 10.0)
