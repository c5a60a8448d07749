"""Spectrum transforms (clr, sqrt), Poisson, calibration and absorption jitter augmentation, and target scaling."""

import numpy as np
import pytest
import torch

from coremax.data.transforms import (TargetScaler, centred_log_ratio, jitter_absorption, jitter_calibration,
                                     make_transform, poisson_resample, sqrt_normalize)
from coremax.errors import UserError


def test_instance_normalize_and_log():
    x = torch.rand(4, 64) * 1000
    z = make_transform("instance_normalize")(x)
    assert torch.allclose(z.mean(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std(1), torch.ones(4), atol=1e-3)
    assert torch.allclose(make_transform("log")(x), torch.log1p(x))


def test_channel_normalize_uses_given_statistics():
    x = torch.rand(10, 8)
    mean, std = x.mean(0), x.std(0)
    z = make_transform("normalize", mean, std)(x)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(z[3], (x[3] - mean) / (std + 1e-6))
    assert torch.equal(make_transform("none")(x), x)
    with pytest.raises(UserError, match="channel statistics"):
        make_transform("normalize")


def test_unknown_transform():
    with pytest.raises(UserError, match="data.transform"):
        make_transform("sqrt_of_log")


def test_poisson_resample_keeps_the_mean_and_repeats_with_a_generator():
    counts = torch.full((2000, 16), 200.0)
    a = poisson_resample(counts, 0.5, torch.Generator().manual_seed(0))
    b = poisson_resample(counts, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, poisson_resample(counts, 0.5, torch.Generator().manual_seed(1)))
    assert abs(a.mean().item() - 200.0) < 1.0
    # Thinning a constant c at fraction f and rescaling gives variance c (1 - f) / f; averaged over
    # f ~ U[0.5, 1] that is c (2 ln 2 - 1).
    assert a.var().item() == pytest.approx(200 * (2 * np.log(2) - 1), rel=0.1)


def test_poisson_resample_fraction_one_is_identity_and_zero_is_refused():
    counts = torch.tensor([[0.0, 3.0, 40.0]])
    assert torch.equal(poisson_resample(counts, 1.0), counts)
    with pytest.raises(UserError, match="data.augment_min_fraction"):
        poisson_resample(counts, 0.0)


def test_target_scaler_round_trip_with_nans():
    y = np.array([[10.0, np.nan], [20.0, 1.0], [30.0, 3.0]])
    s = TargetScaler().fit(y)
    assert s.mean.tolist() == [20.0, 2.0]
    assert np.allclose(s.std, [np.std([10, 20, 30]), 1.0])
    z = s.transform(y)
    assert np.isnan(z[0, 1]) and np.allclose(np.nanmean(z, axis=0), 0)
    assert np.allclose(s.inverse(z), y, equal_nan=True)
    state = s.state_dict()
    assert all(type(v) is float for v in state["mean"] + state["std"])  # plain lists: TOML and checkpoints
    t = TargetScaler.from_state(state).inverse(torch.tensor(z, dtype=torch.float32))
    assert torch.allclose(t, torch.tensor(y, dtype=torch.float32), equal_nan=True)


def test_target_scaler_roots_only_the_flagged_targets_and_squares_them_back():
    y = np.array([[4.0, -1.0], [np.nan, 2.0], [36.0, 3.0], [16.0, np.nan]])
    s = TargetScaler(root=[True, False]).fit(y)
    assert s.mean.tolist() == pytest.approx([4.0, 4.0 / 3])  # sqrt 2, 6, 4; the second column as it is
    assert s.unit_std[0] == pytest.approx(np.std([4.0, 36.0, 16.0]))  # spread in wt%, for comparable errors
    z = s.transform(y)
    assert np.isnan(z[1, 0]) and np.isnan(z[3, 1]) and np.allclose(np.nanmean(z, axis=0), 0)
    assert np.allclose(s.inverse(z), y, equal_nan=True)  # a negative value of the unrooted target survives
    zt = torch.tensor(z, dtype=torch.float32)
    assert torch.allclose(s.transform(torch.tensor(y, dtype=torch.float32)), zt, equal_nan=True)
    back = TargetScaler.from_state(s.state_dict()).inverse(zt)
    assert torch.allclose(back, torch.tensor(y, dtype=torch.float32), equal_nan=True, atol=1e-4)
    # a prediction below the root's zero is 0 wt%, never the square of a negative root
    assert s.inverse(np.array([[-50.0, 0.0]]))[0, 0] == 0.0
    old = {"mean": [1.0], "std": [2.0]}  # a checkpoint written before the root existed: nothing rooted
    assert TargetScaler.from_state(old).inverse(np.array([[1.0]]))[0, 0] == 3.0


def test_calibration_jitter_moves_peaks_and_keeps_counts():
    x = torch.zeros(64, 512)
    x[:, 200] = 1000.0
    x[:, 300] = 500.0
    assert torch.equal(jitter_calibration(x, 0.0, 0.0, 0.0), x)
    g = torch.Generator().manual_seed(0)
    y = jitter_calibration(x, 0.01, 2.0, 1.5, generator=g)
    assert y.shape == x.shape and (y >= 0).all()
    assert torch.allclose(y.sum(1), x.sum(1), rtol=0.02)  # counts are moved, not made
    peak = y.argmax(dim=1).float()
    assert peak.std() > 0.5 and (peak - 200).abs().max() < 15  # the peak moved a few channels, differently per row
    shifted = jitter_calibration(x[:1], 0.0, 1e-9, 0.0)
    assert torch.allclose(shifted, x[:1], atol=1e-3)


def test_clr_and_sqrt_transforms():
    x = torch.tensor([[0.0, 9.0, 99.0, 999.0]])
    clr = centred_log_ratio(x)
    assert torch.allclose(clr.mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(centred_log_ratio(x * 1.0), make_transform("clr")(x))
    assert torch.allclose(sqrt_normalize(4 * x), sqrt_normalize(x), atol=1e-5)  # scale-free
    assert torch.allclose(sqrt_normalize(x).std(), torch.tensor(1.0), atol=1e-4)


def test_absorption_jitter_tilts_the_light_element_end():
    x = torch.full((256, 512), 100.0)
    y = jitter_absorption(x, 0.6, generator=torch.Generator().manual_seed(0))
    low, high = y[:, 87] / x[:, 87], y[:, 400] / x[:, 400]   # Si K-alpha vs 8 keV
    assert (low.min() < 0.7) and (low.max() > 1.4) and torch.allclose(high, torch.ones_like(high), atol=0.02)
    assert torch.equal(jitter_absorption(x, 0.0), x)
