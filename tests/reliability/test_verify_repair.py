"""Repair (issue 11, scope 3): one random bit flipped in a random stored chunk of each complete
dataset, every array kind in turn (100 flips), is reported on read, and ``lenspipe run --verify``
(``run_survey(..., verify=True)``) restores the store bit for bit: every chunk file byte for byte
and every array value. Damaged operator batches are recomputed alone; damage anywhere else
prepares the dataset again from its inputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.exc import StoreError
from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import LocalClusterConfig, load_config
from pipeline.flow.run import run_survey
from pipeline.io.store import check_dataset, open_imaging
from pipeline.mock import simulate_survey
from tests.reliability.support import assert_stores_equal
from tests.reliability.test_integrity import KINDS, flip_random_bit

pytestmark = pytest.mark.timeout(600)

N_DATASETS = 10
ROUNDS = 10  # ROUNDS x N_DATASETS = 100 flips, each of the 10 array kinds 10 times


def chunk_bytes(store: Path) -> dict[str, bytes]:
    """Every chunk file of every dataset (not the metadata documents, whose attributes carry a
    fresh token and time when a dataset is prepared again)."""
    out = {}
    for path in (store / "datasets").rglob("*"):
        if path.is_file() and path.name != "zarr.json":
            out[os.fspath(path.relative_to(store))] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    folder = tmp_path_factory.mktemp("repair")
    config_path = simulate_survey(
        folder, N_DATASETS, seed=70, shape_range=(40, 40), psf_shapes=(5,), batch_size=100
    )
    config = load_config(config_path)
    with cluster_client(LocalClusterConfig(n_workers=2)) as client:
        assert run_survey(config, client=client, progress=False).exit_code == 0
        store = Path(config.store_location)
        pristine = folder / "pristine.zarr"
        shutil.copytree(store, pristine)
        yield config_path, config, client, store, pristine


def test_every_flipped_bit_is_read_as_damage_and_verify_restores_the_store(survey):
    config_path, config, client, store, pristine = survey
    names = sorted(p.name for p in (store / "datasets").iterdir() if p.is_dir())
    assert len(names) == N_DATASETS
    want = chunk_bytes(pristine)
    rng = np.random.default_rng(2026)
    kinds_flipped: list[str] = []
    for round_index in range(ROUNDS):
        flips = []
        for i, name in enumerate(names):
            kind = KINDS[(round_index + i) % len(KINDS)]
            flips.append(flip_random_bit(store, rng, dataset=name, node=kind))
            kinds_flipped.append(kind)
        # each flip is damage on read: a StoreError naming the dataset, never other values
        for flip in flips:
            with pytest.raises(StoreError, match=flip.dataset):
                open_imaging(store, flip.dataset).sparse_operator.values[...]
            assert not check_dataset(store, flip.dataset).ok
        assert chunk_bytes(store) != want
        if round_index == ROUNDS - 1:  # the last round through the command line
            assert main(["run", os.fspath(config_path), "--no-progress", "--verify"]) == 0
        else:
            summary = run_survey(config, client=client, progress=False, verify=True)
            assert summary.exit_code == 0, summary.table()
            operator_flips = sum(f.node.startswith("sparse_operator/") for f in flips)
            offsets_flips = sum(f.node == "sparse_operator/offsets" for f in flips)
            # values and marker flips: that batch alone; any other array: prepared again
            assert summary.rebuilt == N_DATASETS - operator_flips + offsets_flips
            assert summary.shards_damaged == operator_flips - offsets_flips
        assert chunk_bytes(store) == want, f"round {round_index}: not restored byte for byte"
        assert_stores_equal(store, pristine)
    assert sorted(set(kinds_flipped)) == sorted(KINDS)
    assert all(kinds_flipped.count(kind) == ROUNDS for kind in KINDS)
