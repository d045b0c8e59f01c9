"""Pointing game, energy share and the chance baselines against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from spinedx.explain.metrics import centre_prior_maps, empty_maps, energy_share, pointing_game, random_maps


def _mask() -> np.ndarray:
    m = np.zeros((4, 4))
    m[0:2, 0:2] = 1.0  # top-left 2x2 lesion
    m[2, 2] = 0.5  # on the threshold: inside
    m[3, 3] = 0.49  # below it: outside
    return m


def test_pointing_game_by_hand() -> None:
    mask = _mask()
    maps = np.zeros((6, 4, 4))
    maps[0, 1, 1] = 1.0  # single maximum inside
    maps[1, 3, 0] = 1.0  # single maximum outside
    maps[2, 2, 2] = 0.7  # on a mask value of exactly 0.5: inside
    maps[3, 3, 3] = 0.7  # mask 0.49: outside
    maps[4, 0, 0] = maps[4, 0, 1] = maps[4, 3, 3] = 1.0  # tie: 2 of 3 inside -> hit
    maps[5] += 0.3  # constant map: no maximum -> miss even though the mask is not empty
    masks = np.broadcast_to(mask, maps.shape)
    assert pointing_game(maps, masks).tolist() == [True, False, True, False, True, False]
    tie = np.zeros((1, 4, 4))
    tie[0, 0, 0] = tie[0, 3, 0] = 1.0  # 1 of 2 inside: half counts as a hit
    assert pointing_game(tie, mask[None]).tolist() == [True]
    tie[0, 3, 1] = 1.0  # 1 of 3
    assert pointing_game(tie, mask[None]).tolist() == [False]
    assert empty_maps(maps).tolist() == [False] * 5 + [True]


def test_energy_share_by_hand() -> None:
    mask = _mask()
    m = np.zeros((3, 4, 4))
    m[0, 0, 0], m[0, 3, 0] = 3.0, 1.0  # 3 / 4 inside
    m[1, 2, 2], m[1, 3, 3], m[1, 0, 1] = 1.0, 2.0, 1.0  # (1 + 1) / 4; the 0.49 pixel is outside
    # m[2] all zeros: counts as uniform -> area fraction 5/16
    share = energy_share(m, np.broadcast_to(mask, m.shape))
    np.testing.assert_allclose(share, [0.75, 0.5, 5 / 16])
    with pytest.raises(ValueError, match="non-negative"):
        energy_share(-m, np.broadcast_to(mask, m.shape))
    with pytest.raises(ValueError, match="one shape"):
        energy_share(m, mask)
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(np.full((1, 4, 4), np.nan), mask[None])


def test_baselines() -> None:
    c = centre_prior_maps(2, 64, 64)
    assert c.shape == (2, 64, 64)
    top = np.argwhere(c[0] == c[0].max())
    assert sorted(map(tuple, top.tolist())) == [(31, 31), (31, 32), (32, 31), (32, 32)]
    centre_only = np.zeros((1, 64, 64))
    centre_only[0, 30:34, 30:34] = 1
    assert pointing_game(c[:1], centre_only).tolist() == [True]
    r = random_maps(200, 16, 16, seed=1)
    assert r.min() >= 0 and r.max() < 1
    np.testing.assert_array_equal(r, random_maps(200, 16, 16, seed=1))
    half = np.zeros((200, 16, 16))
    half[:, :, :8] = 1
    assert abs(energy_share(r, half).mean() - 0.5) < 0.01
    assert 0.35 < pointing_game(r, half).mean() < 0.65
