"""Parameter-efficient fine-tuning: LoRA and adapters on a frozen pretrained encoder."""

import shutil

import numpy as np
import pytest
import torch

from conftest import interrupted_then_resumed, train
from coremax import checkpoint as ckpt
from coremax.errors import UserError
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment
from coremax.io import file_sha256
from coremax.models import build_model, load, peft
from coremax.study import methods


@pytest.mark.parametrize("mode", tuple(peft.KINDS))
def test_a_fresh_peft_model_is_the_pretrained_one_and_trains_only_its_new_weights(mode):
    torch.manual_seed(0)
    model = build_model("finetune", 2, 256, size="tiny", patch_size=16).eval()
    x = torch.randn(3, 256)
    before = model(x)
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainable = peft.attach(model, mode, lora_rank=4, lora_alpha=8.0, adapter_dim=16)
    assert torch.equal(model.eval()(x), before)  # the new weights start as the identity
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == model.peft_keys and trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    new = {n for n in names if n.startswith("encoder.")}
    assert new and all(("lora_" if mode == "lora" else ".adapter.") in n for n in new)
    assert {n for n in names if not n.startswith("encoder.")} == {"head.weight", "head.bias", "fc_norm.weight",
                                                                   "fc_norm.bias"}
    assert trainable < 0.1 * sum(p.numel() for p in model.parameters())
    # The base weights keep their keys (a pretrained encoder loads into the adapted model unchanged).
    assert encoder.keys() <= model.encoder.state_dict().keys()


@pytest.fixture(scope="module", params=tuple(peft.KINDS))
def adapted(request, data_root, pretrained):
    mode = request.param
    name = f"peft-{mode}"
    train(data_root, name, "finetune", "optim.epochs=2", "optim.blr=1e-3", f'finetune.mode="{mode}"',
          "finetune.lora_rank=4", f'finetune.from="{pretrained}"')
    return mode, name


def test_training_changes_only_the_new_weights_and_the_head(data_root, pretrained, adapted):
    mode, name = adapted
    exp = Experiment.open(data_root, name)
    base_file = data_root / "experiments" / pretrained / "checkpoints" / "best-model.pth"
    base = ckpt.load(base_file)["model"]
    state = ckpt.load(exp.checkpoints / "best-model.pth")
    # The checkpoint keeps only the trained tensors and names its base by path and sha256.
    assert state["peft"]["base_sha256"] == file_sha256(base_file)
    assert not any(k in base for k in state["model"] if k.startswith("encoder."))
    assert {k for k in state["model"] if not k.startswith("encoder.")} == {"head.weight", "head.bias",
                                                                           "fc_norm.weight", "fc_norm.bias"}
    assert any(not torch.all(v == 0) for k, v in state["model"].items() if k.endswith(("lora_b", "up.weight")))
    # The rebuilt model: every base encoder weight bit-identical to the pretrained one, the rest from the file.
    loaded = load(exp.checkpoints / "best-model.pth").model
    full = loaded.state_dict()
    for k, v in base.items():
        if k.startswith("encoder."):
            assert torch.equal(full[k], v), k
    for k, v in state["model"].items():
        assert torch.equal(full[k], v), k
    # test.py's evaluation reads it like any fine-tune.
    metrics = evaluate_experiment(data_root, name, "test")
    assert np.isfinite(metrics["rmse"]).all()


def test_a_peft_checkpoint_needs_its_exact_base(data_root, pretrained, adapted, tmp_path):
    _, name = adapted
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    for n in (pretrained, name):
        shutil.copytree(data_root / "experiments" / n, tmp_path / "experiments" / n)
    best = tmp_path / "experiments" / name / "checkpoints" / "best-model.pth"
    load(best)  # the data root moved as a whole: the base is found
    base = tmp_path / "experiments" / pretrained / "checkpoints" / "best-model.pth"
    state = ckpt.load(base)
    state["model"]["encoder.norm.bias"] += 1.0
    ckpt.save(base, state)
    with pytest.raises(UserError, match="sha256 differs"):
        load(best)
    shutil.rmtree(tmp_path / "experiments" / pretrained)
    with pytest.raises(UserError, match="base checkpoint .* is missing"):
        load(best)
    hostile = ckpt.load(best)
    hostile["peft"]["base"] = "../../../../outside.pth"
    ckpt.save(best, hostile)
    with pytest.raises(UserError, match="outside the data root"):
        load(best)


def test_peft_resume_equals_an_uninterrupted_run(data_root, pretrained, monkeypatch):
    args = ("optim.epochs=3", "optim.blr=1e-3", 'finetune.mode="lora"', "finetune.lora_rank=2",
            f'finetune.from="{pretrained}"')
    train(data_root, "lora-whole", "finetune", *args)
    interrupted_then_resumed(data_root, "lora-cut", "finetune", *args, monkeypatch=monkeypatch)
    a = Experiment.open(data_root, "lora-whole").read_result("history")
    b = Experiment.open(data_root, "lora-cut").read_result("history")
    np.testing.assert_array_equal(a["train_loss"].to_numpy(), b["train_loss"].to_numpy())
    np.testing.assert_array_equal(a["val_nrmse"].to_numpy(), b["val_nrmse"].to_numpy())
    assert ckpt.load(data_root / "experiments" / "lora-cut" / "checkpoints" / "last.pth")["peft"]["base"] == \
        f"../../{pretrained}/checkpoints/best-model.pth"


def test_peft_without_a_parent_or_from_an_adapter_checkpoint_is_refused(data_root, adapted):
    _, name = adapted
    with pytest.raises(UserError, match="adapts a pretrained encoder"):
        train(data_root, "lora-alone", "finetune", 'finetune.mode="lora"')
    with pytest.raises(UserError, match="holds only"):
        train(data_root, "lora-chain", "finetune", 'finetune.mode="lora"', f'finetune.from="{name}"')
    with pytest.raises(UserError, match="finetune.lora_rank"):
        train(data_root, "lora-rank", "finetune", 'finetune.mode="lora"', "finetune.lora_rank=0")
    for n in ("lora-alone", "lora-chain", "lora-rank"):
        assert not (data_root / "experiments" / n).exists()
    assert {"msm-lora", "msm-adapter"} <= set(methods())
