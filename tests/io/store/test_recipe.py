"""What a worker opens (pipeline/io/store/recipe.py): one root group per process, location and
storage options; a dataset's operator inputs and batch geometry read once."""

from __future__ import annotations

import numpy as np

from pipeline.io.store import (
    StoreRecipe,
    cached_root,
    open_imaging,
    operator_batch_count,
    operator_batch_inputs,
    write_imaging,
)
from pipeline.operators import BatchGeometry, OperatorInputs
from tests.io.store.support import BATCH


def test_the_root_is_opened_once_per_location_and_options(tmp_path, imaging):
    write_imaging(tmp_path / "s.zarr", "lens", imaging, batch_size=BATCH)
    location = str(tmp_path / "s.zarr")
    first = cached_root(location)
    assert cached_root(location) is first
    assert cached_root(location, {}) is first  # no options and empty options: one key
    assert StoreRecipe(location).root() is first
    write_imaging(tmp_path / "t.zarr", "lens", imaging, batch_size=BATCH)
    assert cached_root(str(tmp_path / "t.zarr")) is not first


def test_operator_batch_inputs_are_the_datasets(tmp_path, imaging):
    write_imaging(tmp_path / "s.zarr", "lens", imaging, batch_size=BATCH)
    location = str(tmp_path / "s.zarr")
    found = operator_batch_inputs(location, "lens", token="a")
    assert found is operator_batch_inputs(location, "lens", token="a")
    assert found is StoreRecipe(location).operator_batch_inputs("lens", "a")
    assert found.geometry == BatchGeometry(imaging.shape_slim, BATCH)
    assert len(found.geometry) == operator_batch_count(cached_root(location), "lens") == 6
    expected = OperatorInputs.from_noise_map(
        imaging.noise_map.native, np.asarray(imaging.mask), imaging.psf.kernel.native
    )
    np.testing.assert_array_equal(found.inputs.inverse_variance, expected.inverse_variance)
    assert open_imaging(location, "lens").sparse_operator is not None
