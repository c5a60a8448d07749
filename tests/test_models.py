"""vitx, max (masked autoencoder) and the regressor."""

import pytest
import torch

from coremax.errors import UserError
from coremax.models import SIZES, build_max, build_regressor, load_encoder
from coremax.models.regressor import masked_mse

L, P = 256, 16  # 16 patches: quick on a CPU


def small_max(**kw):
    return build_max(spectrum_length=L, patch_size=P, **kw)


def test_masking_keeps_exactly_the_right_number_per_sample():
    torch.manual_seed(0)
    m = small_max(mask_ratio=0.3)
    loss, pred, mask = m(torch.randn(8, L))
    keep = round(16 * 0.7)
    assert pred.shape == (8, 16, P) and mask.shape == (8, 16)
    assert torch.all(mask.sum(1) == 16 - keep)
    assert len({tuple(r.tolist()) for r in mask}) > 1  # samples get their own masks


def test_loss_covers_masked_patches_only_when_asked():
    torch.manual_seed(1)
    x = torch.randn(4, L)
    for loss_on in ("masked", "all"):
        m = small_max(loss_on=loss_on).eval()
        torch.manual_seed(2)
        loss, pred, mask = m(x)
        per_patch = ((pred - m.encoder.patchify(x)) ** 2).mean(-1)
        expected = (per_patch * mask).sum() / mask.sum() if loss_on == "masked" else per_patch.mean()
        assert torch.allclose(loss, expected, atol=1e-6)
    # Changing the visible channels' targets does not change a masked-only loss.
    m = small_max(loss_on="masked").eval()
    _, pred, mask = m(x)
    visible = (1 - mask).bool()
    y = m.encoder.patchify(x).clone()
    y[visible] += 5.0
    assert torch.allclose(m.loss(m.encoder.unpatchify(y), pred, mask), m.loss(x, pred, mask))


def test_norm_pix_loss_target_is_normalised_per_patch():
    m = small_max(norm_pix_loss=True)
    t = m.target(torch.rand(3, L) * 100)
    assert torch.allclose(t.mean(-1), torch.zeros(3, 16), atol=1e-4)
    assert torch.allclose(t.var(-1), torch.ones(3, 16), atol=1e-2)


def test_patchify_round_trip_and_fixed_positions():
    m = small_max()
    x = torch.randn(2, L)
    assert torch.equal(m.encoder.unpatchify(m.encoder.patchify(x)), x)
    names = {n for n, _ in m.named_parameters()}
    assert "encoder.pos_embed" not in names and "encoder.cls_token" in names


def test_patch_size_must_divide_the_length():
    with pytest.raises(UserError, match="model.patch_size"):
        build_max(spectrum_length=100, patch_size=16)
    with pytest.raises(UserError, match="model.size"):
        build_max(size="huge")


def test_regressor_shapes_pooling_and_drop_path_in_eval():
    x = torch.randn(5, L)
    for pool in (True, False):
        r = build_regressor(2, spectrum_length=L, patch_size=P, global_pool=pool, drop_path=0.5).eval()
        assert r(x).shape == (5, 2) and r.features(x).shape == (5, SIZES["tiny"]["embed_dim"])
        assert torch.equal(r(x), r(x))  # stochastic depth is off in eval mode


def test_encoder_weights_transfer_and_shape_mismatch():
    m = small_max()
    r = build_regressor(2, spectrum_length=L, patch_size=P)
    report = load_encoder(r, m.state_dict())
    assert report == {"missing": [], "unexpected": []}
    for k, v in r.encoder.state_dict().items():
        assert torch.equal(v, m.encoder.state_dict()[k])
    other = build_regressor(2, spectrum_length=L, patch_size=32)
    with pytest.raises(UserError, match="shape"):
        load_encoder(other, m.state_dict())


def test_masked_mse_ignores_nan_targets():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [1.0, 2.0], [float("nan"), float("nan")]])
    loss = masked_mse(pred, target)
    assert torch.isclose(loss, torch.tensor((1 + 4 + 4) / 3))
    loss.backward()
    assert torch.all(pred.grad[2] == 0) and pred.grad[0, 1] == 0 and torch.isfinite(pred.grad).all()
    empty = masked_mse(pred, torch.full((3, 2), float("nan")))
    assert empty.item() == 0.0 and empty.requires_grad
