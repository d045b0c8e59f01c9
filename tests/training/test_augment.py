"""Batch affine augmentation: seeded, shape-preserving, correct geometry; epoch multiplicity."""

from __future__ import annotations

import math

import numpy as np
import torch

from spinedx.training.augment import AffineRanges, BatchAffine, apply_affine, epoch_indices, identity_params


def _batch() -> torch.Tensor:
    return torch.randn(8, 6, 32, 32, generator=torch.Generator().manual_seed(1))


def test_deterministic_given_seed_and_shape_preserving() -> None:
    x = _batch()
    a = BatchAffine(AffineRanges(), seed=5)(x)
    b = BatchAffine(AffineRanges(), seed=5)(x)
    c = BatchAffine(AffineRanges(), seed=6)(x)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # per-sample parameters: two copies of one patch come out differently
    twin = BatchAffine(AffineRanges(), seed=5)(x[:1].repeat(2, 1, 1, 1))
    assert not torch.allclose(twin[0], twin[1])


def test_parameters_within_ranges() -> None:
    ranges = AffineRanges(rotation_deg=10, translation=0.05, scale=(0.95, 1.05))
    p = BatchAffine(ranges, seed=0).sample(2000)
    assert p[:, 0].abs().max() <= math.radians(10) + 1e-6
    assert p[:, 1:3].abs().max() <= 2 * 0.05 + 1e-6
    assert p[:, 3].min() >= 0.95 and p[:, 3].max() <= 1.05


def test_identity_params_give_identity() -> None:
    x = _batch()
    torch.testing.assert_close(apply_affine(x, identity_params(8)), x, atol=1e-5, rtol=0)


def test_geometry_translation_and_rotation() -> None:
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 4, 6] = 1.0
    # shift right by 2 pixels: tx = 2 pixels * (2 / 16) in normalised units
    shifted = apply_affine(x, torch.tensor([[0.0, 2 * 2 / 16, 0.0, 1.0]]))
    assert shifted[0, 0, 4, 8] > 0.99
    # 90 degrees twice is 180 degrees: equals flipping both axes (about the centre)
    rot90 = torch.tensor([[math.pi / 2, 0.0, 0.0, 1.0]])
    twice = apply_affine(apply_affine(x, rot90), rot90)
    torch.testing.assert_close(twice, torch.flip(x, dims=(2, 3)), atol=1e-5, rtol=0)


def test_epoch_indices_multiplicity() -> None:
    labels = np.array([0, 1, 0, 1, 1])
    idx = epoch_indices(labels, 20, 40, np.random.default_rng(0))
    counts = np.bincount(idx, minlength=5)
    assert counts.tolist() == [20, 40, 20, 40, 40]
    again = epoch_indices(labels, 20, 40, np.random.default_rng(0))
    assert np.array_equal(idx, again) and not np.array_equal(idx, np.sort(idx))
