"""Shared helpers of the store tests: the two test datasets' geometry, writing shortcuts, and
raw store access (keys, bytes) as damage sees it."""

from __future__ import annotations

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pipeline import Array2D, Imaging, Mask2D
from pipeline.io.store import (
    create_store,
    prepare_dataset,
    write_imaging,
    write_operator_batch,
)
from pipeline.mock import simulate_lens
from tests.reliability.test_integrity import KINDS

SHAPE = (24, 28)
SCALES = (0.1, 0.12)
ORIGIN = (0.3, -0.2)
BATCH = 50  # N = 260 below: 6 batches, the last one partial (10 rows)
ARRAYS = KINDS  # every array a complete dataset with an operator stores


def masked(seed: int, radius: float, psf_shape=(5, 7)) -> Imaging:
    """A simulated lens on a frame with a non-zero origin, masked, with per-pixel over-sampling
    and no operator yet."""
    raw = simulate_lens(SHAPE, SCALES, psf_shape=psf_shape, seed=seed)
    frame = Mask2D.all_false(SHAPE, SCALES, origin=ORIGIN)
    imaging = Imaging(
        Array2D(raw.data.native, frame), Array2D(raw.noise_map.native, frame), raw.psf
    ).apply_mask(
        Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALES, radius=radius, origin=ORIGIN)
    )
    sizes = np.random.default_rng(seed).integers(1, 5, size=imaging.shape_slim)
    return imaging.apply_over_sampling(sizes, 2)


def kw(loc) -> dict:
    return {"storage_options": loc.storage_options}


def prepare(loc, name: str, imaging: Imaging, **kwargs):
    root = create_store(loc.location, **kw(loc))
    prepare_dataset(root, name, imaging, batch_size=BATCH, **kwargs)
    return root


def write_batches(root, name: str, values: np.ndarray, skip=()) -> None:
    for index, start in enumerate(range(0, len(values), BATCH)):
        if index not in skip:
            write_operator_batch(root, name, index, values[start : start + BATCH])


def raw_store(loc):
    """The ``zarr.abc.store.Store`` under a location: raw keys, as damage sees them."""
    return loc.open_zarr_group(mode="r+").store


def raw_keys(loc, prefix: str) -> list[str]:
    store = raw_store(loc)

    async def listing() -> list[str]:
        return sorted([key async for key in store.list_prefix(prefix)])

    return sync(listing())


def raw_delete(loc, key: str) -> None:
    store = raw_store(loc)
    assert sync(store.exists(key)), key
    sync(store.delete(key))


def raw_put(loc, key: str, payload: bytes) -> None:
    sync(raw_store(loc).set(key, default_buffer_prototype().buffer.from_bytes(payload)))


def raw_get(loc, key: str) -> bytes | None:
    buffer = sync(raw_store(loc).get(key, prototype=default_buffer_prototype()))
    return None if buffer is None else buffer.to_bytes()


def write_complete(loc, imaging, name="lens"):
    write_imaging(loc.location, name, imaging, batch_size=BATCH, **kw(loc))
