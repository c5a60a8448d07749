"""Shift checks (another scanner, a shifted core) and the recalibration of a new core on a few lab samples."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from coremax.data.simulate import SCANNERS, Scanner, simulate_archive
from coremax.eval.recalibrate import choose_correction, fit_correction, loo_residuals, recalibrate
from coremax.eval.shift import CoreShift, ScannerCheck

# Another instrument: the simulator's head with another detector resolution, calibration, current and window
# (efficiency curve), under a name of its own; and one that keeps head A's header but not its detector.
OTHER_HEAD = Scanner("Other scanner X (2016)", 400.0, 10.0, 0.0197, 0.020, 0.130, 50.0, 0.8)
SAME_HEADER = replace(SCANNERS[0], gain_kev=0.0203, noise_fwhm_kev=0.125, be_window_um=40.0)


def _rows(scanner, offset, gain, noise, n=4, core="C1"):
    return pd.DataFrame({"core": core, "scanner": scanner, "spectrum_length": 2048, "offset_kev": offset,
                         "gain_kev": gain, "noise_kev": noise}, index=range(n))


def test_unseen_settings_and_a_far_calibration_are_flagged_and_a_seen_one_is_not():
    train = pd.concat([_rows("head A | 1 mA", -0.010 + 0.002 * i, 0.0200, 0.114, core=f"A{i}") for i in range(3)]
                      + [_rows("head B | 0.6 mA", 0.004, 0.0199, 0.088, core="B0")], ignore_index=True)
    check = ScannerCheck.fit(train)
    seen = check(_rows("head A | 1 mA", -0.006, 0.02003, 0.1142))
    assert not seen["flag_scanner"].any()
    unseen = check(_rows("head Z | 1 mA", -0.006, 0.0200, 0.114))
    assert unseen["flag_scanner"].all() and "never seen" in unseen["scanner_reason"].iloc[0]
    far_gain = check(_rows("head A | 1 mA", -0.006, 0.0203, 0.114))  # 1.5 % off: another detector chain
    assert far_gain["flag_scanner"].all() and "gain" in far_gain["scanner_reason"].iloc[0]
    wider = check(_rows("head B | 0.6 mA", 0.004, 0.0199, 0.110))     # another resolution, same header
    assert wider["flag_scanner"].all() and "noise" in wider["scanner_reason"].iloc[0]
    other_length = check(_rows("head A | 1 mA", -0.006, 0.0200, 0.114).assign(spectrum_length=1024))
    assert other_length["flag_scanner"].all()


def test_a_shifted_core_has_a_small_p_value_and_a_core_like_the_training_ones_does_not():
    rng = np.random.default_rng(0)
    site = lambda: rng.normal(0, 0.2, 64)  # noqa: E731  every core sits a little apart
    emb = np.concatenate([rng.normal(size=(120, 64)) + site() for _ in range(6)])
    shift = CoreShift.fit(emb, np.repeat(np.arange(6), 120))
    _, p_like = shift.test(rng.normal(size=(120, 64)) + site())
    _, p_short = shift.test(rng.normal(size=(30, 64)) + site())  # a short core is not pushed away
    _, p_shifted = shift.test(rng.normal(size=(120, 64)) + site() + 0.6)
    assert p_like > 0.05 and p_short > 0.05 and p_shifted < 1e-3
    assert CoreShift.fit(emb[:240], np.repeat([0, 1], 120)) is None  # two cores: no null to speak of


def test_corrections_recover_an_exact_shift_and_the_samples_are_marked():
    pred = np.linspace(10, 60, 40)
    lab = 0.8 * pred + 12.0
    assert np.allclose(fit_correction(pred, lab, 0.0), (12.0, 0.8))
    assert np.allclose(fit_correction(pred, lab, 1.0)[1], 0.9)     # half the slope's departure from 1
    assert fit_correction(pred, lab, np.inf)[1] == 1.0
    assert np.allclose(loo_residuals(pred[:5], lab[:5], 0.0), 0, atol=1e-9)
    table = pd.DataFrame({"core": "N1", "depth_mm": np.arange(40) * 10.0, "CaCO3_pred": pred,
                          "CaCO3_lo": pred - 2, "CaCO3_hi": pred + 2, "interval_calibrated": False})
    bulk = pd.DataFrame({"core": "N1", "depth_mm": [0.0, 100.0, 200.0, 300.0, 390.0],
                         "CaCO3": lab[[0, 10, 20, 30, 39]]})
    stray = pd.DataFrame({"core": ["ZZ-9"], "depth_mm": [5.0], "CaCO3": [30.0]})  # a core not predicted
    out, report, unmatched = recalibrate(table, pd.concat([bulk, stray]), ["CaCO3"], np.array([2.0]),
                                         {"CaCO3": 0.0}, 0.1)
    assert list(unmatched["core"]) == ["ZZ-9"]
    assert np.allclose(out["CaCO3_pred"], lab)                      # the whole core corrected
    assert out["used_for_recalibration"].sum() == 5 and out["interval_calibrated"].all()
    assert np.allclose(out["CaCO3_hi"] - out["CaCO3_lo"], 4.0)     # never narrower than validation's
    assert report.loc[0, "samples"] == 5 and report.loc[0, "bias_before"] == pytest.approx(np.mean(lab[[0, 10, 20, 30, 39]] - pred[[0, 10, 20, 30, 39]]))


def test_the_correction_is_chosen_on_validation_cores():
    rng = np.random.default_rng(1)
    pred = rng.uniform(10, 60, 200)
    cores = np.repeat(["V1", "V2"], 100)
    offset_only = pred + np.where(cores == "V1", 5.0, -3.0) + rng.normal(0, 2, 200)
    assert choose_correction(pred, offset_only, cores)[0] == np.inf
    slope = 0.6 * pred + 10 + rng.normal(0, 0.5, 200)
    assert choose_correction(pred, slope, cores)[0] == 0.0


@pytest.fixture(scope="module")
def other_scanner(tmp_path_factory):
    """Three cores scanned on another instrument (with lab samples), and three on head D."""
    root = tmp_path_factory.mktemp("scanners")
    simulate_archive(root / "other", seed=7, cores=3, spacing_mm=20.0, head=OTHER_HEAD)
    simulate_archive(root / "head-d", seed=8, cores=3, spacing_mm=20.0, head=SCANNERS[3])
    return root


def _predict(data_root, experiment, raw, out, *extra):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), "--experiment", experiment,
                          "--data-root", str(data_root), "--raw", str(raw), "--out", str(out), *extra],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return pd.read_csv(out), res.stderr


def _lab_at_spectra(table, bulk, t):
    """Each lab sample's value beside the prediction of its nearest spectrum (within 5 mm)."""
    from coremax.data.bulk import match_bulk
    lab, _, _ = match_bulk(table[["core", "depth_mm"]], bulk, 5.0)
    return lab[t].to_numpy(), table[f"{t}_pred"].to_numpy()


