"""Fine-tuning modes and training stages as objects: each asked, never named, by the stage, the checks, the
study and the benchmarks; a new mode is one class and its registration, then trains, tests and predicts."""

import numpy as np
import pytest
import torch

from conftest import train
from coremax import checkpoint as ckpt
from coremax.errors import UserError
from coremax.eval.run import evaluate_experiment
from coremax.modes import MODES, Mode, check_keys, get_mode, register
from coremax.stages import STAGES, history_metrics
from coremax.study_methods import neural_methods


@pytest.fixture
def head_only():
    """A new mode, written here alone: the encoder and its final norm frozen, only the head trains."""
    @register("head_only")
    class HeadOnly(Mode):
        def adapt(self, model, fine):
            for p in [*model.encoder.parameters(), *model.fc_norm.parameters()]:
                p.requires_grad_(False)
    yield HeadOnly
    MODES.pop("head_only")


def test_a_new_mode_in_one_class_trains_tests_and_is_refused_what_it_does_not_read(data_root, pretrained, head_only):
    exp = train(data_root, "toy-mode", "finetune", 'finetune.mode="head_only"', f'finetune.from="{pretrained}"',
                "optim.epochs=2", "optim.blr=1e-3")
    parent = ckpt.load(data_root / "experiments" / pretrained / "checkpoints" / "best-model.pth")["model"]
    state = ckpt.load(exp.checkpoints / "best-model.pth")["model"]
    blocks = [k for k in state if k.startswith("encoder.blocks.")]
    assert blocks and all(torch.equal(state[k], parent[k]) for k in blocks)  # frozen, as the mode said
    assert len(exp.read_result("history")) == 2  # gradient steps: Mode.steps defaults to true
    metrics = evaluate_experiment(data_root, "toy-mode")
    overall = metrics[metrics["scope"] == "all"]
    assert set(overall["target"]) == {"CaCO3", "TOC"} and np.isfinite(overall["rmse"]).all()
    with pytest.raises(UserError, match=r"finetune\.epo .*'head_only'.*\"ridge\" or \"lp_ft\""):
        train(data_root, "toy-epo", "finetune", 'finetune.mode="head_only"', f'finetune.from="{pretrained}"',
              "finetune.epo=true")
    assert not (data_root / "experiments" / "toy-epo").exists()


def test_each_mode_says_what_it_does_and_the_keys_it_cannot_honour_are_refused_naming_those_that_can():
    fine = {"epo": False, "elements": False, "epo_penalty": 0.0}
    assert [m for m in MODES if MODES[m].head_first] == [m for m in MODES if "epo" in MODES[m].options]
    assert not get_mode("ridge").steps and get_mode("lp_ft").steps
    assert get_mode("lora").pretrained_only and get_mode("lora").saves_trained_only
    with pytest.raises(UserError, match="adapts a pretrained encoder"):
        check_keys(get_mode("adapter"), fine, from_parent=False)
    with pytest.raises(UserError, match=r"finetune\.elements .*'full'.*\"ridge\""):
        check_keys(get_mode("full"), {**fine, "elements": True}, from_parent=True)
    with pytest.raises(UserError, match=r"epo_penalty.*needs finetune\.epo = true"):
        check_keys(get_mode("lp_ft"), {**fine, "epo_penalty": 1.0}, from_parent=True)
    with pytest.raises(UserError, match="finetune.mode = 'nope' is not known"):
        get_mode("nope")
    check_keys(get_mode("ridge"), {**fine, "epo": True, "elements": True}, from_parent=True)  # all it reads


def test_the_study_and_the_sweeps_ask_the_registries():
    assert {m: v[0] for m, v in neural_methods().items() if v[2]} == {"msm-probe-elements": "ridge"}
    assert set(STAGES) == {"pretrain", "finetune", "baseline"}
    assert history_metrics("pretrain", ["TOC"]) == {"val_loss"}
    assert history_metrics("finetune", ["TOC"]) == {"val_loss", "val_nrmse", "val_rmse_TOC"}
    assert history_metrics("baseline", ["TOC"]) == {"val_rmse_TOC"}
