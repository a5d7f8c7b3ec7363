"""Integrity (issue 11, scope 3): one flipped bit in any stored chunk of a complete dataset, of
every array kind, is found by ``check_dataset`` (the right node, or the right operator batch)
and reading the dataset raises a ``DamagedDatasetError`` naming it: never silently different
values. Also: a node the status promises (the operator group) missing, and a chunk lost.

``flip_random_bit`` is shared with the driver's repair test (``lenspipe run --verify`` restores
the store bit for bit)."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline import Mask2D
from pipeline.exc import DamagedDatasetError, StoreError
from pipeline.io.store import check_dataset, open_imaging, verify_dataset, write_imaging
from pipeline.mock import simulate_lens

NAME = "lens_flip"
BATCH = 100  # N = 1020 below: 11 batches, the last one partial
TRIALS_PER_KIND = 10
OPERATOR = "sparse_operator"
VALUES, OFFSETS, MARKERS = f"{OPERATOR}/values", f"{OPERATOR}/offsets", f"{OPERATOR}/batches_done"
# every array a complete dataset with a PSF and an operator (and no covariance) stores
KINDS = (
    "data",
    "noise_map",
    "mask",
    "psf",
    "over_sample_size_lp",
    "over_sample_size_pixelization",
    "grid",
    VALUES,
    OFFSETS,
    MARKERS,
)


@dataclass(frozen=True)
class Flip:
    """One flipped bit: the chunk file, its dataset, array node (relative to the dataset) and
    chunk coordinates, the byte offset and bit (0 = least significant)."""

    path: Path
    dataset: str
    node: str
    chunk: tuple[int, ...]
    byte: int
    bit: int


def chunk_files(store: Path, dataset: str, node: str) -> list[Path]:
    """The stored chunk files of array ``node`` of ``dataset`` in a local store, sorted."""
    folder = store / "datasets" / dataset / node / "c"
    return sorted(p for p in folder.rglob("*") if p.is_file())


def flip_random_bit(
    store: Path,
    rng: np.random.Generator,
    *,
    dataset: str | None = None,
    node: str | None = None,
) -> Flip:
    """Flip one random bit of one random stored chunk file in a local store, in place: of
    ``dataset`` (default: a random dataset of the store) and array ``node`` (default: a random
    one of ``KINDS`` that has chunks). Returns what was flipped (flip it again to undo)."""
    if dataset is None:
        names = sorted(p.name for p in (store / "datasets").iterdir() if p.is_dir())
        dataset = names[int(rng.integers(len(names)))]
    if node is None:
        kinds = [kind for kind in KINDS if chunk_files(store, dataset, kind)]
        node = kinds[int(rng.integers(len(kinds)))]
    files = chunk_files(store, dataset, node)
    path = files[int(rng.integers(len(files)))]
    raw = bytearray(path.read_bytes())
    byte, bit = int(rng.integers(len(raw))), int(rng.integers(8))
    raw[byte] ^= 1 << bit
    path.write_bytes(bytes(raw))
    folder = store / "datasets" / dataset / node / "c"
    chunk = tuple(int(part) for part in path.relative_to(folder).parts)
    return Flip(path, dataset, node, chunk, byte, bit)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A complete dataset (40x40 pixels, N = 1020, 5x5 PSF, float64 operator in 11 batches, no
    covariance), checked intact."""
    raw = simulate_lens((40, 40), 0.1, psf_shape=(5, 5), seed=11)
    imaging = raw.apply_mask(
        Mask2D.circular(shape_native=(40, 40), pixel_scales=0.1, radius=1.8)
    ).apply_over_sampling(2, 4)
    imaging = imaging.apply_sparse_operator(batch_size=256, backend="numpy")
    store = tmp_path_factory.mktemp("pristine") / "survey.zarr"
    write_imaging(store, NAME, imaging, batch_size=BATCH)
    check = check_dataset(store, NAME)
    assert check.ok and check.status == "complete", check
    assert len(chunk_files(store, NAME, VALUES)) == 11
    assert len(chunk_files(store, NAME, MARKERS)) == 11
    for kind in KINDS:
        assert chunk_files(store, NAME, kind), kind
    return store


def _read_everything(store: Path) -> None:
    imaging = open_imaging(store, NAME)
    _ = imaging.sparse_operator.values


def unflip(flip: Flip) -> None:
    """Undo ``flip`` (flip the same bit back)."""
    raw = bytearray(flip.path.read_bytes())
    raw[flip.byte] ^= 1 << flip.bit
    flip.path.write_bytes(bytes(raw))


