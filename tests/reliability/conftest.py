"""Fixtures of the reliability suite: the busy survey's inputs and its undisturbed run (the
reference every disturbed run must equal bit for bit), computed once per session."""

from __future__ import annotations

import pytest

from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import LocalClusterConfig, load_config
from pipeline.flow.run import run_survey
from tests.reliability.support import make_busy_inputs, total_batches, write_config


@pytest.fixture(scope="session")
def busy_manifest(tmp_path_factory):
    """The busy survey's manifest (inputs shared by every test; each writes its own store)."""
    return make_busy_inputs(tmp_path_factory.mktemp("busy-inputs"))


@pytest.fixture(scope="session")
def busy_reference(busy_manifest, tmp_path_factory):
    """An undisturbed run of the busy survey with the pipeline's own worker settings:
    (store path, total number of operator batches)."""
    folder = tmp_path_factory.mktemp("busy-reference")
    config = load_config(write_config(folder / "survey.yaml", busy_manifest, folder / "ref.zarr"))
    with cluster_client(LocalClusterConfig(n_workers=2)) as client:
        summary = run_survey(config, client=client, progress=False)
    assert summary.exit_code == 0 and summary.failed == 0, summary.table()
    store = folder / "ref.zarr"
    assert summary.shards_computed == total_batches(store)
    return store, summary.shards_computed
