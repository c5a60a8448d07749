"""Element tables: bAxil/WinAxil batch exports, ITRAX result.txt and CoreMAX's layout read into the element fit's
columns; the bAxil writer's round trip; simulate --elements. The example files are the header lines of
docs/element-tables.md with a few rows."""

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coremax.cli import simulate_main
from coremax.data import element_tables
from coremax.data.dataset import META_COLUMNS
from coremax.data.element_tables import read_element_tables, write_element_table
from coremax.data.raw import read_folder
from coremax.errors import UserError

BAXIL_HEADER = ('" Spectrum" ," Sample" ," User" ," Live time" ," Real time" ," Excitation" ," Throughput" '
                ',{}')
LINES = ("Al-Ka", "P -Ka", "Ca-Ka", "Ba-La", "Rh-La-Inc", "Rh-La-Coh")


def baxil_file(path, rows):
    """rows: (core, depth, kv, live, {line: (chi2, area, sd)}, throughput)."""
    cols = ",".join(f'" {ln} {w}" ' for ln in LINES for w in ("Chi2", "Area", "AreaStd", "cps", "cpsStd"))
    out = [BAXIL_HEADER.format(cols)]
    for core, depth, kv, live, lines, tput in rows:
        spectrum = (f"{core}!0!0!{depth:6.1f}!2019-09-10!16-43-35!{live}!{kv}!1500!{depth}!0.0!No-Filter!5.0!12.0!"
                    "Run1!Rep0!Sett Low.spe")
        values = [f"{v}" for ln in LINES for v in (*lines[ln], lines[ln][1] / live, lines[ln][2] / live)]
        fixed = [spectrum, f"  {depth}", f"{depth}", str(live), "51", "XRay Tube Generator", tput]
        out.append(",".join(fixed + values))
    path.write_text("\n".join(out) + "\n")
    return path


def spot(ca, chi=1.0):
    return {"Al-Ka": (chi, 359, 80), "P -Ka": (chi, -1728, 476), "Ca-Ka": (chi, ca, 1884), "Ba-La": (chi, 4, 533),
            "Rh-La-Inc": (chi, 447453, 854), "Rh-La-Coh": (chi, 8725, 473)}


def test_metadata_columns_are_the_data_sets_own():
    assert element_tables.META_COLUMNS == META_COLUMNS


def test_baxil_batch_export(tmp_path):
    f = baxil_file(tmp_path / "ZH19-35_10kV.csv", [
        ("ZH19-35", 53.0, 10, 15, spot(3673423, 0.5), "6.34E+05"), ("ZH19-35", 55.0, 10, 15, spot(4865872), "7.29E+05"),
        ("ZH19-35", 55.0, 30, 15, spot(1), "1E+05")])
    meta, el, skipped = read_element_tables(f, kv=10)
    assert list(meta["core"]) == ["ZH19-35"] * 2 and list(meta["depth_mm"]) == [53.0, 55.0]
    assert list(meta["kv"]) == [10.0, 10.0] and list(meta["live_time_s"]) == [15.0, 15.0]
    assert list(meta["current_ma"]) == [1.5, 1.5] and meta["date"][0] == "2019-09-10 16-43-35"
    assert list(meta["source_file"]) == ["ZH19-35_10kV.csv#1", "ZH19-35_10kV.csv#2"]
    assert meta["sha256"].str.fullmatch("[0-9a-f]{64}").all() and (meta["spectrum_length"] == 0).all()
    assert list(el["Ca_area"]) == [3673423, 4865872] and list(el["Ca_sd"]) == [1884, 1884]
    assert list(el["P_area"]) == [-1728, -1728] and "Ba_area" in el  # `P -Ka`: bAxil pads the symbol
    assert list(el["coh_area"]) == [8725, 8725] and list(el["scatter_area"]) == [447453, 447453]
    assert list(el["chi2"]) == [0.5, 1.0] and list(el["throughput_cps"]) == [634000.0, 729000.0]
    assert skipped == [{"file": "ZH19-35_10kV.csv", "rows": 1,
                        "reason": "1 rows at 30 kV dropped (reading the 10 kV run)"}]
    meta, el, _ = read_element_tables(f)  # every run: the 30 kV row is another spot
    assert len(meta) == 3 and list(meta["kv"]) == [10.0, 10.0, 30.0]


