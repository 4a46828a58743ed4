"""The plain ``postgresql://`` URL of Optuna's documentation works with the installed driver
(SQLAlchemy 2.1 would pick psycopg 3, which pikenas does not install), on a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pikenas.search.cli import main
from tests.search_tests.fakes import FAKE

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_a_bare_postgresql_url_works(
    config_file: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = "postgresql://" + postgres_url.split("://", 1)[1]
    worker = ["worker", str(config_file), "--storage", bare, "--trials", "3", "--evaluator", FAKE]
    assert main(worker) == 0
    assert main(["front", bare, "--json"]) == 0
    assert "3 COMPLETE trials" in capsys.readouterr().out
