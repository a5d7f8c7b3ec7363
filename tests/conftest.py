"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests.helpers import CASE_IDS, ReferenceCase, load_case


@pytest.fixture(params=CASE_IDS, scope="session")
def reference_case(request) -> ReferenceCase:
    """Each reference case computed by PyAutoArray (tests/data/c*/)."""
    return load_case(request.param)