@pytest.fixture(scope="module")
def channels_model(data_root):
    """A calibration on the channels (PLS), which another detector's gain and resolution bias strongly."""
    from conftest import train

    train(data_root, "pls-shift", "baseline", 'baseline.method="pls"')
    return "pls-shift"


@pytest.mark.parametrize("archive", ["other", "head-d"])
def test_another_scanner_is_flagged_and_five_samples_per_core_remove_most_of_its_bias(
        tmp_path, data_root, channels_model, other_scanner, archive):
    source = other_scanner / archive
    before, warned = _predict(data_root, channels_model, source / "raw", tmp_path / "p.csv")
    assert before["flag_scanner"].mean() >= 0.9 and not before["interval_calibrated"].any()
    assert "not trained on" in warned and "--bulk" in warned
    cores = pd.read_csv(tmp_path / "p-cores.csv")
    assert set(cores["core"]) == set(before["core"]) and "shift_p" in cores.columns

    bulk = pd.read_csv(source / "bulk.csv")
    near = [np.abs(before.loc[before["core"] == c, "depth_mm"] - d).min() <= 5.0 for c, d in
            zip(bulk["core"], bulk["depth_mm"])]
    bulk = bulk[near].reset_index(drop=True)  # samples with a spectrum within --match-mm
    rng = np.random.default_rng(0)
    given = bulk.iloc[np.concatenate([rng.choice(i, 5, replace=False) for i in bulk.groupby("core").indices.values()])]
    given[["core", "depth_mm", "CaCO3", "TOC"]].to_csv(tmp_path / "given.csv", index=False)
    after, noted = _predict(data_root, channels_model, source / "raw", tmp_path / "r.csv", "--bulk",
                            tmp_path / "given.csv")
    assert after["used_for_recalibration"].sum() == len(given) and "not independent skill" in noted
    assert after["CaCO3_recalibrated"].all() and after["interval_calibrated"].any()
    held_out = bulk.drop(given.index)
    y, p0 = _lab_at_spectra(before, held_out, "CaCO3")
    _, p1 = _lab_at_spectra(after, held_out, "CaCO3")
    keep = np.isfinite(y)
    bias0, bias1 = np.mean(y[keep] - p0[keep]), np.mean(y[keep] - p1[keep])
    report = pd.read_csv(tmp_path / "r-cores.csv")
    assert abs(bias1) < abs(bias0) / 4, (bias0, bias1, report.to_string())
    assert {"method", "loo_rmse", "samples"} <= set(report.columns)


