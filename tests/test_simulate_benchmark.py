"""The default archive's identity and the two-voltage benchmark (synthetic-2kv): run settings, marine bromine."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from coremax.cli import simulate_main
from coremax.data.raw import read_folder
from coremax.data.simulate import (ELEMENTS, LAB_RUNS, SCANNERS, channel_energies, element_fractions, plan_archive,
                                   run_scanner, simulate_archive, simulate_core, simulate_spectra)
from coremax.io import read_toml

# sha256 over (path, sha256 of the file; truth.csv to 10 digits) of every file of a 2-core default archive (seed
# 0, 200 mm spacing), as written before the simulator was split into a package (whose file bytes gave baf86645...
# where numpy used no AVX-512): a changed default (physics, draws, names, headers, tables, manifest) changes it.
# Change it only together with the embedded archive's figures.
DEFAULT_2_CORES = "18fd194d14f0a6a8c6576806a83cb8aafe2eb624257a37ccdd5b4e2a998bfd62"


def digest(folder) -> tuple[int, str]:
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + hashlib.sha256(_content(p)).digest())
    return len(files), h.hexdigest()


def _content(path) -> bytes:
    """A file's bytes; the simulator's truth.csv to 10 significant digits: it records full-precision floats, whose
    last digits differ where numpy's AVX-512 kernels round otherwise (the .spe files and lab table do not)."""
    if path.name != "truth.csv":
        return path.read_bytes()
    return pd.read_csv(path).to_csv(index=False, float_format="%.10g").encode()


