"""vitx, max (masked autoencoder) and the regressor."""

import pytest
import torch

from coremax.errors import UserError
from coremax.models import (
    SIZES,
    VitX,
    build_model,
    load_encoder,
)
from coremax.models.regressor import masked_mse
from coremax.models.vitx import Attention, DropPath

L, P = 256, 16  # 16 patches: quick on a CPU
N = L // P


def small_max(**kw):
    return build_model("pretrain", input_channels=L, patch_size=P, **kw)


def test_vitx_shapes_and_fixed_positions():
    v = VitX(input_channels=L, patch_size=P, embed_dim=32, depth=2, num_heads=2)
    x = torch.randn(3, L)
    assert v.num_patches == N and v.patchify(x).shape == (3, N, P)
    assert v.embed(x).shape == (3, N, 32) and v(x).shape == (3, 1 + N, 32)
    assert v.encode(v.embed(x)[:, :5]).shape == (3, 6, 32)  # any subset of tokens, as MaX feeds it
    assert torch.equal(v.unpatchify(v.patchify(x)), x)
    # The class token's position is zero; the positions are a buffer (saved, never trained).
    assert torch.all(v.pos_embed[0, 0] == 0) and not v.pos_embed[0, 1:].eq(0).all()
    assert "pos_embed" in v.state_dict() and "pos_embed" not in dict(v.named_parameters())


def test_patchify_keeps_channels_in_order():
    v = VitX(input_channels=L, patch_size=P, embed_dim=32, depth=1, num_heads=2)
    x = torch.arange(2 * L, dtype=torch.float32).reshape(2, L)
    assert torch.equal(v.patchify(x)[1, 3], x[1, 3 * P:4 * P])


def test_masking_keeps_exactly_the_right_number_per_sample():
    torch.manual_seed(0)
    m = small_max(mask_ratio=0.3)
    _, pred, mask = m(torch.randn(8, L))
    keep = round(N * 0.7)
    assert pred.shape == (8, N, P) and mask.shape == (8, N)
    assert torch.all(mask.sum(1) == N - keep)
    assert len({tuple(r.tolist()) for r in mask}) > 1  # samples get their own masks


