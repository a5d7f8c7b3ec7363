"""Shared figure machinery: arcsec extents, and no figure ever touches pyplot."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipeline.imaging.geometry import pixel_centre_coordinates
from pipeline.plots import extent_of


def test_extent_is_half_a_pixel_beyond_the_pixel_centres():
    shape, scales, origin = (5, 4), (0.2, 0.1), (1.0, -2.0)
    y, x = pixel_centre_coordinates(shape, scales, origin)
    x_min, x_max, y_min, y_max = extent_of(shape, scales, origin)
    assert x_min == pytest.approx(x.min() - 0.05) and x_max == pytest.approx(x.max() + 0.05)
    assert y_min == pytest.approx(y.min() - 0.1) and y_max == pytest.approx(y.max() + 0.1)
    # row 0 is the top (largest y): imshow(origin="upper") puts it at y_max
    assert y[0, 0] > y[-1, 0]


def test_plots_never_touch_pyplot(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from pipeline.mock import simulate_lens
        from pipeline import Mask2D, plots
        lens = simulate_lens((24, 24), 0.1, psf_shape=(3, 3), seed=1)
        lens = lens.apply_mask(Mask2D.circular(shape_native=(24, 24), radius=1.0, pixel_scales=0.1))
        lens = lens.apply_sparse_operator(backend="numpy")
        plots.dataset_panel(lens).savefig({str(tmp_path / "a.png")!r})
        plots.operator_panel(lens).savefig({str(tmp_path / "b.png")!r})
        snr = plots.snr_map(lens.data.native, lens.noise_map.native, lens.mask)
        plots.write_thumbnail({str(tmp_path / "c.png")!r}, plots.thumbnail_rgba(snr, lens.mask))
        plots.report_html([plots.ReportEntry(name="x", status="complete")], store="s")
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        """
    )
    env_python = sys.executable
    result = subprocess.run(
        [env_python, "-W", "error", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / name).stat().st_size > 0
