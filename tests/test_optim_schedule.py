"""Parameter groups, layer-wise lr decay and the warm-up + cosine schedule."""

import math

import pytest

from coremax.engine.optim import build_optimizer, param_groups
from coremax.engine.schedule import lr_at, scaled_lr, set_lr
from coremax.errors import UserError
from coremax.models import build_model


def test_no_decay_groups_hold_exactly_biases_norms_and_tokens():
    m = build_model("pretrain", input_channels=256, patch_size=16)
    groups = param_groups(m, weight_decay=0.05)
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    for name, p in m.named_parameters():
        expected = p.ndim == 1 or name.endswith(".bias") or "token" in name
        assert (name in no_decay) == expected, name
    assert "encoder.cls_token" in no_decay and "mask_token" in no_decay
    assert all(n.endswith(".weight") for n in decay)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_extra_no_weight_decay_names_and_fixed_positions():
    r = build_model("finetune", 2, input_channels=256, patch_size=16)
    groups = param_groups(r, 0.05, no_weight_decay=("head.weight",))
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "head.weight" in no_decay and "encoder.blocks.0.attn.qkv.weight" not in no_decay
    assert all(g["lr_scale"] == 1.0 for g in groups)  # no layer decay asked
    assert not any("pos_embed" in n for g in groups for n in g["names"])  # a buffer, never trained


def test_layer_decay_gives_per_layer_learning_rates():
    r = build_model("finetune", 2, input_channels=256, patch_size=16)
    depth, decay, lr = r.encoder.depth, 0.5, 1e-3
    opt = build_optimizer(r, lr, layer_decay=decay)
    scale = {n: g["lr"] for g in opt.param_groups for n in g["names"]}
    assert scale["head.weight"] == pytest.approx(lr)
    assert scale["encoder.norm.weight"] == pytest.approx(lr)
    assert scale["encoder.patch_embed.weight"] == pytest.approx(lr * decay ** (depth + 1))
    assert scale["encoder.cls_token"] == pytest.approx(lr * decay ** (depth + 1))
    for i in range(depth):
        assert scale[f"encoder.blocks.{i}.attn.qkv.weight"] == pytest.approx(lr * decay ** (depth - i))
    set_lr(opt, 2e-3)
    assert {n: g["lr"] for g in opt.param_groups for n in g["names"]}["encoder.blocks.0.mlp.0.weight"] == \
        pytest.approx(2e-3 * decay ** depth)


def test_frozen_parameters_are_left_out():
    r = build_model("finetune", 2, input_channels=256, patch_size=16)
    for p in r.encoder.parameters():
        p.requires_grad_(False)
    names = {n for g in param_groups(r, 0.05, 0.75) for n in g["names"]}
    assert names == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}


@pytest.mark.parametrize("epoch, expected", [
    (0.0, 0.0), (1.0, 0.5e-3), (2.0, 1e-3), (6.0, (1e-3 + 1e-5) / 2), (10.0, 1e-5), (12.0, 1e-5),
])
def test_warmup_then_cosine(epoch, expected):
    assert lr_at(epoch, 1e-3, 1e-5, warmup_epochs=2, epochs=10) == pytest.approx(expected)


def test_cosine_shape_between_points():
    v = lr_at(4.0, 1.0, 0.0, warmup_epochs=2, epochs=10)
    assert v == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_lr_scaling():
    assert scaled_lr(1e-4, 512, "none") == 1e-4
    assert scaled_lr(1e-4, 512, "linear") == pytest.approx(2e-4)
    with pytest.raises(UserError, match="optim.lr_scaling"):
        scaled_lr(1e-4, 512, "sqrt")


def test_short_run_finishes_its_schedule():
    # One epoch with a warm-up of one epoch: the warm-up is cut to a quarter and the cosine still ends at min_lr.
    assert lr_at(0.25, 1e-3, 1e-6, warmup_epochs=1.0, epochs=1) == pytest.approx(1e-3)
    assert lr_at(1.0, 1e-3, 1e-6, warmup_epochs=1.0, epochs=1) == pytest.approx(1e-6)
    assert lr_at(0.125, 1e-3, 1e-6, warmup_epochs=1.0, epochs=1) == pytest.approx(0.5e-3)