def test_masking_is_reproducible_with_a_generator():
    m = small_max().eval()
    x = torch.randn(4, L)
    runs = [m(x, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(runs[0][2], runs[1][2]) and torch.equal(runs[0][0], runs[1][0])
    assert not torch.equal(runs[0][2], runs[2][2])


def test_loss_covers_masked_patches_only_when_asked():
    torch.manual_seed(1)
    x = torch.randn(4, L)
    for loss_on in ("masked", "all"):
        m = small_max(loss_on=loss_on).eval()
        loss, pred, mask = m(x)
        per_patch = ((pred - m.encoder.patchify(x)) ** 2).mean(-1)
        expected = (per_patch * mask).sum() / mask.sum() if loss_on == "masked" else per_patch.mean()
        assert torch.allclose(loss, expected, atol=1e-6)
    # Changing the visible channels' targets does not change a masked-only loss, but does change "all".
    y = m.encoder.patchify(x).clone()
    y[~mask.bool()] += 5.0
    y = m.encoder.unpatchify(y)
    assert m.loss(y, pred, mask) > m.loss(x, pred, mask)
    m.loss_on = "masked"
    assert torch.allclose(m.loss(y, pred, mask), m.loss(x, pred, mask))


def test_zero_mask_ratio_falls_back_to_all_patches():
    m = small_max(mask_ratio=0.0).eval()
    x = torch.randn(2, L)
    loss, pred, mask = m(x)
    assert mask.sum() == 0
    assert torch.allclose(loss, ((pred - m.encoder.patchify(x)) ** 2).mean())


def test_bad_loss_on_and_mask_ratio():
    with pytest.raises(UserError, match="model.loss_on"):
        small_max(loss_on="visible")
    with pytest.raises(UserError, match="model.mask_ratio"):
        small_max(mask_ratio=1.0)
    with pytest.raises(UserError, match="model.mask_ratio"):
        small_max()(torch.randn(1, L), mask_ratio=-0.1)


def test_norm_pix_loss_target_is_normalised_per_patch():
    x = torch.rand(3, L) * 100
    t = small_max(norm_pix_loss=True).target(x)
    assert torch.allclose(t.mean(-1), torch.zeros(3, N), atol=1e-4)
    assert torch.allclose(t.var(-1), torch.ones(3, N), atol=1e-2)
    assert torch.equal(small_max().target(x), small_max().encoder.patchify(x))  # off: the raw channels


def test_patch_size_must_divide_the_length():
    with pytest.raises(UserError, match="model.patch_size"):
        build_model("pretrain", input_channels=100, patch_size=16)
    with pytest.raises(UserError, match="model.size"):
        build_model("pretrain", size="huge")


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_training():
    d = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    assert d.eval()(x) is x
    torch.manual_seed(0)
    y = d.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and rescaled by 1 / (1 - p)
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)


def test_the_cpu_attention_is_the_fused_kernels_attention_and_keeps_no_weights_unless_asked():
    torch.manual_seed(0)
    attn, x = Attention(24, 3), torch.randn(4, 9, 24, requires_grad=True)
    q, k, v = attn.qkv(x).view(4, 9, 3, 3, 8).permute(2, 0, 3, 1, 4)
    fused = attn.proj(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(4, 9, 24))
    out = attn(x)
    assert torch.allclose(out, fused, atol=1e-6) and attn.weights is None
    grads = torch.autograd.grad(out.square().sum(), x)[0], torch.autograd.grad(fused.square().sum(), x)[0]
    assert torch.allclose(*grads, atol=1e-5)
    attn.keep_weights = True
    assert torch.allclose(attn(x), fused, atol=1e-6)
    assert attn.weights.shape == (4, 3, 9, 9) and torch.allclose(attn.weights.sum(-1), torch.ones(4, 3, 9))


def test_regressor_shapes_pooling_and_drop_path_in_eval():
    x = torch.randn(5, L)
    for pool in (True, False):
        r = build_model("finetune", 2, input_channels=L, patch_size=P, global_pool=pool, drop_path=0.5).eval()
        assert r(x).shape == (5, 2) and r.features(x).shape == (5, SIZES["tiny"]["embed_dim"])
        assert torch.equal(r(x), r(x))  # stochastic depth is off in eval mode
        assert torch.allclose(r.head(r.features(x)), r(x))
    rates = [b.drop_path.p for b in r.encoder.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    torch.manual_seed(0)
    assert not torch.equal(r.train()(x), r(x))


def test_encoder_weights_transfer_and_shape_mismatch():
    m = small_max()
    r = build_model("finetune", 2, input_channels=L, patch_size=P)
    assert not torch.equal(r.encoder.patch_embed.weight, m.encoder.patch_embed.weight)
    report = load_encoder(r, m.state_dict())
    assert report == {"missing": [], "unexpected": []}
    for k, v in r.encoder.state_dict().items():
        assert torch.equal(v, m.encoder.state_dict()[k])
    other = build_model("finetune", 2, input_channels=L, patch_size=32)
    with pytest.raises(UserError, match=r"encoder\.pos_embed has shape \(1, 17, 192\).*\(1, 9, 192\)"):
        load_encoder(other, m.state_dict())
    with pytest.raises(UserError, match="encoder"):
        load_encoder(r, {"head.weight": torch.zeros(2, 192)})


def test_load_encoder_reports_missing_and_unexpected_keys():
    state = small_max().state_dict()
    del state["encoder.norm.bias"]
    state["encoder.extra"] = torch.zeros(1)
    r = build_model("finetune", 1, input_channels=L, patch_size=P)
    assert load_encoder(r, state) == {"missing": ["encoder.norm.bias"], "unexpected": ["encoder.extra"]}


def test_masked_mse_ignores_nan_targets():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [1.0, 2.0], [float("nan"), float("nan")]])
    loss = masked_mse(pred, target)
    assert torch.isclose(loss, torch.tensor((1 + 4 + 4) / 3))
    loss.backward()
    assert torch.all(pred.grad[2] == 0) and pred.grad[0, 1] == 0 and torch.isfinite(pred.grad).all()
    assert torch.isclose(pred.grad[0, 0], torch.tensor(2 * 1.0 / 3))
    empty = masked_mse(pred, torch.full((3, 2), float("nan")))
    assert empty.item() == 0.0 and empty.requires_grad
