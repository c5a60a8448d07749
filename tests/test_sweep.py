"""Sweeps: every point an ordinary experiment, a summary over seeds, re-runs train only what is missing."""

import shutil

import pandas as pd
import pytest

from coremax import config as configlib
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.paths import experiment_dir
from coremax.sweep import SWEEP_DEFAULTS, points, run_sweep

FAST = ['runtime.device="cpu"', "model.patch_size=64", "optim.batch_size=32", "optim.epochs=1",
        'experiment.stage="finetune"', "runtime.log_interval_s=0.0", "data.max_labels=30"]


def sweep_config(tmp_path, **extra) -> dict:
    path = tmp_path / "sweep.toml"
    path.write_text('[sweep]\nname = "sw"\nseeds = [0, 1]\n[sweep.grid]\n"optim.blr" = [1e-4, 1e-3]\n'
                    '"model.drop_path" = [0.0, 0.1]\n')
    overrides = [f"sweep.overrides={configlib._toml_value(FAST)}"] + [f"sweep.{k}={v}" for k, v in extra.items()]
    return configlib.resolve(path, overrides, default_file=SWEEP_DEFAULTS)["sweep"]


def test_sweep_runs_every_point_resumes_and_skips(tmp_path, data_root):
    sweep = sweep_config(tmp_path)
    lines = []
    summary = run_sweep(data_root, sweep, jobs=2, log=lines.append)
    names = [f"sw-p{p:02d}-s{s}" for p in range(4) for s in (0, 1)]
    assert sorted(line.split(":")[0] for line in lines) == sorted(names)
    assert all(Experiment.open(data_root, n).provenance()["status"] == "completed" for n in names)
    assert len(summary) == 4 and (summary["n"] == 2).all()
    assert {"val_rmse_CaCO3", "val_rmse_CaCO3_sd", "optim.blr", "model.drop_path"} <= set(summary.columns)
    assert summary["val_rmse_CaCO3_sd"].notna().all()
    assert Experiment.open(data_root, "sw-p03-s1").config()["optim"]["blr"] == 1e-3
    results = experiment_dir(data_root, "sw") / "results"
    assert (results / "sweep.csv").is_file() and (results / "sweep.png").is_file()

    # Re-running trains nothing new.
    lines.clear()
    again = run_sweep(data_root, sweep, log=lines.append)
    assert all(line.endswith("skipped") for line in lines)
    pd.testing.assert_frame_equal(again, summary)

    # A run lost and a run cut short (status left "running" as after kill -9): only those two are redone.
    shutil.rmtree(experiment_dir(data_root, "sw-p00-s1"))
    Experiment.open(data_root, "sw-p02-s0").set_status("running")
    lines.clear()
    run_sweep(data_root, sweep, log=lines.append)
    done = {line.split(": ")[0]: line.split(": ")[1] for line in lines}
    assert done.pop("sw-p00-s1") == "trained" and done.pop("sw-p02-s0") == "resumed"
    assert set(done.values()) == {"skipped"}

    # A setting changed under the same name (here one not swept) would put the old runs in the new table:
    # refused naming the run and the key, before anything trains; how a run executes may change.
    before = sorted(p.name for p in (data_root / "experiments").iterdir())
    changed = {**sweep, "overrides": FAST + ["optim.weight_decay=0.1"]}
    with pytest.raises(UserError, match="sw-p00-s0.*optim.weight_decay = 0.05.*0.1.*new sweep.name"):
        run_sweep(data_root, changed)
    assert sorted(p.name for p in (data_root / "experiments").iterdir()) == before
    lines.clear()
    run_sweep(data_root, {**sweep, "overrides": FAST + ["runtime.log_interval_s=5.0"]}, log=lines.append)
    assert all(line.endswith("skipped") for line in lines)


def test_random_points_are_seeded_and_typos_refused(tmp_path, data_root):
    sweep = sweep_config(tmp_path, samples=3, sample_seed=7)
    sweep["grid"] = {}
    sweep["random"] = {"optim.blr": [1e-5, 1e-3], "optim.epochs": [1, 3]}
    a, b = points(sweep), points(sweep)
    assert a == b and len(a) == 3
    assert all(1e-5 <= p["values"]["optim.blr"] <= 1e-3 and isinstance(p["values"]["optim.epochs"], int) for p in a)
    sweep["grid"] = {"optim.blrr": [1e-3]}
    with pytest.raises(UserError, match="did you mean optim.blr"):
        run_sweep(data_root, sweep)
    assert not experiment_dir(data_root, "sw-p00-s0").exists() or \
        Experiment.open(data_root, "sw-p00-s0").config()["optim"]["blr"] in (1e-4, 1e-3)


def optuna_config(tmp_path, **extra) -> dict:
    sweep = sweep_config(tmp_path, sampler='"optuna"', samples=3, sample_seed=5, **extra)
    sweep["grid"] = {"model.drop_path": [0.0, 0.1]}
    sweep["random"] = {"optim.blr": [1e-5, 1e-3]}
    return sweep


