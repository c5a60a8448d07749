"""The scanner labs' log-ratio calibrations (ratio, mlc, lrce) and the element-table features of nmf_svr and pls,
on constructed element tables whose log-ratio models are known."""

import tomllib

import numpy as np
import pandas as pd
import pytest

from coremax.baselines import METHODS, load_baseline, make_baseline
from coremax.baselines.base import Baseline
from coremax.data.ratios import element_table
from coremax.baselines.logratio import closed
from coremax.data.ratios import REPLACE
from coremax.baselines.lrce import Lrce
from coremax.baselines.mlc import Mlc
from coremax.baselines.ratio import Ratio
from coremax.config import CHOICES, DEFAULT_PATH
from coremax.errors import UserError
from coremax.stats.metrics import regression_metrics

PARTS = ["Al", "Si", "K", "Ca", "Ti", "Fe", "Sr", "coh", "scatter"]
LEVEL = {"Al": 2e3, "Si": 8e3, "K": 4e3, "Ca": 5e4, "Ti": 3e3, "Fe": 2e4, "Sr": 2e3, "coh": 1e4, "scatter": 2e4}


def table(n: int, seed: int):
    """An element table of n spots: log intensities spread about each part's level, times a per-spot factor (the
    water film, tube current...) that every ratio cancels; sd = sqrt(area) + 1, so nothing is below detection."""
    rng = np.random.default_rng(seed)
    logs = np.log([LEVEL[p] for p in PARTS]) + rng.normal(0, 0.5, (n, len(PARTS))) + rng.normal(0, 0.3, (n, 1))
    areas = np.exp(logs)
    cols = {}
    for k, p in enumerate(PARTS):
        cols[f"{p}_area"], cols[f"{p}_sd"] = areas[:, k], np.sqrt(areas[:, k]) + 1.0
    cols.update(chi2=rng.uniform(1, 2, n), throughput_cps=rng.uniform(2e4, 4e4, n))
    return pd.DataFrame(cols), {p: logs[:, k] for k, p in enumerate(PARTS)}


def ln_ratio(lg, a, b):
    return lg[a] - lg[b]


# mlc's truth: ln(x_j / r) = intercept + sum c_i ln(I_i) with the c_i summing to 0 (a log-contrast)
MLC_TRUTH = {"CaCO3": {"intercept": -2.4, "Ca": 1.2, "Ti": -0.7, "Fe": -0.5},
             "TOC": {"intercept": -3.0, "K": 0.4, "Fe": -0.4, "coh": 0.3, "Si": -0.3}}


def mlc_data(n, seed, noise=0.0):
    x, lg = table(n, seed)
    z = np.column_stack([t["intercept"] + sum(c * lg[p] for p, c in t.items() if p != "intercept")
                         for t in MLC_TRUTH.values()])
    z = z + np.random.default_rng(seed + 100).normal(0, noise, z.shape)
    return x, closed(z)[0], z


@pytest.fixture(scope="module")
def mlc_fitted():
    (x_tr, y_tr, _), (x_va, y_va, _) = mlc_data(200, 0), mlc_data(80, 1)
    return Mlc().fit(x_tr, y_tr, x_va, y_va, list(MLC_TRUTH))


def test_mlc_recovers_an_exact_log_contrast_and_predicts_closed_compositions(mlc_fitted):
    x_te, y_te, _ = mlc_data(100, 2)
    for t, truth in MLC_TRUTH.items():
        got = mlc_fitted.log_contrast(t)
        for name in ["intercept", *PARTS]:
            assert got[name] == pytest.approx(truth.get(name, 0.0), abs=2e-3), (t, name)
    pred = mlc_fitted.predict(x_te)
    np.testing.assert_allclose(pred, y_te, atol=1e-2)
    full = mlc_fitted.predict(x_te, remainder=True)
    assert (full >= 0).all() and (full[:, :2] <= 100).all()
    np.testing.assert_allclose(full.sum(axis=1), 100.0)
    sel = mlc_fitted.selected_params()
    assert set(sel) == set(MLC_TRUTH) and sel["CaCO3"]["model"] in ("ridge", "pls")
    assert sel["CaCO3"]["val_rmse"] < 1e-2 and sel["CaCO3"]["replaced_Ca"] == 0
    assert all(isinstance(v, (int, float, str)) and not isinstance(v, np.generic)
               for p in sel.values() for v in p.values())