def test_short_baxil_aliases_with_semicolons_decimal_commas_and_depth_in_cm(tmp_path):
    f = tmp_path / "lab.csv"
    f.write_text("Sample name;Depth (cm);kV;Ca Area;Ca Error;Fe-Area;Fe sd;ChiSqr;Throughput;Rh Coh;Rh Inc\n"
                 "GeoB1234-1;1,5;10;1234,5;35,1;-2,5;3;1,25;50000;100;200\n"
                 "GeoB1234-1;2,5;10;1000;31;7;3;0,75;48000,5;110;210\n")
    meta, el, skipped = read_element_tables(f)
    assert list(meta["core"]) == ["GeoB1234-1"] * 2 and list(meta["depth_mm"]) == [15.0, 25.0]
    assert list(el["Ca_area"]) == [1234.5, 1000.0] and list(el["Ca_sd"]) == [35.1, 31.0]
    assert list(el["Fe_area"]) == [-2.5, 7.0] and list(el["chi2"]) == [1.25, 0.75]
    assert list(el["throughput_cps"]) == [50000.0, 48000.5] and list(el["coh_area"]) == [100.0, 110.0]
    assert list(el["coh_sd"]) == [10.0, np.sqrt(110)] and skipped == []  # no error column: counting statistics
    f.write_text("core,depth_mm,live_time_s,Ca-Ka cps,Ca-Ka cpsStd\nA,10,20,12.5,0.25\n")  # rates only
    assert read_element_tables(f)[1][["Ca_area", "Ca_sd"]].values.tolist() == [[250.0, 5.0]]


def test_winaxil_export_takes_depth_from_the_avaatech_file_name(tmp_path):
    f = tmp_path / "winaxil.csv"
    name = "e:\\XRF\\SO202-37-2\\Run 1 at  10kV\\SO202-37-2_0937   {}mm  10s  10kV 1000uA F1   0.0mm Run1 Rep0.wax"
    f.write_text("\ufeffFileName;LiveTime ; RealTime ; MeasurementDate ; MeasurementTime ; Sample_ID ; User_ID;"
                 "Al_Area ;Al_ DArea ;Al_ ChiSqr;Ca_Area ;Ca_ DArea ;Ca_ ChiSqr\n"
                 f"{name.format('10.0')};10;12;03.01.17 12:15;;10;;450;92;0.7;17113;315;1.8\n"
                 f"{name.format('20.0')};10;12;03.01.17 12:16;;20;;499;105;1.3;369786;705;2.4\n", encoding="utf-8")
    meta, el, _ = read_element_tables(f)
    assert list(meta["core"]) == ["SO202-37-2"] * 2 and list(meta["depth_mm"]) == [9380.0, 9390.0]
    assert list(meta["section_start_mm"]) == [9370.0] * 2 and list(meta["position_mm"]) == [10.0, 20.0]
    assert list(meta["kv"]) == [10.0, 10.0] and list(meta["filter"]) == ["F1", "F1"]
    assert list(el["Ca_area"]) == [17113, 369786] and list(el["Al_sd"]) == [92, 105]
    assert list(el["chi2"]) == [pytest.approx(1.25), pytest.approx(1.85)]  # the median of the lines' chi-squares


