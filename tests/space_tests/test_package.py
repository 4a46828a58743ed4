"""The ``space`` package: its public names, and that its light parts do not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import space


@pytest.mark.parametrize("name", space.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(space, name) is not None
    assert name in dir(space)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        space.nope  # noqa: B018


def test_cli_start_does_not_import_torch() -> None:
    # Every `pikenas` call (and `--help`) imports the CLI package; torch costs ~2 s.
    code = "import sys, search.cli, space; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