def test_mlc_missing_toc_uses_the_median_and_predictions_stay_closed():
    (x_tr, y_tr, _), (x_va, y_va, _) = mlc_data(200, 0), mlc_data(80, 1)
    y_tr[np.random.default_rng(3).random(len(y_tr)) < 0.15, 1] = np.nan
    m = Mlc().fit(x_tr, y_tr, x_va, y_va, list(MLC_TRUTH))
    assert m.selected_params()["TOC"]["median_for_missing"] == pytest.approx(np.nanmedian(y_tr[:, 1]))
    x_te, y_te, _ = mlc_data(100, 2)
    full = m.predict(x_te, remainder=True)
    assert (full >= 0).all() and np.allclose(full.sum(axis=1), 100.0)
    assert regression_metrics(y_te[:, 0], full[:, 0])["r2"] > 0.99 and regression_metrics(y_te[:, 1], full[:, 1])["r2"] > 0.9


def test_mlc_interval_covers_about_its_level_on_noisy_data():
    (x_tr, y_tr, _), (x_va, y_va, _) = mlc_data(300, 0, noise=0.15), mlc_data(100, 1, noise=0.15)
    m = Mlc(cv_folds=5).fit(x_tr, y_tr, x_va, y_va, list(MLC_TRUTH))
    assert m.selected_params()["CaCO3"]["cv_sd_logratio"] == pytest.approx(0.15, rel=0.25)
    x_te, y_te, _ = mlc_data(400, 2, noise=0.15)
    lo, hi = m.predict_interval(x_te, 0.9)
    assert lo.shape == hi.shape == y_te.shape and (lo >= 0).all() and (hi <= 100).all() and (lo <= hi).all()
    cover = ((y_te >= lo) & (y_te <= hi)).mean(axis=0)
    assert ((cover > 0.8) & (cover < 0.97)).all(), cover
    with pytest.raises(UserError, match="between 0 and 1"):
        m.predict_interval(x_te, 90)


# lrce's truth: reference Ti; ln(W_j / W_Ti) = a_j ln(I_j / I_Ti) + b_j, remainder through coh
LRCE_TRUTH = {"Ca": (1.1, 1.5), "Fe": (0.8, 0.7), "K": (0.6, -0.4), "_rest": (0.9, 3.5)}
LRCE_TARGETS = ["Ca (wt%)", "Fe (wt%)", "K (wt%)", "Ti (wt%)"]


def lrce_data(n, seed):
    x, lg = table(n, seed)
    y = {el: a * ln_ratio(lg, "coh" if el == "_rest" else el, "Ti") + b for el, (a, b) in LRCE_TRUTH.items()}
    total = 1 + sum(np.exp(v) for v in y.values())
    w_ti = 100 / total
    return x, np.column_stack([w_ti * np.exp(y["Ca"]), w_ti * np.exp(y["Fe"]), w_ti * np.exp(y["K"]), w_ti])


def test_mlc_cross_validates_a_pls_of_as_many_components_as_its_rows_allow():
    rng = np.random.default_rng(0)
    f, z = rng.normal(size=(10, 11)), rng.normal(size=10)  # 10 labels: the grid goes up to 9 components
    res = Mlc(cv_folds=5)._cv_residuals(f, z, {"model": "pls", "n_components": 9}, None)
    assert np.isfinite(res).all()  # each fold (8 rows) fits at most 7