ITRAX = ("C:\\Data\\CD166_19_S1\\XRF data     06-Oct-20  re-evaluated data\npeakarea\n"
         "filename\tposition (mm)\tsample surface\tvalidity\tE-gain\tcps\tMSE\tAl\tSi\tCa\tFe\tFe a*2\tS1\tMo inc\t"
         "Mo coh\tDt\t\n"
         "C:\\x\\L000000.spe\t31.54\t6.38\t1\t0.010267\t22415\t1.26\t41\t0\t59965\t19786\t109\t239\t20427\t6812\t"
         "0.107\t\n"
         "C:\\x\\L000001.spe\t32.54\t6.39\t0\t0.010267\t34525\t1.41\t0\t0\t0\t0\t0\t0\t0\t0\t0.106\t\n"
         "C:\\x\\L000002.spe\t33.54\t6.42\t1\t0.010267\t38370\t1.57\t57\t306\t144287\t36494\t109\t239\t26778\t9117\t"
         "0.104\t\n")


def test_itrax_result_txt(tmp_path):
    f = tmp_path / "CD166_19_S1_Results.txt"
    f.write_text(ITRAX)
    meta, el, skipped = read_element_tables(f, kv=30)
    assert list(meta["core"]) == ["CD166_19_S1"] * 2 and list(meta["depth_mm"]) == [31.54, 33.54]
    assert list(meta["kv"]) == [30.0, 30.0] and (meta["scanner"] == "ITRAX").all()
    assert skipped == [{"file": "CD166_19_S1_Results.txt#2", "reason": "validity 0: Q-Spec could not fit this spot"}]
    assert list(el["Ca_area"]) == [59965, 144287] and list(el["Si_sd"]) == [1.0, np.sqrt(306)]  # counting statistics
    assert list(el.columns[:8]) == ["Al_area", "Al_sd", "Si_area", "Si_sd", "Ca_area", "Ca_sd", "Fe_area", "Fe_sd"]
    assert list(el["coh_area"]) == [6812, 9117] and list(el["scatter_area"]) == [20427, 26778]
    assert list(el["chi2"]) == [1.26, 1.57] and list(el["throughput_cps"]) == [22415, 38370]
    folder = tmp_path / "WV17-2-D1"
    folder.mkdir()
    (folder / "result.txt").write_text(ITRAX)
    assert set(read_element_tables(folder / "result.txt")[0]["core"]) == {"WV17-2-D1"}  # result.txt: its folder
    assert set(read_element_tables(folder / "result.txt", core="CD166-19")[0]["core"]) == {"CD166-19"}


def frames(n=3):
    meta = pd.DataFrame({"core": ["A-1", "A-1", "B 2"][:n], "depth_mm": [10.0, 20.5, 1234.25][:n],
                         "position_mm": [10.0, 20.5, 34.25][:n], "kv": 10.0, "live_time_s": 10.0, "current_ma": 0.15,
                         "filter": "No-Filter", "date": "03-14-2021 10:00:00", "slit_dc_mm": 10.0, "slit_cc_mm": 12.0})
    rng = np.random.default_rng(0)
    el = pd.DataFrame({"Al_area": rng.normal(100, 50, n), "Al_sd": rng.uniform(1, 9, n),
                       "Ca_area": [1e6 / 3, -2.0, 0.0][:n], "Ca_sd": [577.35, 1.0, 1.0][:n],
                       "Ba_area": rng.normal(5, 9, n), "Ba_sd": [3.0] * n,  # negative: an absent element
                       "coh_area": rng.uniform(1e3, 2e3, n), "coh_sd": [40.0] * n,
                       "scatter_area": rng.uniform(1e4, 2e4, n), "scatter_sd": [120.0] * n,
                       "chi2": [1.1, 0.9, 2.0][:n], "throughput_cps": [4.2e4, 4.1e4, 4.3e4][:n]})
    return meta, el


