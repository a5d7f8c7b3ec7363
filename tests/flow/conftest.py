"""Fixtures of the flow tests: a real one-node SLURM (:mod:`tests.flow.slurm`), started once per
session by the first test that asks for it."""

from __future__ import annotations

import pytest

from tests.flow.slurm import Slurm, one_node_slurm


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Slurm:
    """munged, slurmctld and slurmd on this host, its node idle; every job cancelled and every
    daemon stopped (by pid) at the end of the session."""
    with one_node_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
