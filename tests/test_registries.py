"""One place per change: a baseline, a transform, a model size, a study method and a sweep sampler each added in
the one place where such things are defined, and then usable everywhere (config, stages, study, loaders)."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import FAST, ROOT, resolved, train
from coremax import config as configlib
from coremax.experiment import Experiment

TOY_BASELINE = '''"""A toy baseline written by tests/test_registries.py: ridge on the log of a few channel sums."""

import numpy as np
from sklearn.linear_model import Ridge

from coremax.baselines.base import Baseline, register


@register("toy_sums")
class ToySums(Baseline):
    def _fit_features(self, x, unlabelled=None):
        return self._features(x)

    def _features(self, x):
        return np.log1p(np.stack([x[:, i::64].sum(1) for i in range(4)], 1))

    def _grid(self, n_train, n_features):
        return [{"alpha": 0.1}, {"alpha": 10.0}]

    def _fit_one(self, f, y, params, w=None):
        return Ridge(alpha=params["alpha"]).fit(f, y, sample_weight=w)
'''


@pytest.fixture
def toy_baseline():
    """The toy module under src/coremax/baselines/, imported here (child processes find it themselves)."""
    from coremax.baselines import METHODS

    path = ROOT / "src" / "coremax" / "baselines" / "_toy_registry_test.py"
    path.write_text(TOY_BASELINE)
    try:
        importlib.import_module("coremax.baselines._toy_registry_test")
        yield "toy_sums"
    finally:
        path.unlink()
        METHODS.pop("toy_sums", None)
        sys.modules.pop("coremax.baselines._toy_registry_test", None)


def test_a_baseline_is_one_module(toy_baseline, data_root):
    from coremax.study import STUDY_DEFAULTS, methods, run_study

    assert toy_baseline in configlib.registries()["baseline.method"] and toy_baseline in methods()
    run = [sys.executable, str(ROOT / "scripts" / "train.py"), "--data-root", str(data_root), "--stage", "baseline",
           "--name", "toy-b", f'baseline.method="{toy_baseline}"']
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    test = subprocess.run([sys.executable, str(ROOT / "scripts" / "test.py"), "--data-root", str(data_root),
                           "--experiment", "toy-b"], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    metrics = Experiment.open(data_root, "toy-b").read_result("test-metrics")
    assert np.isfinite(metrics["rmse"]).all()
    study = configlib.resolve(None, ['study.name="toy-study"', f'study.methods=["{toy_baseline}", "pls"]',
                                     "study.budgets=[0]", "study.seeds=[0]"], default_file=STUDY_DEFAULTS)["study"]
    summary = run_study(data_root, study, log=lambda *a: None)
    assert {toy_baseline, "pls"} <= set(summary["method"])
    assert "toy_sums" in (data_root / "experiments" / "toy-study" / "results" / "label-budget.md").read_text()


def test_a_transform_is_one_function(data_root):
    from coremax.data import transforms

    @transforms.register("toy_fourth_root")
    def fourth_root(x: torch.Tensor) -> torch.Tensor:
        return transforms.instance_normalize(x.clamp(min=0) ** 0.25)

    try:
        assert configlib.resolve(None, ['data.transform="toy_fourth_root"'])["data"]["transform"] == "toy_fourth_root"
        exp = train(data_root, "toy-t", "pretrain", 'data.transform="toy_fourth_root"', "optim.epochs=1")
        assert exp.status() == "completed"
    finally:
        transforms.TRANSFORMS.pop("toy_fourth_root")
    with pytest.raises(Exception, match="data.transform"):
        configlib.resolve(None, ['data.transform="toy_fourth_root"'])


def test_a_model_size_is_one_entry(data_root):
    from coremax.models import SIZES, build_model

    SIZES["toy"] = {"embed_dim": 48, "depth": 2, "num_heads": 2, "decoder_dim": 32, "decoder_depth": 1,
                    "decoder_heads": 2}
    try:
        cfg = resolved('model.size="toy"', 'experiment.stage="pretrain"')
        assert build_model("pretrain", 0, 512, **{**cfg["model"], "patch_size": 64}).encoder.embed_dim == 48
        assert train(data_root, "toy-s", "pretrain", 'model.size="toy"', "optim.epochs=1").status() == "completed"
    finally:
        SIZES.pop("toy")


def test_a_study_method_is_one_entry(data_root, pretrained):
    from coremax import study as studylib
    from coremax.study_methods import NEURAL
    from coremax.sweep import runs

    NEURAL["msm-toyprobe"] = ("linear_probe", True)
    try:
        study = configlib.resolve(None, [f'study.pretrain="{pretrained}"', 'study.methods=["msm-toyprobe"]',
                                         "study.budgets=[20]", "study.seeds=[0]", 'study.name="toy-m"'],
                                  default_file=studylib.STUDY_DEFAULTS)["study"]
        study["overrides"] = FAST + ["optim.epochs=1"]
        plan = runs(studylib.study_sweep(study))
        assert [r["overrides"]["finetune.mode"] for r in plan] == ["linear_probe"]
        summary = studylib.run_study(data_root, study, log=lambda *a: None)
        assert set(summary["method"]) >= {"msm-toyprobe"}
    finally:
        NEURAL.pop("msm-toyprobe")


def test_a_sweep_sampler_is_one_entry(data_root, tmp_path):
    from coremax.sweep import SWEEP_DEFAULTS, run_sweep
    from coremax.sweep.samplers import SAMPLERS, Grid, runs

    class FirstPoint(Grid):
        """Only the first grid point."""

        def check(self, sweep):
            return [r for r in runs(sweep) if r["point"] == 0]

    SAMPLERS["first"] = FirstPoint()
    try:
        sweep = configlib.resolve(None, ['sweep.name="toy-sampler"', 'sweep.sampler="first"',
                                         'sweep.overrides=["experiment.stage=\\"baseline\\"", '
                                         '"baseline.method=\\"pls\\""]',
                                         'sweep.grid={"data.max_labels" = [20, 40]}',
                                         'sweep.metrics=["val_rmse_CaCO3"]'], default_file=SWEEP_DEFAULTS)["sweep"]
        summary = run_sweep(data_root, sweep, log=lambda *a: None)
        assert list(summary["data.max_labels"]) == [20]
        assert not (Path(data_root) / "experiments" / "toy-sampler-p01-s0").exists()
    finally:
        SAMPLERS.pop("first")


def test_renamed_key_is_refused_by_its_new_name_and_mapped_in_frozen_configs(tmp_path):
    from coremax.errors import UserError

    with pytest.raises(UserError, match="now called runtime.threads"):
        configlib.resolve(None, ["runtime.num_workers=2"])
    old = tmp_path / "config.toml"
    old.write_text("[runtime]\nnum_workers = 2\n")
    with pytest.raises(UserError, match="now called runtime.threads"):
        configlib.resolve(old)
    cfg = configlib.resolve(old, frozen=True)
    assert cfg["runtime"]["threads"] == 2 and "renamed" in cfg.notes[0]
    assert pd.notna(cfg.notes[0])


def test_a_data_key_is_one_entry_in_the_schema(monkeypatch, tmp_path):
    """A [data] key added in the schema alone: resolved at its default and from an override, type- and
    range-checked, written into the default file and the reference page, and handed to prepare_data."""
    from coremax.config import schema
    from coremax.config.schema import text
    from coremax.engine import data as engine_data
    from coremax.errors import UserError

    monkeypatch.setitem(schema.SECTIONS["data"], "toy_gain",
                        schema.Key(0.5, "a toy key of tests/test_registries.py", range="[0, 1]"))
    cfg = configlib.resolve(None)
    assert cfg["data"]["toy_gain"] == 0.5 and cfg.source("data", "toy_gain") == "schema"
    cfg = configlib.resolve(None, ["data.toy_gain=1"])
    assert cfg["data"]["toy_gain"] == 1.0 and isinstance(cfg["data"]["toy_gain"], float)
    with pytest.raises(UserError, match=r"data\.toy_gain .*must be a number"):
        configlib.resolve(None, ['data.toy_gain="high"'])
    with pytest.raises(UserError, match=r"data\.toy_gain = 2\.0 .*out of range.*0 <= x <= 1"):
        configlib.resolve(None, ["data.toy_gain=2"])
    assert re.search(r"^toy_gain = 0\.5 +# a toy key", text.default_text().split("[data]")[1], re.M)
    assert "| `data.toy_gain` | `0.5` | number | 0 <= x <= 1 | a toy key" in text.reference_page()
    written = tmp_path / "default-config.toml"
    written.write_text(text.default_text())
    assert configlib.resolve(None, default_file=written).source("data", "toy_gain") == "default-config"
    got = {}  # what prepare_data's body is handed, given the resolved [data] section or nothing
    monkeypatch.setattr(engine_data.prepare_data, "__wrapped__", lambda *args, **keys: got.update(keys))
    engine_data.prepare_data(tmp_path, "finetune", 0, **cfg["data"])
    assert got["toy_gain"] == 1.0
    engine_data.prepare_data(tmp_path, "finetune", 0)
    assert got["toy_gain"] == 0.5 and got["dataset"] == "synthetic"
