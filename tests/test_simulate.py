"""The synthetic scanner: line positions, intensities, scatter, counting statistics, archive layout."""

import numpy as np
import pandas as pd
import pytest
import xraylib as xrl

from coremax.data.simulate import (LABELLED_HEADS, SCANNERS, channel_energies, element_fractions, simulate_archive,
                                   simulate_spectra)
from coremax.data.spe import read_spe
from coremax.errors import UserError

SCANNER = SCANNERS[0]


def composition(caco3=40.0, porosity=0.6, n=1):
    terr = 100 - caco3 - 5 - 0.5 * 1.9 - 0.3 - 0.1
    return pd.DataFrame({"CaCO3": [caco3] * n, "TOC": [0.5] * n, "opal": [5.0] * n, "pyrite": [0.3] * n,
                         "barite": [0.1] * n, "terrigenous": [terr] * n, "porosity": [porosity] * n})


def expected(comp, kv=10.0, live=None, scanner=SCANNER):
    """Expected counts (no Poisson noise) of each composition row."""
    w = element_fractions(comp, "north-atlantic")
    return simulate_spectra(w, kv, scanner, np.random.default_rng(0), live_time_s=live, poisson=False)


def channel_of(energy, scanner=SCANNER):
    return int(np.argmin(abs(channel_energies(scanner) - energy)))


def window_sum(s, lo, hi, scanner=SCANNER):
    return s[..., channel_of(lo, scanner):channel_of(hi, scanner) + 1].sum(-1)


@pytest.mark.parametrize("scanner", SCANNERS)
def test_ca_k_alpha_peak_sits_at_3_69_kev_in_channels(scanner):
    ca_ka = xrl.LineEnergy(20, xrl.KL3_LINE)
    assert ca_ka == pytest.approx(3.69, abs=0.005)
    s = expected(composition(60.0), scanner=scanner)[0]
    c = (3.69 - scanner.offset_kev) / scanner.gain_kev  # the calibration's channel for 3.69 keV
    lo = int(c) - 15
    peak = lo + np.argmax(s[lo:lo + 31])
    assert abs(peak + 0.5 - c) <= 1.0
    assert s[peak] > 5 * s[lo]  # a real peak over the background


def test_ca_area_grows_with_caco3_and_detrital_ca_remains():
    comp = pd.concat([composition(c) for c in (0.0, 10.0, 30.0, 50.0, 70.0)], ignore_index=True)
    area = window_sum(expected(comp), 3.55, 3.83)
    assert np.all(np.diff(area) > 0) and area[-1] > 2 * area[1]
    assert area[0] > 0.02 * area[-1]  # detrital Ca (and sea salt) without carbonate


def test_compton_to_rayleigh_ratio_rises_with_water_content():
    # At 30 kV the tube's Rh K-alpha line (20.2 keV) is excited; at 90 degrees its Compton peak lies at ~19.4 keV.
    comp = pd.concat([composition(40.0, p) for p in (0.4, 0.6, 0.8)], ignore_index=True)
    s = expected(comp, kv=30.0)
    compton = window_sum(s, 19.15, 19.7)
    rayleigh = window_sum(s, 20.05, 20.4)
    assert np.all(np.diff(compton / rayleigh) > 0)
    assert np.all(rayleigh > 0) and np.all(compton > 0)


def test_nothing_above_the_tube_voltage():
    s = expected(composition(), kv=10.0)[0]
    assert not s[channel_of(11.5):].any() and s[:channel_of(10.0)].sum() > 0


def test_counts_scale_with_live_time_and_are_poisson():
    a, b = expected(composition(), live=10.0), expected(composition(), live=20.0)
    assert np.allclose(b, 2 * a)
    w = element_fractions(composition(n=200), "north-atlantic")
    rng = np.random.default_rng(1)
    short = simulate_spectra(w, 10.0, SCANNER, rng, live_time_s=10.0).sum(1)
    long = simulate_spectra(w, 10.0, SCANNER, rng, live_time_s=20.0).sum(1)
    assert long.mean() / short.mean() == pytest.approx(2.0, rel=0.01)
    assert short.var() == pytest.approx(short.mean(), rel=0.3)  # Poisson: variance = mean


def test_archive_is_deterministic_by_seed_and_complete(tmp_path):
    a = simulate_archive(tmp_path / "a", seed=3, cores=2, spacing_mm=100.0, workers=1)
    simulate_archive(tmp_path / "b", seed=3, cores=2, spacing_mm=100.0, workers=2)
    files = sorted((tmp_path / "a" / "raw").rglob("*.spe"))
    assert len(files) == a["spectra"] > 0
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    truth = pd.read_csv(tmp_path / "a" / "truth.csv")
    bulk = pd.read_csv(tmp_path / "a" / "bulk.csv")
    assert {"CaCO3", "TOC", "porosity", "source_file", "scanner"} <= set(truth.columns) and len(truth) == len(files)
    assert bulk["CaCO3"].between(0, 100).all() and set(bulk["core"]) <= set(truth["core"])
    assert a["test_cores"] and set(a["test_cores"]) <= set(truth["core"])
    meta, counts = read_spe(files[0])
    assert meta["kv"] == 10 and counts.sum() == pytest.approx(meta["total_cps"] * meta["live_time_s"], rel=1e-3)
    c = simulate_archive(tmp_path / "c", seed=4, cores=2, spacing_mm=100.0, workers=1)
    assert c["spectra"] != a["spectra"] or pd.read_csv(tmp_path / "c" / "truth.csv")["CaCO3"].ne(truth["CaCO3"]).any()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        simulate_archive(tmp_path / "a", seed=3, cores=2, spacing_mm=100.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary folders left


def test_default_archive_holds_out_a_core_of_every_region_and_scanner(tmp_path):
    m = simulate_archive(tmp_path / "a", cores=12, spacing_mm=400.0, workers=2)
    test = m["test_cores"]
    assert {m["core_regions"][c] for c in test} == set(m["core_regions"].values())
    assert {m["core_scanners"][c] for c in test} == {s.head for s in SCANNERS[:LABELLED_HEADS]}