@pytest.mark.parametrize("layout", ["baxil", "coremax"])
def test_writer_round_trip(tmp_path, layout):
    meta, el = frames()
    path = write_element_table(meta, el, tmp_path / f"elements-{layout}.csv", layout)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written in place atomically, nothing left beside
    back, el2, skipped = read_element_tables(path, kv=10)
    pd.testing.assert_frame_equal(el2, el, check_dtype=False)  # the same numbers, bit for bit
    assert list(back["core"]) == list(meta["core"]) and list(back["depth_mm"]) == list(meta["depth_mm"])
    for c in ("position_mm", "kv", "live_time_s", "current_ma", "slit_dc_mm", "slit_cc_mm"):
        assert back[c].tolist() == pytest.approx(meta[c].tolist()), c
    assert list(back["date"]) == list(meta["date"]) and skipped == []
    assert back["scanner"][0] == "unknown-head | 0.15 mA | 10 s | No-Filter | slit 12"
    if layout == "baxil":
        header = path.read_text().splitlines()[0]
        assert header.startswith("Spectrum,Sample,User,Live time,Real time,Excitation,Throughput,Al-Ka Chi2,Al-Ka Area")
        assert "Ba-La Area" in header and "Rh-La-Coh AreaStd" in header and "Rh-La-Inc cpsStd" in header
    with pytest.raises(UserError, match="Unknown element table layout 'xls'"):
        write_element_table(meta, el, tmp_path / "x.csv", "xls")


def test_several_tables_and_their_duplicates(tmp_path):
    meta, el = frames()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    one = write_element_table(meta.iloc[:2], el.iloc[:2], tmp_path / "a" / "t.csv")
    two = write_element_table(meta.iloc[2:], el.iloc[2:], tmp_path / "b" / "t.csv")
    m, e, _ = read_element_tables([one, two])
    assert list(m["core"]) == ["A-1", "A-1", "B 2"] and m["source_file"].is_unique and str(two) in m["source_file"][2]
    with pytest.raises(UserError, match=r"list core A-1 at 10 mm, 10 kV, more than once \(.*t.csv#1 and .*t.csv#1\)"):
        read_element_tables([one, one])


def write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_bad_tables_end_in_one_sentence_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="The element table 'nope.csv' does not exist"):
        read_element_tables("nope.csv")
    f = write(tmp_path, "text.csv", "core,depth_mm,Ca_area,Ca_sd\nA,10,12,3\nA,20,lots,3\n")
    with pytest.raises(UserError, match=r"text.csv, row 2, column 'Ca_area': 'lots' is not a number"):
        read_element_tables(f)
    f = write(tmp_path, "empty.csv", "core,depth_mm,Ca_area\nA,10,12\nA,20,\n")
    with pytest.raises(UserError, match=r"empty.csv, row 2, column 'Ca_area': the area is empty or not finite"):
        read_element_tables(f)
    f = write(tmp_path, "inf.csv", "core,depth_mm,Ca_area\nA,10,inf\n")
    with pytest.raises(UserError, match=r"inf.csv, row 1, column 'Ca_area': the area is empty or not finite"):
        read_element_tables(f)
    f = write(tmp_path, "none.csv", "core,depth_mm,calcium,iron\nA,10,12,3\n")
    with pytest.raises(UserError, match=r"No element columns found in .*none.csv: looked for `<El> Area`.*ITRAX"):
        read_element_tables(f)
    f = write(tmp_path, "dup.csv", "core;depth_mm;Ca Area\nA;10;1\nA;10,0;2\n")
    with pytest.raises(UserError, match=r"core A at 10 mm more than once \(dup.csv#1 and dup.csv#2\)"):
        read_element_tables(f)
    f = write(tmp_path, "nodepth.csv", "core,Ca Area\nA,1\n")
    with pytest.raises(UserError, match=r"nodepth.csv, row 1: no depth .*add a depth_mm column"):
        read_element_tables(f)
    f = write(tmp_path, "nocore.csv", "depth_mm,Ca Area\n10,1\n")
    with pytest.raises(UserError, match=r"nocore.csv, row 1: no core name"):
        read_element_tables(f)
    f = write(tmp_path, "kv.csv", "core,depth_mm,kv,Ca Area\nA,10,30,1\n")
    with pytest.raises(UserError, match=r"No rows left in .*kv.csv at 10 kV"):
        read_element_tables(f, kv=10)
    f = write(tmp_path, "prose.txt", "just a note\nwithout columns\n")
    with pytest.raises(UserError, match=r"prose.txt has no row of column names"):
        read_element_tables(f)


