"""Classical baselines on fabricated Poisson spectra whose targets follow a few Gaussian peak areas."""

import pickle

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from sklearn.preprocessing import StandardScaler

from coremax.errors import UserError
from coremax.baselines import load_baseline, make_baseline
from coremax.baselines.nmf_svr import NmfSvr
from coremax.baselines.pls import Pls
from coremax.stats.metrics import regression_metrics

L = 256
TARGETS = ["CaCO3", "TOC"]
SMALL_SVR_GRID = dict(C=(1.0, 100.0), gamma=(0.1, 1.0), epsilon=(0.1,))


def spectra(n: int, seed: int):
    """Poisson spectra: a decaying background plus four peaks with random areas and a random count rate.

    CaCO3 follows the ratio of the first two peak areas (nonlinear), TOC the third area (linear).
    """
    rng = np.random.default_rng(seed)
    ch = np.arange(L)
    areas = rng.uniform(0.2, 1.0, size=(n, 4))
    lam = np.broadcast_to(15 * np.exp(-ch / 80.0) + 2, (n, L)).copy()
    for k, c in enumerate([40, 70, 110, 160]):
        lam += areas[:, [k]] * 200 * np.exp(-0.5 * ((ch - c) / 4.0) ** 2)
    x = rng.poisson(lam * rng.uniform(0.7, 1.3, size=(n, 1))).astype(float)
    y = np.column_stack([80 * areas[:, 0] / (areas[:, 0] + areas[:, 1]) + rng.normal(0, 1.0, n),
                         1 + 4 * areas[:, 2] + rng.normal(0, 0.1, n)])
    return x, y


@pytest.fixture(scope="module")
def data():
    x_tr, y_tr = spectra(300, 0)
    x_va, y_va = spectra(100, 1)
    x_te, y_te = spectra(200, 2)
    return x_tr, y_tr, x_va, y_va, x_te, y_te


@pytest.fixture(scope="module")
def fitted(data):
    x_tr, y_tr, x_va, y_va, _, _ = data
    return {"nmf_svr": make_baseline("nmf_svr", {"nmf_svr": {"n_components": 6}}).fit(x_tr, y_tr, x_va, y_va, TARGETS),
            "pls": make_baseline("pls").fit(x_tr, y_tr, x_va, y_va, TARGETS)}


@pytest.mark.parametrize("method", ["nmf_svr", "pls"])
def test_baselines_learn_peak_targets(fitted, data, method):
    x_te, y_te = data[4], data[5]
    pred = fitted[method].predict(x_te)
    assert pred.shape == (len(x_te), 2)
    for j in range(2):
        assert regression_metrics(y_te[:, j], pred[:, j])["r2"] > 0.8
    sel = fitted[method].selected_params()
    assert set(sel) == set(TARGETS)
    assert all(isinstance(v, (int, float, str)) and not isinstance(v, np.generic)
               for params in sel.values() for v in params.values())


def _pls_by_hand(x_tr, y, x_va, y_va, ks):
    """The PLS pipeline written out: standardised log1p counts, one PLS per k, RMSE on measured val rows."""
    sc = StandardScaler().fit(np.log1p(x_tr))
    f_tr, f_va = sc.transform(np.log1p(x_tr)), sc.transform(np.log1p(x_va))
    tr, va = ~np.isnan(y), ~np.isnan(y_va)
    models = {k: PLSRegression(k, scale=False).fit(f_tr[tr], y[tr]) for k in ks}
    rmse = {k: float(np.sqrt(np.mean((np.ravel(m.predict(f_va[va])) - y_va[va]) ** 2))) for k, m in models.items()}
    return rmse, models, sc


