"""Bounded rigid T2 -> T1 registration on phantom pairs with a known patient motion."""

from __future__ import annotations

import numpy as np
import pytest

from spinedx.preprocess import ExtractConfig, extract_patches, register_rigid
from spinedx.preprocess.mapping import crop_grid, plane_points

from .phantom import centered_origin, sample, spine

SHIFT = (0.0, 3.0, 2.0)  # LPS mm: 3 mm posterior, 2 mm up, in the sagittal plane
BOX_SLICES = [3, 4, 5]


@pytest.fixture(scope="module")
def moved_pair():
    """T2 (0.8 mm, 4 mm slices) and a T1 with another grid whose anatomy moved by SHIFT."""
    sh2, sp2 = (9, 110, 90), (0.8, 0.8, 4.0)
    t2 = sample(sh2, sp2, centered_origin(sh2, sp2))
    sh1, sp1 = (8, 90, 70), (1.0, 1.1, 4.4)
    t1 = sample(sh1, sp1, centered_origin(sh1, sp1, offset=(1.0, 0, 0)), contrast="t1", shift=SHIFT)
    ctr = t2.physical_to_index(np.zeros((1, 3)))[0]  # the middle "vertebral body" is at the origin
    box = (int(ctr[0] - 20), int(ctr[1] - 16), int(ctr[0] + 20), int(ctr[1] + 16))
    return t1, t2, box


def test_registration_recovers_known_translation(moved_pair):
    t1, t2, box = moved_pair
    rec = register_rigid(t1, t2, box, tuple(BOX_SLICES), ExtractConfig())
    assert rec.performed and rec.accepted, rec.reason
    # ITK maps fixed (T2) points to moving (T1) points: the anatomy moved by +SHIFT in T1.
    assert np.linalg.norm(np.asarray(rec.translation_mm) - SHIFT) < 1.0
    assert np.abs(rec.rotation_deg).max() < 2.0
    assert rec.metric_after < rec.metric_before
    assert rec.iterations > 0 and rec.seconds > 0
    # The matrix used for the patches moves the box centre by about SHIFT.
    c = np.asarray(rec.center_mm)
    moved = rec.transform @ np.append(c, 1.0)
    assert np.linalg.norm(moved[:3] - c - SHIFT) < 1.0


def test_registered_t1_channels_match_the_anatomy_better(moved_pair):
    t1, t2, box = moved_pair
    grid = crop_grid(t2, box, 64)
    truth = spine(plane_points(t2, grid, 4), "t1")  # T1 contrast of the T2 plane's anatomy, no motion
    geo = extract_patches(t1, t2, BOX_SLICES, box, ExtractConfig(register=False), patient_id="p")
    reg = extract_patches(t1, t2, BOX_SLICES, box, ExtractConfig(), patient_id="p")
    r_geo = np.corrcoef(geo.x[1, 1].ravel(), truth)[0, 1]
    r_reg = np.corrcoef(reg.x[1, 1].ravel(), truth)[0, 1]
    assert r_reg > 0.95 and r_reg > r_geo + 0.02
    # T2 channels do not depend on the registration.
    np.testing.assert_array_equal(geo.x[:, 3:], reg.x[:, 3:])
    summary = reg.summary()["registration"]
    assert summary["accepted"] and len(summary["matrix"]) == 4


def test_translation_beyond_bound_is_rejected_and_geometry_kept(moved_pair):
    t1, t2, box = moved_pair
    cfg = ExtractConfig(max_translation_mm=1.0)
    rec = register_rigid(t1, t2, box, tuple(BOX_SLICES), cfg)
    assert rec.performed and not rec.accepted
    assert "exceeds the bound" in rec.reason and "geometry-only" in rec.reason
    np.testing.assert_array_equal(rec.transform, np.eye(4))
    # The found transform is still recorded.
    assert np.linalg.norm(rec.translation_mm) > 1.0
    geo = extract_patches(t1, t2, BOX_SLICES, box, ExtractConfig(register=False), patient_id="p")
    rej = extract_patches(t1, t2, BOX_SLICES, box, cfg, patient_id="p")
    np.testing.assert_array_equal(geo.x, rej.x)


def test_registration_off_records_it(moved_pair):
    t1, t2, box = moved_pair
    cp = extract_patches(t1, t2, BOX_SLICES, box, ExtractConfig(register=False), patient_id="p")
    assert not cp.registration.performed and not cp.registration.accepted
    assert "off" in cp.registration.reason