def test_every_flipped_bit_is_detected_by_check_and_on_read(pristine, tmp_path):
    rng = np.random.default_rng(20261130)
    detected_by_check: Counter[str] = Counter()
    detected_on_read: Counter[str] = Counter()
    store = tmp_path / "survey.zarr"
    shutil.copytree(pristine, store)
    start = time.perf_counter()
    for trial in range(TRIALS_PER_KIND * len(KINDS)):
        kind = KINDS[trial % len(KINDS)]  # stratified: every kind gets TRIALS_PER_KIND flips
        flip = flip_random_bit(store, rng, dataset=NAME, node=kind)
        context = f"trial {trial}: {flip}"

        check = check_dataset(store, NAME)
        assert not check.ok, context
        if kind in (VALUES, MARKERS):
            # only that batch: recomputed from the inputs, the rest of the dataset is kept
            assert check.damaged_batches == [flip.chunk[0]], context
            assert not check.needs_prepare and not check.damaged_arrays, context
            assert not check.missing_nodes, context
        else:
            # any other array: the dataset is prepared again from its inputs
            assert list(check.damaged_arrays) == [kind], context
            assert "does not decode" in check.damaged_arrays[kind], context
            assert check.needs_prepare and not check.missing_nodes, context
        detected_by_check[kind] += 1

        with pytest.raises(StoreError) as info:
            _read_everything(store)
        error, message = info.value, str(info.value)
        assert isinstance(error, DamagedDatasetError), context
        assert repr(NAME) in message, (context, message)
        if kind == VALUES:
            assert f"batch(es) [{flip.chunk[0]}]" in message, (context, message)
            assert f"values/c/{flip.chunk[0]}/0" in message, (context, message)
        else:
            assert f"datasets/{NAME}/{kind}" in message, (context, message)
        assert "--verify" in message, (context, message)
        detected_on_read[kind] += 1

        if kind == VALUES:
            assert verify_dataset(store, NAME) == [flip.chunk[0]], context
        unflip(flip)  # reading never wrote: the store is pristine again
    elapsed = time.perf_counter() - start
    assert check_dataset(store, NAME).ok
    for path in pristine.rglob("*"):
        if path.is_file():
            assert (store / path.relative_to(pristine)).read_bytes() == path.read_bytes(), path
    expected = dict.fromkeys(KINDS, TRIALS_PER_KIND)
    assert dict(detected_by_check) == expected and dict(detected_on_read) == expected
    print(
        f"\n{sum(detected_on_read.values())} bit flips over {len(KINDS)} array kinds: all "
        f"detected by check_dataset and on read, {elapsed:.1f} s"
    )


def test_flip_helper_reports_what_it_flipped(pristine, tmp_path):
    store = tmp_path / "survey.zarr"
    shutil.copytree(pristine, store)
    rng = np.random.default_rng(1)
    flip = flip_random_bit(store, rng)  # random dataset and kind
    assert flip.dataset == NAME and flip.node in KINDS
    original = (pristine / flip.path.relative_to(store)).read_bytes()
    flipped = flip.path.read_bytes()
    assert len(flipped) == len(original)
    diff = [i for i, (a, b) in enumerate(zip(original, flipped, strict=True)) if a != b]
    assert diff == [flip.byte] and original[flip.byte] ^ flipped[flip.byte] == 1 << flip.bit
    # every other file is untouched
    for path in pristine.rglob("*"):
        if path.is_file() and path.relative_to(pristine) != flip.path.relative_to(store):
            assert (store / path.relative_to(pristine)).read_bytes() == path.read_bytes()


def test_missing_operator_group_document_is_damage_not_a_dataset_without_operator(
    pristine, tmp_path
):
    store = tmp_path / "survey.zarr"
    shutil.copytree(pristine, store)
    (store / "datasets" / NAME / OPERATOR / "zarr.json").unlink()
    check = check_dataset(store, NAME)
    assert check.missing_nodes == [OPERATOR] and check.needs_prepare and not check.ok
    with pytest.raises(DamagedDatasetError, match=rf"'{NAME}'.*{OPERATOR}.*missing.*--verify"):
        open_imaging(store, NAME)


@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_chunk_is_detected(pristine, tmp_path, kind):
    """Arrays are written whole (every chunk, even all zeros): a chunk file gone is damage,
    never the fill value read silently."""
    store = tmp_path / "survey.zarr"
    shutil.copytree(pristine, store)
    lost = chunk_files(store, NAME, kind)[-1]
    lost.unlink()
    check = check_dataset(store, NAME)
    assert not check.ok
    if kind in (VALUES, MARKERS):
        batch = int(lost.relative_to(store / "datasets" / NAME / kind / "c").parts[0])
        assert check.damaged_batches == [batch] and not check.needs_prepare
        reason = check.batch_reasons[batch]
        assert ("is missing" if kind == VALUES else "is not set") in reason
    else:
        assert list(check.damaged_arrays) == [kind] and check.needs_prepare
        assert "is missing" in check.damaged_arrays[kind]
    with pytest.raises(DamagedDatasetError, match=rf"'{NAME}'"):
        _read_everything(store)
