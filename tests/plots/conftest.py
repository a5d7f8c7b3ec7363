"""Fixtures of the figure tests: a small survey store run once for the package, one of its complete
datasets, an in-memory dataset with non-square pixels and a shifted origin, and a multi-extension
FITS survey (two bands per lens, BUNIT cards, one failing dataset) run with `lenspipe run`."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from pipeline import Mask2D
from pipeline.cli import main
from pipeline.flow.config import load_config
from pipeline.flow.run import run_survey
from pipeline.imaging import Array2D, Imaging
from pipeline.io.store import list_datasets, open_imaging
from pipeline.mock import simulate_lens, simulate_survey
from tests.plots.mef import write_mef_survey
from tests.plots.support import BROKEN


@pytest.fixture(scope="package")
def store(tmp_path_factory) -> str:
    """Three simulated lenses run on a one-worker LocalCluster: two complete, one failed."""
    folder = tmp_path_factory.mktemp("survey")
    config_path = simulate_survey(folder, 3, seed=10, shape_range=(40, 50), psf_shapes=(5, 7))
    config = yaml.safe_load(config_path.read_text())
    config["cluster"] = {"kind": "local", "n_workers": 1}
    config["run"]["progress"] = False
    config["over_sampling"] = {
        "kind": "radial",
        "sub_size_list": [4, 2, 1],
        "radial_list": [0.4, 1],
    }
    config_path.write_text(yaml.safe_dump(config))
    (folder / BROKEN / "noise_map.fits").write_bytes(b"not a FITS file")
    summary = run_survey(load_config(config_path))
    assert summary.complete == 2 and summary.failed == 1
    return str(folder / "survey.zarr")


@pytest.fixture(scope="package")
def stored(store) -> Imaging:
    name = next(n for n, status in list_datasets(store).items() if status == "complete")
    return open_imaging(store, name)


@pytest.fixture(scope="package")
def skewed() -> Imaging:
    """Non-square pixels, a non-square frame, a shifted origin, an off-centre mask: any mix-up of
    axes or orientation shows."""
    lens = simulate_lens((31, 24), (0.08, 0.05), psf_shape=(5, 3), seed=4)
    origin = (0.3, -0.2)
    mask = Mask2D.circular(
        shape_native=lens.shape_native,
        pixel_scales=lens.pixel_scales,
        radius=0.9,
        centre=(0.25, 0.1),
    )
    mask = Mask2D(np.asarray(mask), lens.pixel_scales, origin)
    sizes = np.where(np.arange(mask.size).reshape(mask.shape) % 3 == 0, 3, 1)
    imaging = Imaging(
        Array2D(lens.data.native, mask),
        Array2D(lens.noise_map.native, mask),
        lens.psf,
        over_sample_size_lp=Array2D(sizes, mask),
        name="skewed",
    )
    return imaging.apply_sparse_operator(batch_size=64, backend="numpy")


@pytest.fixture(params=["stored", "skewed"])
def imaging(request) -> Imaging:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="package")
def mef_store(tmp_path_factory) -> str:
    """Three two-band lenses from multi-extension FITS cutouts, run by `lenspipe run` on one
    worker: five datasets complete, the last lens's NIR_H failed (NaN data)."""
    folder = tmp_path_factory.mktemp("mef")
    config = write_mef_survey(folder, 3)
    assert main(["run", str(config), "--no-progress"]) == 3  # finished, one dataset failed
    store = str(folder / "survey.zarr")
    assert sorted(list_datasets(store).values()) == ["complete"] * 5 + ["failed"]
    return store