def test_the_default_archive_is_byte_for_byte_the_pinned_one(tmp_path):
    simulate_archive(tmp_path / "a", seed=0, cores=2, spacing_mm=200.0, workers=1)
    assert digest(tmp_path / "a") == (38, DEFAULT_2_CORES)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The default archive and the benchmark of the same seed and size (2 cores: north-atlantic, upwelling)."""
    root = tmp_path_factory.mktemp("bench2kv")
    simulate_archive(root / "default", seed=0, cores=2, spacing_mm=100.0, workers=1)
    simulate_main(["--benchmark", "synthetic-2kv", "--out", str(root / "2kv"), "--cores", "2", "--spacing-mm",
                   "100", "--workers", "1"])
    return root / "default", root / "2kv"


def test_the_30_kv_run_carries_the_lab_settings_in_header_and_name(pair):
    _, bench = pair
    meta, counts, skipped = read_folder(bench / "raw", kv=30, workers=1)
    setting = LAB_RUNS[30.0]
    assert not skipped and len(meta) and (meta["kv"] == 30.0).all()
    assert (meta["filter"] == "Pd-thick").all() and setting.filter == "Pd-thick"
    assert np.allclose(meta["current_ma"], setting.current_ua / 1000) and (meta["live_time_s"] == 20.0).all()
    assert meta["source_file"].str.contains(r"Run 2 at  30kV/.*  20s  30kV 1500uA Pd-thick\.spe$").all()
    low, _, _ = read_folder(bench / "raw", kv=10, workers=1)  # the 10 kV run keeps the head's own settings
    assert (low["filter"] == "No-Filter").all() and np.allclose(low["current_ma"], SCANNERS[0].current_ua / 1000)
    # both runs at every spot of every core
    key = ["core", "depth_mm"]
    assert low[key].sort_values(key).reset_index(drop=True).equals(meta[key].sort_values(key).reset_index(drop=True))
    assert counts.sum(1).min() > 0
    manifest = read_toml(bench / "manifest.toml")
    assert manifest["benchmark"] == "synthetic-2kv" and manifest["kv"] == [10.0, 30.0]
    assert manifest["runs"]["30"]["filter"] == "Pd-thick"


def test_the_pd_filter_removes_the_low_continuum_and_passes_the_rh_k_line():
    w = element_fractions(pd.DataFrame({"CaCO3": [40.0], "TOC": [0.5], "opal": [5.0], "pyrite": [0.3],
                                        "barite": [0.1], "terrigenous": [53.1], "porosity": [0.6]}), "upwelling")
    head = SCANNERS[0]
    plain = simulate_spectra(w, 30.0, head, np.random.default_rng(0), poisson=False)[0]
    filtered = run_scanner(head, 30.0, lab_runs=True)
    pd_ = simulate_spectra(w, 30.0, filtered, np.random.default_rng(0), poisson=False)[0]
    e = channel_energies(head)
    band = lambda s, lo, hi: s[(e > lo) & (e < hi)].sum()  # noqa: E731
    per_ma = filtered.current_ua * filtered.live_time_s / (head.current_ua * head.live_time_s)
    assert band(pd_, 5.0, 9.0) / per_ma < 0.01 * band(plain, 5.0, 9.0)  # Ca-Fe region: nearly no excitation
    assert band(pd_, 20.0, 20.4) / per_ma > 0.05 * band(plain, 20.0, 20.4)  # Rh K-alpha scatter passes
    assert band(pd_, 25.0, 29.0) / per_ma < 0.01 * band(plain, 25.0, 29.0)  # above the Pd K edge: absorbed
    assert run_scanner(head, 10.0, lab_runs=True) is head and run_scanner(head, 30.0, lab_runs=False) is head


def test_bromine_follows_marine_toc_in_the_benchmark_only():
    """Over three cores (one per region): the wet sample's Br follows marine TOC with marine bromine; without it
    only the pore water's sea salt carries Br. Within a low-TOC core the sea salt still dominates, as in nature."""
    br = ELEMENTS.index("Br")
    bench_br, default_br, marine, toc = [], [], [], []
    for plan in plan_archive(0, 3):
        bench = simulate_core(plan, 50.0, (10.0,), marine_bromine=True)
        default = simulate_core(plan, 50.0, (10.0,))
        t = bench["truth"]
        assert (t["TOC_marine"] <= t["TOC"]).all() and (t["TOC_marine"] > 0.3 * t["TOC"]).all()
        ratio = np.median(t["Br_organic_ppm"] / t["TOC_marine"])
        assert 30 < ratio < 160  # ~70 ppm Br per wt% marine organic carbon, with the site's scatter
        assert "TOC_marine" not in default["truth"] and t["TOC"].equals(default["truth"]["TOC"])
        bench_br += list(bench["fractions"][:, br])
        default_br += list(default["fractions"][:, br])
        marine += list(t["TOC_marine"])
        toc += list(t["TOC"])
    assert np.corrcoef(bench_br, marine)[0, 1] > 0.9
    assert abs(np.corrcoef(default_br, marine)[0, 1]) < 0.3 and abs(np.corrcoef(default_br, toc)[0, 1]) < 0.3


def test_the_benchmark_has_the_default_archive_s_cores_labels_and_test_cores(pair):
    default, bench = pair
    md, mb = read_toml(default / "manifest.toml"), read_toml(bench / "manifest.toml")
    assert mb["test_cores"] == md["test_cores"] and mb["core_regions"] == md["core_regions"]
    td, tb = pd.read_csv(default / "truth.csv"), pd.read_csv(bench / "truth.csv")
    shared = ["core", "depth_mm", "CaCO3", "TOC", "opal", "porosity", "water_film_um", "source_file"]
    assert td[shared].equals(tb[shared]) and {"TOC_marine", "Br_organic_ppm"} <= set(tb.columns)
    bd, bb = pd.read_csv(default / "bulk.csv"), pd.read_csv(bench / "bulk.csv")
    assert bd[["core", "depth_mm", "CaCO3", "TOC"]].equals(bb[["core", "depth_mm", "CaCO3", "TOC"]])
    for core in md["core_regions"]:
        assert sorted(p.name for p in (bench / "raw" / core).iterdir()) == ["Run 1 at  10kV", "Run 2 at  30kV"]


def test_the_benchmark_refuses_settings_it_sets_itself(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        simulate_main(["--benchmark", "synthetic-2kv", "--kv", "10,50", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "sets --kv" in capsys.readouterr().err and not (tmp_path / "x").exists()
