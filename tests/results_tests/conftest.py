from __future__ import annotations

import pytest

from tests.results_tests._studies import MIXED, make_run


@pytest.fixture(scope="session")
def mixed_run(tmp_path_factory):
    """A run folder holding the MIXED study; shared, so tests must not write into it."""
    run = tmp_path_factory.mktemp("mixed") / "run"
    make_run(run, MIXED)
    return run