def test_pls_choice_is_argmin_of_val_error_and_ignores_nan_rows(data):
    x_tr, y_tr, x_va, y_va, x_te, _ = data
    y_tr, y_va = y_tr.copy(), y_va.copy()
    rng = np.random.default_rng(5)
    y_tr[rng.random(len(y_tr)) < 0.3, 0] = np.nan
    y_va[rng.random(len(y_va)) < 0.3, 0] = np.nan
    ks = (1, 2, 4, 8, 16)
    b = Pls(components=ks).fit(x_tr, y_tr, x_va, y_va, TARGETS)
    rmse, models, sc = _pls_by_hand(x_tr, y_tr[:, 0], x_va, y_va[:, 0], ks)
    best = min(rmse, key=rmse.get)
    assert b.selected_params()["CaCO3"]["n_components"] == best
    assert b.selected_params()["CaCO3"]["val_rmse"] == pytest.approx(rmse[best])
    expected = np.ravel(models[best].predict(sc.transform(np.log1p(x_te))))
    np.testing.assert_allclose(b.predict(x_te)[:, 0], expected, rtol=1e-8, atol=1e-8)


def test_svr_choice_follows_the_validation_rows_only(data):
    x_tr, y_tr, x_va, y_va, _, _ = data
    real = NmfSvr(n_components=6, **SMALL_SVR_GRID).fit(x_tr, y_tr, x_va, y_va, TARGETS)
    # same train rows; validation labels replaced by a constant: the flattest model (small C) must now win
    flat = NmfSvr(n_components=6, **SMALL_SVR_GRID).fit(x_tr, y_tr, x_va, np.full_like(y_va, y_tr[:, 0].mean()),
                                                        TARGETS)
    assert real.selected_params()["CaCO3"]["C"] == 100.0
    assert flat.selected_params()["CaCO3"]["C"] == 1.0
    # the reported validation error is that of the kept model
    pred = real.predict(x_va)[:, 0]
    assert real.selected_params()["CaCO3"]["val_rmse"] == pytest.approx(np.sqrt(np.mean((pred - y_va[:, 0]) ** 2)))


def test_nmf_svr_nan_rows_and_width_check(data):
    x_tr, y_tr, x_va, y_va, x_te, y_te = data
    y_tr = y_tr.copy()
    y_tr[::3, 1] = np.nan
    b = NmfSvr(n_components=6, **SMALL_SVR_GRID).fit(x_tr[:, :200], y_tr, x_va[:, :200], y_va, TARGETS)
    pred = b.predict(x_te[:, :200])
    assert np.isfinite(pred).all()
    assert regression_metrics(y_te[:, 1], pred[:, 1])["r2"] > 0.8
    with pytest.raises(UserError, match="channels"):
        b.predict(x_te[:, :150])


def test_target_without_validation_labels_is_a_user_error(data):
    x_tr, y_tr, x_va, y_va, _, _ = data
    y_va = y_va.copy()
    y_va[:, 1] = np.nan
    with pytest.raises(UserError, match="TOC"):
        Pls(components=(2,)).fit(x_tr, y_tr, x_va, y_va, TARGETS)


def test_unknown_method_names_the_config_key():
    with pytest.raises(UserError, match=r"baseline\.method.*nmf_svr.*pls"):
        make_baseline("random_forest")


@pytest.mark.parametrize("method", ["nmf_svr", "pls"])
def test_save_load_round_trip(fitted, data, tmp_path, method):
    model = fitted[method]
    path = model.save(tmp_path / "exp" / "baseline.skops")
    assert [p.name for p in path.parent.iterdir()] == ["baseline.skops"]  # no temp file left behind
    loaded = load_baseline(tmp_path, "exp/baseline.skops")
    assert type(loaded) is type(model) and loaded.targets == TARGETS
    np.testing.assert_array_equal(loaded.predict(data[4]), model.predict(data[4]))
    assert loaded.selected_params() == model.selected_params()


def test_load_refuses_outside_root_missing_foreign_and_code_carrying_files(fitted, tmp_path):
    import skops.io

    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    fitted["pls"].save(outside / "baseline.skops")
    with pytest.raises(UserError, match="outside the data root"):
        load_baseline(root, outside / "baseline.skops")
    with pytest.raises(UserError, match="outside the data root"):
        Pls.load(root, "../elsewhere/baseline.skops")
    with pytest.raises(UserError, match="does not exist"):
        load_baseline(root, "missing.skops")
    (root / "old.pkl").write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(UserError, match="old pickle format"):
        load_baseline(root, "old.skops")
    (root / "junk.skops").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot be read"):
        load_baseline(root, "junk.skops")
    skops.io.dump({"not": "a model"}, root / "other.skops")
    with pytest.raises(UserError, match="does not hold"):
        load_baseline(root, "other.skops")
    skops.io.dump({"f": print}, root / "code.skops")  # a callable: skops calls it untrusted
    with pytest.raises(UserError, match="never writes"):
        load_baseline(root, "code.skops")
    fitted["pls"].save(root / "pls.skops")
    with pytest.raises(UserError, match="NmfSvr"):
        NmfSvr.load(root, "pls.skops")