def test_optuna_sweep_proposes_points_and_a_rerun_replays_them(tmp_path, data_root):
    sweep = optuna_config(tmp_path, name='"opt"', seeds="[0]")
    lines = []
    summary = run_sweep(data_root, sweep, log=lines.append)
    names = [f"opt-p{p:02d}-s0" for p in range(3)]
    assert [line.split(":")[0] for line in lines[:3]] == names and lines[-1].startswith("best point (validation)")
    assert len(summary) == 3 and (summary["n"] == 1).all()
    assert summary["optim.blr"].between(1e-5, 1e-3).all() and summary["model.drop_path"].isin([0.0, 0.1]).all()
    assert summary["optim.blr"].nunique() == 3  # proposed, not one default repeated
    held = Experiment.open(data_root, "opt-p01-s0").config()
    assert (held["optim"]["blr"], held["model"]["drop_path"]) == tuple(summary.loc[1, ["optim.blr", "model.drop_path"]])

    # The same seeded sampler told the same results proposes the same points: nothing trains again.
    lines.clear()
    pd.testing.assert_frame_equal(run_sweep(data_root, sweep, log=lines.append), summary)
    assert all(line.endswith("skipped") for line in lines[:3])

    # A lost point is trained again with the values it had; the ones after it are not touched.
    shutil.rmtree(experiment_dir(data_root, "opt-p01-s0"))
    lines.clear()
    again = run_sweep(data_root, sweep, log=lines.append)
    assert [line.split(": ")[1] for line in lines[:3]] == ["skipped", "trained", "skipped"]
    pd.testing.assert_frame_equal(again[["optim.blr", "model.drop_path"]], summary[["optim.blr", "model.drop_path"]])

    # Other settings under the same name would mix two searches: refused naming the run, nothing trained.
    sweep["sample_seed"] = 6
    with pytest.raises(UserError, match="opt-p00-s0.*new sweep.name"):
        run_sweep(data_root, sweep)


@pytest.mark.parametrize("change, message", [
    ({"sampler": "tpe"}, "sweep.sampler must be one of grid, optuna"),
    ({"samples": 0}, "sweep.samples must be at least 1"),
    ({"variants": {"a": {"overrides": []}}}, "cannot be combined"),
    ({"grid": {"data.channels": [[0, 512], [0, 1024]]}}, "sweep.grid.data.channels: an Optuna search"),
    ({"random": {"optim.blrr": [1e-5, 1e-3]}}, "did you mean optim.blr"),
])
def test_optuna_sweep_refuses_a_bad_space_before_any_run(tmp_path, data_root, change, message):
    sweep = {**optuna_config(tmp_path, name='"badopt"'), **change}
    with pytest.raises(UserError, match=message):
        run_sweep(data_root, sweep)
    assert not list(data_root.joinpath("experiments").glob("badopt*"))


def test_runs_start_where_the_sweep_does_and_a_failed_run_says_why(tmp_path, data_root, monkeypatch):
    from coremax.sweep.runner import TRAIN

    monkeypatch.chdir(data_root.parent)  # a data root relative to this folder: each run must work here too
    sweep = sweep_config(tmp_path, name='"sw-here"', seeds="[0]")
    sweep["grid"] = {}
    run_sweep(data_root.name, sweep, log=lambda *a: None)
    assert Experiment.open(data_root, "sw-here-p00-s0").provenance()["command"].startswith(f"{TRAIN} --data-root")
    bad = {**sweep, "name": "sw-bad", "overrides": sweep["overrides"] + ['finetune.from="absent-pre"']}
    with pytest.raises(UserError, match="sweep run .sw-bad-p00-s0. failed.*: error: finetune.from = 'absent-pre'"):
        run_sweep(data_root.name, bad, log=lambda *a: None)


def test_sweep_metrics_are_checked_before_any_run_and_n_counts_only_finite_runs(tmp_path):
    import numpy as np

    from coremax import config as configlib
    from coremax.sweep import SWEEP_DEFAULTS, run_sweep, summarise

    sweep = configlib.resolve(None, ['sweep.name="typo"', 'sweep.overrides=["experiment.stage=\\"pretrain\\""]',
                                     'sweep.metrics=["val_rmse_CaCO3"]', "sweep.seeds=[0]"],
                              default_file=SWEEP_DEFAULTS)["sweep"]
    with pytest.raises(UserError, match="does not record"):
        run_sweep(tmp_path, sweep)
    assert not (tmp_path / "experiments").exists()
    table = pd.DataFrame({"variant": "", "point": [0, 0, 0], "seed": [0, 1, 2], "experiment": "e",
                          "val_rmse_CaCO3": [1.0, np.nan, 3.0]})
    out = summarise(table, ["variant"], "val_rmse_CaCO3")
    assert out["n"].iloc[0] == 2 and out["val_rmse_CaCO3"].iloc[0] == 2.0


def test_a_sweep_over_a_baseline_methods_key_names_it_in_three_parts():
    """[baseline.<method>] keys are swept like any other (checked before any run: the old flat name is refused)."""
    from coremax.sweep import runs

    sweep = configlib.resolve(None, ['sweep.name="terms"', 'sweep.metrics=["val_rmse_CaCO3"]', "sweep.seeds=[0]",
                                     'sweep.overrides=["experiment.stage=\\"baseline\\"", '
                                     '"baseline.method=\\"ratio\\""]',
                                     'sweep.grid={"baseline.ratio.terms" = [1, 2]}'],
                              default_file=SWEEP_DEFAULTS)["sweep"]
    planned = runs(sweep)
    assert [r["config"]["baseline"]["ratio"]["terms"] for r in planned] == [1, 2]
    assert configlib.parse_overrides(configlib.as_overrides(planned[1]["overrides"]))["baseline.ratio.terms"] == 2
    with pytest.raises(UserError, match="now called baseline.ratio.terms"):
        runs({**sweep, "grid": {"baseline.terms": [1, 2]}})
