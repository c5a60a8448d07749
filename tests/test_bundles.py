"""Model bundles (scripts/archive.py bundle, predict.py --model): a bundle copied to a folder without the data set
predicts exactly what its experiment predicts; a damaged or changed bundle is refused in one sentence."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, train
from coremax.data.dataset import load_split
from coremax.errors import UserError
from coremax.eval.run import evaluate_experiment


def script(name, *args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def in_process(name, *args, capsys):
    """A script's entry point run in this process (no interpreter start-up): (exit status, stderr)."""
    from coremax import cli

    capsys.readouterr()
    try:
        getattr(cli, f"{name}_main")(list(map(str, args)))
        code = 0
    except SystemExit as e:
        code = e.code
    return subprocess.CompletedProcess(name, code, "", capsys.readouterr().err)


def refused(res) -> str:
    """The one-sentence refusal of a script run: exit status 2, one line, no traceback."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.stderr


@pytest.fixture(scope="module")
def new_cores(data_root, tmp_path_factory):
    """The spectra of a test core, as a lab would get them from the scanner."""
    raw = data_root / "datasets" / "external" / "synthetic" / "raw"
    core = load_split(data_root, "synthetic", "test")["core"].iloc[0]
    new = tmp_path_factory.mktemp("new") / "raw"
    for f in sorted((raw / core).rglob("*.spe")):
        (new / f.relative_to(raw)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, new / f.relative_to(raw))
    return new


@pytest.fixture(scope="module")
def baseline(data_root):
    train(data_root, "bundle-pls", "baseline", 'baseline.method="pls"')
    return "bundle-pls"


@pytest.fixture(scope="module")
def bundles(data_root, finetuned, baseline, tmp_path_factory):
    """Each experiment tested, then bundled: {name: its .coremax file}."""
    out = {}
    for name in (finetuned, baseline):
        evaluate_experiment(data_root, name)
        path = tmp_path_factory.mktemp("bundles") / f"{name}.coremax"
        res = script("archive", "bundle", "--experiment", name, "--out", path, "--data-root", data_root)
        assert res.returncode == 0, res.stderr
        out[name] = path
    return out


@pytest.mark.parametrize("which", ["finetuned", "baseline"])
def test_a_bundle_in_a_bare_folder_predicts_what_its_experiment_predicts(which, request, tmp_path, data_root,
                                                                         bundles, new_cores):
    name = request.getfixturevalue(which)
    res = script("predict", "--experiment", name, "--data-root", data_root, "--raw", new_cores,
                 "--out", tmp_path / "exp.csv")
    assert res.returncode == 0, res.stderr
    bare = tmp_path / "elsewhere"  # no data root, no experiment: the bundle alone
    bare.mkdir()
    shutil.copy(bundles[name], bare / "model.coremax")
    res = script("predict", "--model", "model.coremax", "--raw", new_cores, "--out", "p.csv", cwd=bare)
    assert res.returncode == 0, res.stderr
    assert "checks were skipped" not in res.stderr  # the bundle carries what the shift checks compare with
    assert not (bare / "data").exists()
    a, b = pd.read_csv(tmp_path / "exp.csv"), pd.read_csv(bare / "p.csv")
    cols = [c for c in a.columns if c.endswith(("_pred", "_lo", "_hi"))]
    assert len(cols) >= 6 and set(cols) <= set(b.columns)
    assert np.array_equal(a[cols].to_numpy(), b[cols].to_numpy())  # bitwise: the same numbers on CPU
    flags = ["flag_scanner", "flag_ood", "ood_distance", "core_shift_p", "flag_core_shift", "interval_calibrated"]
    pd.testing.assert_frame_equal(a[flags], b[flags], check_exact=True)  # the same checks, from the bundle
    # a core recalibrated on its lab samples: the bundle carries the correction chosen on the validation cores
    bulk = data_root / "datasets" / "external" / "synthetic" / "bulk.csv"
    runs = [script("predict", "--experiment", name, "--data-root", data_root, "--raw", new_cores, "--bulk", bulk,
                   "--out", tmp_path / "exp-bulk.csv"),
            script("predict", "--model", "model.coremax", "--raw", new_cores, "--bulk", bulk, "--out", "p-bulk.csv",
                   cwd=bare)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    a, b = pd.read_csv(tmp_path / "exp-bulk.csv"), pd.read_csv(bare / "p-bulk.csv")
    assert a["used_for_recalibration"].any()
    assert np.array_equal(a[cols].to_numpy(), b[cols].to_numpy())


@pytest.mark.parametrize("which", ["finetuned", "baseline"])
def test_the_model_card_names_the_targets_and_the_test_rmse(which, request, data_root, bundles):
    from coremax.experiment import Experiment

    name = request.getfixturevalue(which)
    with zipfile.ZipFile(bundles[name]) as z:
        card = z.read("MODEL.md").decode()
        members = set(z.namelist())
    metrics = Experiment.open(data_root, name).read_result("test-metrics")
    for t in ("CaCO3", "TOC"):
        assert f"**{t}**" in card
        rmse = metrics[(metrics["target"] == t) & (metrics["scope"] == "all")]["rmse"].iloc[0]
        assert f"| {format(rmse, '.3g')} |" in card
    assert "Intended use and limits" in card and "synthetic" in card
    weights = "baseline.skops" if which == "baseline" else "weights.safetensors"
    assert {weights, "config.toml", "provenance.toml", "calibration.json", "dataset.json", "test-metrics.csv",
            "MANIFEST.json"} <= members
    assert not any(m.endswith((".pkl", ".pth", ".pt")) for m in members)  # nothing that unpickles


def test_a_changed_or_truncated_bundle_is_refused_and_nothing_is_written(tmp_path, bundles, finetuned, new_cores,
                                                                         capsys):
    data = bundles[finetuned].read_bytes()
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0x01  # one bit of the weights
    for kind, content in (("changed", bytes(changed)), ("truncated", data[: len(data) - 100]),
                          ("foreign", b"not a bundle at all")):
        path = tmp_path / f"{kind}.coremax"
        path.write_bytes(content)
        err = refused(in_process("predict", "--model", path, "--raw", new_cores, "--out", tmp_path / f"{kind}.csv",
                                 capsys=capsys))
        assert str(path) in err
        assert not list(tmp_path.glob(f"{kind}*.csv")) and not list(tmp_path.glob(f"{kind}*.png"))


def test_a_rewritten_member_or_one_outside_the_top_level_is_refused(tmp_path, bundles, baseline):
    from coremax.bundle import load_bundle

    with zipfile.ZipFile(bundles[baseline]) as z:
        members = {n: z.read(n) for n in z.namelist()}
    calib = json.loads(members["calibration.json"])
    calib["half_widths"] = [v / 2 for v in calib["half_widths"]]  # narrower intervals, manifest left as it was
    for name, extra in (("narrow", {"calibration.json": json.dumps(calib).encode()}),
                        ("escape", {"../evil.py": b"print('hi')"})):
        path = tmp_path / f"{name}.coremax"
        with zipfile.ZipFile(path, "w") as z:
            for n, b in {**members, **extra}.items():
                z.writestr(n, b)
        with pytest.raises(UserError, match="damaged or was changed"):
            load_bundle(path)
    assert load_bundle(bundles[baseline]).predictor.targets == calib["targets"]


def test_bundle_refuses_an_existing_out(data_root, bundles, finetuned, capsys):
    existing = bundles[finetuned]
    before = existing.read_bytes()
    err = refused(in_process("archive", "bundle", "--experiment", finetuned, "--out", existing, "--data-root",
                             data_root, capsys=capsys))
    assert "exists" in err and existing.read_bytes() == before


def test_predict_takes_either_an_experiment_or_a_model(tmp_path, new_cores, capsys):
    res = in_process("predict", "--raw", new_cores, "--out", tmp_path / "p.csv", capsys=capsys)
    assert res.returncode == 2 and "--model" in res.stderr
    res = in_process("predict", "--experiment", "ft", "--model", "x.coremax", "--raw", new_cores, "--out",
                     tmp_path / "p.csv", capsys=capsys)
    assert res.returncode == 2 and "not allowed with" in res.stderr