def test_row_weights_count_as_repeated_rows_and_new_core_samples_weigh_what_leave_one_out_says(data):
    x_tr, y_tr, x_va, y_va, x_te, _ = data
    w = np.ones(len(x_tr))
    w[:20] = 3.0
    rep = np.r_[np.arange(len(x_tr)), np.repeat(np.arange(20), 2)]
    f = Pls()._fit_features(x_tr)  # the feature map is fitted on every row alike; the regression weighs them
    weighted = Pls()._fit_one(f, y_tr[:, 0], {"n_components": 5}, w)
    repeated = Pls()._fit_one(f[rep], y_tr[rep, 0], {"n_components": 5})
    assert np.allclose(weighted.predict(f), repeated.predict(f))
    plain = NmfSvr(6, **SMALL_SVR_GRID).fit(x_tr, y_tr, x_va, y_va, TARGETS)
    none_new = NmfSvr(6, **SMALL_SVR_GRID).fit(x_tr, y_tr, x_va, y_va, TARGETS, new_rows=np.zeros(len(x_tr), bool))
    assert np.allclose(plain.predict(x_te), none_new.predict(x_te)) and "new_core_share" not in none_new.selected["TOC"]
    # a "new core": 10 rows whose CaCO3 reads 15 wt% higher; only weighing them fits them, and leave-one-out says so
    # (the validation rows, which the shift does not fit, hold the share back from its largest value for NMF+SVR)
    y_new, new = y_tr.copy(), np.zeros(len(x_tr), bool)
    y_new[:10, 0] += 15.0
    new[:10] = True
    for make in (Pls, lambda: NmfSvr(6, **SMALL_SVR_GRID)):
        even = make().fit(x_tr, y_new, x_va, y_va, TARGETS)
        chosen = make().fit(x_tr, y_new, x_va, y_va, TARGETS, new_rows=new)
        assert chosen.selected["CaCO3"]["new_core_share"] > 0
        gap = lambda m: np.abs(m.predict(x_tr[:10])[:, 0] - y_new[:10, 0]).mean()
        assert gap(chosen) < (0.7 if make is Pls else 0.95) * gap(even), (type(chosen).__name__, gap(chosen), gap(even))
    # samples of a "new core" that say nothing (their CaCO3 is noise around the others' values): not weighed
    y_noise = y_tr.copy()
    y_noise[:10, 0] += np.random.default_rng(5).normal(0, 20, 10)
    assert Pls().fit(x_tr, y_noise, x_va, y_va, TARGETS, new_rows=new).selected["CaCO3"]["new_core_share"] == 0


def test_a_file_saved_under_the_old_module_names_still_loads(fitted, data, tmp_path):
    """Files saved before the baselines package name coremax.eval.baselines.Pls and _TargetScaled; they load
    as today's types (the file is not changed) and predict as before."""
    import io
    import json
    import zipfile

    path = fitted["pls"].save(tmp_path / "new.skops")
    out = io.BytesIO()
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            text = zin.read(item)
            if item.filename == "schema.json":
                text = text.decode().replace('"coremax.baselines.pls"', '"coremax.eval.baselines"')
                text = json.loads(text.replace('"TargetScaled"', '"_TargetScaled"').replace(
                    '"coremax.baselines.base"', '"coremax.eval.baselines"'))
                text = json.dumps(text).encode()
            zout.writestr(item, text)
    old = tmp_path / "old.skops"
    old.write_bytes(out.getvalue())
    assert b"coremax.eval.baselines" in zipfile.ZipFile(old).read("schema.json")
    loaded = load_baseline(tmp_path, "old.skops")
    np.testing.assert_array_equal(loaded.predict(data[4]), fitted["pls"].predict(data[4]))