def stub_fit(counts, meta, kv):
    """A stand-in for coremax.data.elements.fit_elements: window sums (keV ~ 0.02 * channel)."""
    w = lambda lo, hi: counts[:, int(lo / 0.02):int(hi / 0.02)].sum(1).astype(float)  # noqa: E731
    out = {"Ca_area": w(3.55, 3.83), "Fe_area": w(6.25, 6.55), "coh_area": w(2.6, 2.8), "scatter_area": w(2.4, 2.6)}
    out = {**out, **{k.replace("area", "sd"): np.sqrt(np.maximum(v, 1)) for k, v in out.items()}}
    return pd.DataFrame({**out, "chi2": 1.0, "throughput_cps": counts.sum(1) / meta["live_time_s"]}, index=meta.index)


def fit_module(monkeypatch, fit):
    """Make `fit` coremax.data.elements.fit_elements for this test (a stand-in module while there is none)."""
    try:
        import coremax.data.elements as module
    except ImportError:
        module = types.ModuleType("coremax.data.elements")
        monkeypatch.setitem(sys.modules, "coremax.data.elements", module)
    monkeypatch.setattr(module, "fit_elements", fit, raising=False)


ARGS = ["--seed", "1", "--cores", "2", "--spacing-mm", "50", "--workers", "1"]


def test_simulate_elements_writes_one_row_per_spectrum(tmp_path, monkeypatch):
    fit_module(monkeypatch, stub_fit)
    simulate_main(["--out", str(tmp_path / "with"), *ARGS, "--elements"])
    simulate_main(["--out", str(tmp_path / "without"), *ARGS])
    files = lambda d: sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "with") == sorted(files(tmp_path / "without") + [Path("elements.csv")])
    for f in files(tmp_path / "without"):  # without --elements: the very same archive, nothing new
        assert (tmp_path / "with" / f).read_bytes() == (tmp_path / "without" / f).read_bytes()
    meta, counts, _ = read_folder(tmp_path / "with" / "raw", 10.0, 2048, "fail", 1)
    back, el, skipped = read_element_tables(tmp_path / "with" / "elements.csv", kv=10)
    assert len(back) == len(meta) == len(counts) and skipped == []
    assert list(back["core"]) == list(meta["core"])
    assert back["depth_mm"].tolist() == pytest.approx(meta["depth_mm"].tolist())
    expected = stub_fit(counts, meta, 10.0)
    assert el["Ca_area"].tolist() == expected["Ca_area"].tolist() and (el["Ca_area"] > 0).all()


def test_simulate_elements_is_refused_cleanly_when_the_fit_fails(tmp_path, monkeypatch, capsys):
    def broken(counts, meta, kv):
        raise ValueError("singular matrix")

    fit_module(monkeypatch, broken)
    with pytest.raises(SystemExit) as e:
        simulate_main(["--out", str(tmp_path / "a"), *ARGS, "--elements"])
    assert e.value.code == 2 and "element fit failed on the 10 kV spectra" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*elements*")) and (tmp_path / "a" / "manifest.toml").is_file()
    fit_module(monkeypatch, lambda counts, meta, kv: stub_fit(counts, meta, kv).iloc[:-1])  # a row short
    with pytest.raises(SystemExit):
        simulate_main(["--out", str(tmp_path / "b"), *ARGS, "--elements"])
    assert "did not return one row" in capsys.readouterr().err and not list(tmp_path.rglob("*elements*"))


def test_simulate_elements_with_the_real_fit(tmp_path):
    pytest.importorskip("coremax.data.elements")
    simulate_main(["--out", str(tmp_path / "a"), *ARGS, "--elements"])
    meta, _, _ = read_folder(tmp_path / "a" / "raw", 10.0, 2048, "fail", 1)
    back, el, _ = read_element_tables(tmp_path / "a" / "elements.csv", kv=10)
    assert list(back["core"]) == list(meta["core"])
    assert back["depth_mm"].tolist() == pytest.approx(meta["depth_mm"].tolist())
    assert el.filter(like="_area").notna().any().any()
