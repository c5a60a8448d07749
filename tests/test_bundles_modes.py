"""Bundles of the other kinds of model: element-table baselines (mlc, ratio: inputs = element intensities), the
ridge head that also reads the element log-ratios (finetune.elements) and a PEFT model (lora) predict from the
bundle exactly what their experiment predicts (on CPU, bitwise)."""

import numpy as np
import pandas as pd
import pytest

from conftest import train
from test_bundles import in_process, new_cores  # noqa: F401 (new_cores: a fixture)
from coremax.bundle import write_bundle

KINDS = {
    "mlc": ("baseline", 'baseline.method="mlc"'),
    "ratio": ("baseline", 'baseline.method="ratio"'),
    "ridge-elements": ("finetune", 'finetune.mode="ridge"', "finetune.elements=true", "finetune.epo=true"),
    "lora": ("finetune", 'finetune.mode="lora"', "optim.epochs=1"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_bundle_of_each_kind_predicts_what_its_experiment_predicts(kind, data_root, pretrained, new_cores,
                                                                     tmp_path, capsys, monkeypatch):
    stage, *overrides = KINDS[kind]
    name = f"kind-{kind}"
    parent = [f'finetune.from="{pretrained}"'] if stage == "finetune" else []
    train(data_root, name, stage, *overrides, *parent)
    bare = tmp_path / "bare"
    bare.mkdir()
    write_bundle(data_root, name, bare / "m.coremax")
    monkeypatch.chdir(tmp_path)
    runs = {"exp": ("--experiment", name, "--data-root", data_root), "model": ("--model", bare / "m.coremax",
                                                                              "--data-root", bare / "none")}
    tables = {}
    for which, args in runs.items():
        res = in_process("predict", *args, "--raw", new_cores, "--out", tmp_path / f"{which}.csv", capsys=capsys)
        assert res.returncode == 0, res.stderr
        tables[which] = pd.read_csv(tmp_path / f"{which}.csv")
    cols = [c for c in tables["exp"].columns if c.endswith(("_pred", "_lo", "_hi"))]
    assert len(cols) >= 6 and set(cols) <= set(tables["model"].columns)
    a, b = tables["exp"][cols].to_numpy(), tables["model"][cols].to_numpy()
    assert np.isfinite(a).all() and np.array_equal(a, b), kind
