"""S/N thumbnails: the S/N values and numbers, the mask outline where the mask boundary is, the
colours of masked, outline and unmasked pixels, binning of large frames, the PNG written."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from pipeline.exc import DatasetError
from pipeline.plots.thumbnails import (
    DIMMED,
    OUTLINE,
    bin_frame,
    mask_outline,
    snr_map,
    snr_numbers,
    thumbnail_rgba,
    write_thumbnail,
)
from tests.plots.support import PNG_SIGNATURE


@pytest.fixture
def frame():
    rng = np.random.default_rng(3)
    ny, nx = 30, 22
    rows, cols = np.mgrid[:ny, :nx]
    mask = (rows - 14.2) ** 2 + (cols - 10.7) ** 2 > 8.5**2  # True = masked
    noise = rng.uniform(0.5, 2.0, (ny, nx))
    data = rng.normal(3.0, 4.0, (ny, nx))
    data[mask] = noise[mask] = 0.0  # as a prepared dataset stores them
    return data, noise, mask


def test_snr_values_and_numbers(frame):
    data, noise, mask = frame
    snr = snr_map(data, noise, mask)
    np.testing.assert_array_equal(snr[~mask], data[~mask] / noise[~mask])
    assert np.isnan(snr[mask]).all()
    numbers = snr_numbers(snr, mask)
    expected = data[~mask] / noise[~mask]
    assert numbers.peak == expected.max() and numbers.median == np.median(expected)
    assert numbers.n_unmasked == (~mask).sum() and (expected < 0).any()  # negatives kept

    # an unmasked pixel without a finite S/N (zero noise) counts as unmasked, not as a value
    noise = noise.copy()
    row, col = np.argwhere(~mask)[0]
    noise[row, col] = 0.0
    snr = snr_map(data, noise, mask)
    assert np.isnan(snr[row, col])
    numbers = snr_numbers(snr, mask)
    keep = ~mask
    keep[row, col] = False
    assert numbers.peak == (data[keep] / noise[keep]).max()
    assert numbers.n_unmasked == (~mask).sum()
    assert snr_numbers(snr, np.ones_like(mask)).peak is None
    with pytest.raises(DatasetError, match="one shape"):
        snr_map(data, noise[:-1], mask)


def test_mask_outline_is_the_masked_ring_around_the_unmasked_region():
    mask = np.ones((6, 7), dtype=bool)
    mask[2:4, 2:5] = False  # a 2x3 unmasked block
    outline = mask_outline(mask)
    expected = np.zeros_like(mask)
    expected[1, 2:5] = expected[4, 2:5] = True  # above and below
    expected[2:4, 1] = expected[2:4, 5] = True  # left and right (corners touch only diagonally)
    np.testing.assert_array_equal(outline, expected)
    # brute force on a random mask: masked, with an unmasked pixel up, down, left or right
    rng = np.random.default_rng(1)
    mask = rng.random((15, 12)) < 0.6
    ny, nx = mask.shape
    brute = np.zeros_like(mask)
    for r in range(ny):
        for c in range(nx):
            near = [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
            brute[r, c] = mask[r, c] and any(
                0 <= i < ny and 0 <= j < nx and not mask[i, j] for i, j in near
            )
    np.testing.assert_array_equal(mask_outline(mask), brute)
    assert not mask_outline(np.zeros((4, 4), dtype=bool)).any()  # nothing masked: no outline


def test_thumbnail_colours(frame, tmp_path):
    data, noise, mask = frame
    snr = snr_map(data, noise, mask)
    rgba = thumbnail_rgba(snr, mask, stretch="linear")
    assert rgba.shape == (*mask.shape, 4) and rgba.dtype == np.uint8
    outline = mask_outline(mask)
    assert outline.sum() > 20
    assert (rgba[outline] == OUTLINE).all()
    assert (rgba[mask & ~outline] == DIMMED).all()
    # unmasked: cividis of S/N on 0..peak (negative S/N at the dark end)
    peak = snr[~mask].max()
    expected = matplotlib.colormaps["cividis"](np.clip(snr[~mask] / peak, 0, 1), bytes=True)
    np.testing.assert_array_equal(rgba[~mask], expected)
    # the asinh stretch lifts the faint pixels and keeps the ends
    lifted = thumbnail_rgba(snr, mask, stretch="asinh")
    faint = ~mask & (snr > 0.05 * peak) & (snr < 0.3 * peak)
    assert faint.sum() > 10
    assert (
        lifted[faint, :3].astype(int).sum(axis=1) > rgba[faint, :3].astype(int).sum(axis=1)
    ).all()
    top = np.unravel_index(np.nanargmax(snr), snr.shape)
    assert (lifted[top] == rgba[top]).all()
    assert (lifted[mask] == rgba[mask]).all()

    path = tmp_path / "thumb.png"
    write_thumbnail(path, rgba)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    np.testing.assert_array_equal(np.round(imread(path) * 255).astype(np.uint8), rgba)
    with pytest.raises(DatasetError, match="stretch 'log'"):
        thumbnail_rgba(snr, mask, stretch="log")


def test_large_frames_are_binned():
    snr = np.arange(8 * 6, dtype=float).reshape(8, 6)
    mask = np.zeros((8, 6), dtype=bool)
    mask[:4, :4] = True  # the top-left 4x4 block is all masked
    mask[5, 5] = True  # a single masked pixel: its block mean leaves it out
    binned, binned_mask = bin_frame(snr, mask, 4)
    # 8x6 padded to 8x8: blocks of 4x4, the right ones half padding (masked)
    assert binned.shape == binned_mask.shape == (2, 2)
    np.testing.assert_array_equal(binned_mask, [[True, False], [False, False]])
    assert np.isnan(binned[0, 0])
    assert binned[0, 1] == snr[:4, 4:6].mean()
    lower = snr[4:8, :4]
    assert binned[1, 0] == lower.mean()
    right = snr[4:8, 4:6].copy()
    right[1, 1] = np.nan  # (5, 5) is masked
    assert binned[1, 1] == np.nanmean(right)

    big = np.ones((600, 300))
    rgba = thumbnail_rgba(big, np.zeros(big.shape, dtype=bool), max_side=256)
    assert rgba.shape == (200, 100, 4)  # binned by 3: the smallest factor reaching 256