def test_lrce_recovers_the_equations_and_chooses_the_reference():
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = lrce_data(150, 0), lrce_data(60, 1), lrce_data(80, 2)
    m = make_baseline("lrce", {"lrce": {"reference": ""}}).fit(x_tr, y_tr, x_va, y_va, LRCE_TARGETS)
    assert m.ref == "Ti" and m.selected_params()["Ca (wt%)"]["reference"] == "Ti"
    for el, ab in LRCE_TRUTH.items():
        np.testing.assert_allclose(m.equations[el], ab, atol=1e-8)
    assert m.selected_params()["Ti (wt%)"]["remainder_part"] == "coh"
    np.testing.assert_allclose(m.predict(x_te), y_te, atol=1e-6)
    full = m.predict(x_te, remainder=True)
    assert (full >= 0).all() and np.allclose(full.sum(axis=1), 100.0)
    fixed = Lrce(reference="Fe").fit(x_tr, y_tr, x_va, y_va, LRCE_TARGETS)  # a worse reference, as asked
    assert fixed.ref == "Fe" and fixed.selected_params()["Ca (wt%)"]["val_rmse"] > 1e-3


def ratio_data(n, seed):
    x, lg = table(n, seed)
    rng = np.random.default_rng(seed + 50)
    caco3 = 30 + 12 * ln_ratio(lg, "Ca", "Ti") + rng.normal(0, 0.3, n)
    toc = 100 / (1 + np.exp(-(-2.5 + 0.9 * ln_ratio(lg, "K", "Fe")))) + rng.normal(0, 0.01, n)
    two = 20 + 10 * ln_ratio(lg, "Ca", "Fe") + 5 * ln_ratio(lg, "Sr", "Al") + rng.normal(0, 0.2, n)
    return x, np.column_stack([caco3, toc, two])


RATIO_TARGETS = ["CaCO3", "TOC", "Sr (wt%)"]


def test_ratio_finds_the_constructed_pair_and_scale():
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = ratio_data(200, 0), ratio_data(80, 1), ratio_data(100, 2)
    m = make_baseline("ratio", {"ratio": {"pair": "", "terms": 1}}).fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS)
    sel = m.selected_params()
    assert set(sel["CaCO3"]["pair"].split("/")) == {"Ca", "Ti"} and sel["CaCO3"]["scale"] == "wt%"
    assert abs(sel["CaCO3"]["slope"]) == pytest.approx(12, rel=0.02)
    assert set(sel["TOC"]["pair"].split("/")) == {"K", "Fe"} and sel["TOC"]["scale"] == "logit"
    assert regression_metrics(y_te[:, 0], m.predict(x_te)[:, 0])["rmse"] < 0.4
    two = Ratio(terms=2).fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS)
    s = two.selected_params()["Sr (wt%)"]
    assert {frozenset(s["pair"].split("/")), frozenset(s["pair2"].split("/"))} == {frozenset({"Ca", "Fe"}),
                                                                                   frozenset({"Sr", "Al"})}
    assert regression_metrics(y_te[:, 2], two.predict(x_te)[:, 2])["rmse"] < 0.3
    given = Ratio(pair="Ti/Ca").fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS)
    assert given.selected_params()["TOC"]["pair"] == "Ti/Ca"  # as asked, even where another pair would do better
    assert given.selected_params()["CaCO3"]["slope"] == pytest.approx(-12, rel=0.02)
    # new cores' samples: weighed as stats.weighting chooses, recorded like the other baselines
    new = np.zeros(len(x_tr), bool)
    new[:10] = True
    assert "new_core_share" in Ratio().fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS, new_rows=new).selected["CaCO3"]


