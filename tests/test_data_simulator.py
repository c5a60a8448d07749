"""The synthetic scanner's physics: line positions, intensities, scatter and counting statistics."""

import numpy as np
import pandas as pd
import pytest

from coremax.data.simulate import SCANNERS, element_fractions, simulate_archive, simulate_spectra

SCANNER = SCANNERS[0]


def composition(caco3=40.0, porosity=0.6, n=1):
    terr = 100 - caco3 - 5 - 0.5 * 1.9 - 0.3 - 0.1
    return pd.DataFrame({"CaCO3": [caco3] * n, "TOC": [0.5] * n, "opal": [5.0] * n, "pyrite": [0.3] * n,
                         "barite": [0.1] * n, "terrigenous": [terr] * n, "porosity": [porosity] * n})


def expected(comp, kv=10.0, live=None, scanner=SCANNER):
    w = element_fractions(comp, "north-atlantic")
    return simulate_spectra(w, kv, scanner, np.random.default_rng(0), live_time_s=live, poisson=False)


def channel(energy, scanner=SCANNER):
    return (energy - scanner.offset_kev) / scanner.gain_kev - 0.5


def window_sum(s, lo, hi, scanner=SCANNER):
    return s[..., int(channel(lo, scanner)):int(channel(hi, scanner)) + 1].sum(-1)


@pytest.mark.parametrize("scanner", SCANNERS)
def test_ca_k_alpha_sits_at_3_69_kev(scanner):
    s = expected(composition(60.0), scanner=scanner)[0]
    c = channel(3.69, scanner)
    lo = int(c) - 15
    peak = lo + np.argmax(s[lo:lo + 31])
    assert abs(peak - c) <= 1.0


def test_ca_area_grows_with_caco3():
    comp = pd.concat([composition(c) for c in (10.0, 30.0, 50.0, 70.0)], ignore_index=True)
    area = window_sum(expected(comp), 3.55, 3.83)
    assert np.all(np.diff(area) > 0)
    assert area[-1] > 2 * area[0]


def test_compton_to_rayleigh_ratio_rises_with_water():
    comp = pd.concat([composition(40.0, p) for p in (0.4, 0.6, 0.8)], ignore_index=True)
    s = expected(comp, kv=30.0)
    compton = window_sum(s, 19.15, 19.7)   # Rh K-alpha scattered at 90 degrees: ~19.45 keV
    rayleigh = window_sum(s, 20.05, 20.4)  # elastic at 20.22 keV
    ratio = compton / rayleigh
    assert np.all(np.diff(ratio) > 0)


def test_counts_scale_with_live_time():
    comp = composition(40.0)
    a, b = expected(comp, live=10.0), expected(comp, live=20.0)
    assert np.allclose(b, 2 * a)
    w = element_fractions(composition(40.0, n=200), "north-atlantic")
    rng = np.random.default_rng(1)
    short = simulate_spectra(w, 10.0, SCANNER, rng, live_time_s=10.0).sum(1)
    long = simulate_spectra(w, 10.0, SCANNER, rng, live_time_s=20.0).sum(1)
    assert long.mean() / short.mean() == pytest.approx(2.0, rel=0.01)
    assert short.var() == pytest.approx(short.mean(), rel=0.3)  # Poisson: variance = mean


def test_archive_is_deterministic_by_seed_and_writes_truth(tmp_path):
    a = simulate_archive(tmp_path / "a", seed=3, cores=2, spacing_mm=100.0, workers=1)
    simulate_archive(tmp_path / "b", seed=3, cores=2, spacing_mm=100.0, workers=1)
    files = sorted((tmp_path / "a" / "raw").rglob("*.spe"))
    assert len(files) == a["spectra"] > 0
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    truth = pd.read_csv(tmp_path / "a" / "truth.csv")
    bulk = pd.read_csv(tmp_path / "a" / "bulk.csv")
    assert {"CaCO3", "TOC", "porosity", "source_file"} <= set(truth.columns) and len(truth) == len(files)
    assert bulk["CaCO3"].between(0, 100).all() and bulk["TOC"].isna().any()