def test_held_out_cores_of_the_training_scanners_are_rarely_flagged_and_coverage_is_reported_apart(
        data_root, finetuned):
    from coremax.eval.run import evaluate_experiment
    from coremax.experiment import Experiment

    metrics = evaluate_experiment(data_root, finetuned)
    frame = Experiment.open(data_root, finetuned).read_result("test-predictions")
    assert frame["flag_scanner"].mean() <= 0.1
    assert (~frame["interval_calibrated"]).mean() <= 0.1 or frame["flag_core_shift"].all()
    scopes = set(metrics["scope"])
    assert "unflagged spectra" in scopes
    assert ("flagged spectra" in scopes) == bool((~frame["interval_calibrated"]).any())


def test_suggest_says_which_suggested_depths_come_from_another_scanner(tmp_path, data_root, channels_model,
                                                                        other_scanner):
    from coremax.suggest import suggest_raw

    table, notes = suggest_raw(data_root, channels_model, other_scanner / "other" / "raw", tmp_path / "s.csv", n=4,
                               method="uncertain")
    assert table["flag_scanner"].all() and not table["interval_calibrated"].any()
    assert any("not trained on" in n for n in notes)


def test_test_py_names_a_tested_core_of_another_scanner(data_root, channels_model, monkeypatch, capsys):
    """A test core whose spectra carry another scanner's settings: test.py says so, naming the core."""
    from coremax.cli import evaluate_main
    from coremax.data import dataset
    from coremax.experiment import Experiment

    original = dataset.load_split

    def other_scanner_test_rows(root, name, split, *a, **k):
        rows = original(root, name, split, *a, **k)
        if split == "test":
            rows = rows.assign(scanner="Other scanner X (2016) | 0.4 mA | 10 s | No-Filter | slit 12")
        return rows

    monkeypatch.setattr("coremax.eval.run.load_split", other_scanner_test_rows)
    evaluate_main(["--experiment", channels_model, "--data-root", str(data_root)])
    err = capsys.readouterr().err
    frame = Experiment.open(data_root, channels_model).read_result("test-predictions")
    assert frame["flag_scanner"].all() and "not trained on" in err and str(frame["core"].iloc[0]) in err