def test_zero_and_negative_areas_are_replaced_by_the_rule_and_counted():
    (x_tr, y_tr), (x_va, y_va) = ratio_data(200, 0), ratio_data(80, 1)
    x_tr = x_tr.copy()
    x_tr.loc[:4, "Al_area"] = [0.0, -5.0, np.nan, 10.0, 0.0]          # all below 3 sd = 12, 10 the least positive
    x_tr.loc[:4, "Al_sd"] = [4.0, 4.0, 4.0, 4.0, np.nan]              # the last without sd: limit 10 / 2
    x_tr["Ba_area"], x_tr["Ba_sd"] = 0.0, 1.0                          # never seen: left out, and said so
    m = Ratio().fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS)
    assert m.replaced["Al"] == 5 and m.unused == ["Ba"]
    assert x_tr["Al_area"][x_tr["Al_area"] > 0].min() == 10.0
    areas = m._replaced(x_tr)[0][:6, m.parts.index("Al")]
    np.testing.assert_allclose(areas, [REPLACE * 12] * 4 + [REPLACE * 5, x_tr["Al_area"][5]])
    assert all(np.isfinite(m.predict(x_tr)).ravel())
    with_al = Ratio(pair="Al/Ca").fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS).selected_params()["CaCO3"]
    assert with_al["replaced_Al"] == 5 and with_al["unused_parts"] == "Ba"
    assert Mlc().fit(x_tr, y_tr[:, :2], x_va, y_va[:, :2], ["CaCO3", "TOC"]).selected_params()["TOC"]["replaced_Al"] == 5


def test_bad_input_ends_in_one_user_error():
    (x_tr, y_tr), (x_va, y_va) = ratio_data(60, 0), ratio_data(30, 1)
    with pytest.raises(UserError, match="'Zr'.*not a part"):
        Ratio(pair="Ca/Zr").fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS)
    with pytest.raises(UserError, match="two different parts"):
        Ratio(pair="CaTi")
    with pytest.raises(UserError, match=r"baseline\.ratio\.terms = 3 is out of range"):
        Ratio(terms=3)
    with pytest.raises(UserError, match="'d18O' is not one of the data set's contents"):
        Mlc().fit(x_tr, y_tr, x_va, y_va, ["CaCO3", "TOC", "d18O"])
    overlap = np.column_stack([y_tr[:, 0] + 40, 0.4 * y_tr[:, 0] + 10])  # CaCO3 and the Ca it holds
    with pytest.raises(UserError, match=r"CaCO3, Ca \(wt%\) add up to more than 100"):
        Mlc().fit(x_tr, overlap, x_va, overlap[:30], ["CaCO3", "Ca (wt%)"])
    with pytest.raises(UserError, match="lrce calibrates element contents such as Ca"):
        Lrce().fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS)
    (lx, ly), (lxv, lyv) = lrce_data(60, 0), lrce_data(30, 1)
    with pytest.raises(UserError, match="baseline.lrce.reference = 'Sr'"):
        Lrce(reference="Sr").fit(lx, ly, lxv, lyv, LRCE_TARGETS)
    with pytest.raises(UserError, match="no scatter part"):
        Lrce().fit(lx.drop(columns=["coh_area", "scatter_area"]), ly, lxv, lyv, LRCE_TARGETS)
    spectra_only = pd.DataFrame({"core": ["a"] * 3, "depth_mm": [1.0, 2.0, 3.0]})
    with pytest.raises(UserError, match="no element table.*scripts/preprocess.py"):
        Mlc().inputs_of(spectra_only, np.zeros((3, 8)))
    with pytest.raises(UserError, match="no element table"):
        Ratio().fit(spectra_only, np.ones((3, 1)), spectra_only, np.ones((3, 1)), ["CaCO3"])
    with pytest.raises(UserError, match="not been fitted"):
        Mlc().predict(x_va)
    two_parts = x_tr[["Ca_area", "Ca_sd", "Ti_area", "Ti_sd"]]  # terms = 2 with one pair: the one term it has
    assert Ratio(terms=2).fit(two_parts, y_tr, x_va, y_va, RATIO_TARGETS).selected_params()["CaCO3"]["pair"] == "Ca/Ti"


def test_inputs_helper_gives_counts_to_spectra_baselines_and_the_table_to_element_ones():
    frame, _ = table(5, 0)
    frame["core"] = "a"
    counts = np.ones((5, 16))
    assert Baseline.inputs == "spectra" and make_baseline("pls").inputs_of(frame, counts) is counts
    got = make_baseline("ratio").inputs_of(frame, counts)
    assert "core" not in got.columns and {"Ca_area", "Ca_sd", "chi2", "throughput_cps"} <= set(got.columns)
    assert list(element_table(frame).columns) == list(got.columns)
    assert make_baseline("nmf_svr", {"features": "elements"}).inputs_of(frame, counts).shape == got.shape
    with pytest.raises(UserError, match="baseline.features"):
        make_baseline("pls", {"features": "peaks"})


