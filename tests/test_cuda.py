"""GPU paths: device selection, bf16/fp16 autocast and a training run on CUDA (skipped without a GPU)."""

import pytest
import torch

from conftest import train
from coremax.engine.runtime import setup
from coremax.experiment import Experiment

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_device_and_amp_pick_the_gpu():
    rt = setup(device="auto", amp="auto")
    assert rt.device.type == "cuda"
    assert rt.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_training_on_cuda(data_root, amp):
    name = f"cuda-{amp}"
    train(data_root, name, "pretrain", "optim.epochs=2", 'runtime.device="cuda"', f'runtime.amp="{amp}"')
    exp = Experiment.open(data_root, name)
    assert exp.provenance()["status"] == "completed"
    h = exp.read_result("history")
    assert h["train_loss"].notna().all() and h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]


@pytest.mark.parametrize("mode", ["lora", "adapter"])
def test_peft_on_cuda(data_root, pretrained, mode):
    from coremax.models import load

    name = f"cuda-{mode}"
    train(data_root, name, "finetune", "optim.epochs=2", 'runtime.device="cuda"', 'runtime.amp="bf16"',
          f'finetune.mode="{mode}"', f'finetune.from="{pretrained}"')
    exp = Experiment.open(data_root, name)
    assert exp.provenance()["status"] == "completed"
    loaded = load(exp.checkpoints / "best-model.pth", device="cuda")
    assert all(p.device.type == "cuda" for p in loaded.model.parameters())
    x = torch.rand(2, 2048, device="cuda") * 100  # raw counts of a whole spectrum (the default window is all of it)
    assert torch.isfinite(loaded.model(loaded.transform(x))).all()