@pytest.mark.parametrize("method", ["nmf_svr", "pls"])
def test_spectra_baselines_fit_and_predict_the_element_table(method):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = ratio_data(200, 0), ratio_data(80, 1), ratio_data(100, 2)
    extra = dict(C=(10.0, 100.0), gamma=(0.1, 1.0), epsilon=(0.05,)) if method == "nmf_svr" else {}
    m = METHODS[method](features="elements", **extra)
    m.fit(x_tr, y_tr[:, :1], x_va, y_va[:, :1], ["CaCO3"])
    assert m.inputs == "elements" and m.parts == PARTS
    assert regression_metrics(y_te[:, 0], m.predict(x_te)[:, 0])["r2"] > 0.7
    assert len(m.feature_space(x_te)) == len(x_te)
    with pytest.raises(UserError, match="lacks Ca_area"):
        m.predict(x_te.drop(columns=["Ca_area"]))


def test_save_load_round_trip(mlc_fitted, tmp_path):
    (x_tr, y_tr), (x_va, y_va), (x_te, _) = ratio_data(120, 0), ratio_data(50, 1), ratio_data(40, 2)
    (lx, ly), (lxv, lyv) = lrce_data(80, 0), lrce_data(30, 1)
    models = {"ratio": (Ratio(terms=2).fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS), x_te),
              "mlc": (mlc_fitted, x_te), "mlc_ridge": (Mlc(components=()).fit(x_tr, y_tr[:, :2], x_va, y_va[:, :2],
                                                                           ["CaCO3", "TOC"]), x_te),
              "lrce": (Lrce().fit(lx, ly, lxv, lyv, LRCE_TARGETS), lx),
              "pls": (METHODS["pls"](features="elements").fit(x_tr, y_tr, x_va, y_va, RATIO_TARGETS), x_te)}
    for name, (model, x) in models.items():
        model.save(tmp_path / name / "baseline.skops")
        loaded = load_baseline(tmp_path, f"{name}/baseline.skops")
        assert type(loaded) is type(model) and loaded.selected_params() == model.selected_params()
        assert all(isinstance(v, (int, float, str)) and not isinstance(v, np.generic)
                   for p in model.selected_params().values() for v in p.values()), name
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
        np.testing.assert_array_equal(loaded.feature_space(x), model.feature_space(x))
    assert models["mlc_ridge"][0].selected_params()["CaCO3"]["model"] == "ridge"
    lo, hi = models["mlc_ridge"][0].predict_interval(x_te)
    again = load_baseline(tmp_path, "mlc_ridge/baseline.skops").predict_interval(x_te)
    np.testing.assert_array_equal(lo, again[0])
    np.testing.assert_array_equal(hi, again[1])


def test_every_declared_key_is_its_methods_or_a_shared_one():
    """A method's config_keys are its own [baseline.<method>] sub-section (all of it) and shared [baseline] keys;
    the whole [baseline] section of the default file builds it, and so do the schema's defaults alone."""
    section = tomllib.loads(DEFAULT_PATH.read_text())["baseline"]
    shared = {k for k, v in section.items() if not isinstance(v, dict)}
    for name in ("ratio", "mlc", "lrce", "nmf_svr", "pls"):
        own = set(section.get(name, {}))
        assert own <= set(METHODS[name].config_keys) <= own | shared, name
        assert make_baseline(name, section).method == METHODS[name]().method == name
    assert make_baseline("ratio", {"ratio": {"pair": "Ca/Ti"}}).pair == ("Ca", "Ti")
    assert Ratio().terms == 1 and Mlc().cv_folds == 5  # a constructor's config keys default to the schema's
    with pytest.raises(UserError, match="baseline.pair .*now called baseline.ratio.pair"):
        make_baseline("ratio", {"pair": "Ca/Ti"})
    assert set(CHOICES["baseline.features"]) == {"spectra", "elements"}
