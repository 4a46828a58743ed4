"""The ``space`` package: its public names, and that its light parts do not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pikenas import space


@pytest.mark.parametrize("name", space.__all__)
def test_every_public_name_is_the_object_of_its_module(name: str) -> None:
    """``space.X`` is the very object its defining module exports (lazily loaded or not), and
    that module lists it in its own ``__all__``."""
    import importlib

    value = getattr(space, name)
    home = space._LAZY.get(name)
    if home is not None:
        module = importlib.import_module(f"pikenas.space.{home}")
    else:
        module = next(m for m in (space.arch, space.errors) if name in m.__all__)
    assert getattr(module, name) is value
    assert name in module.__all__
    assert name in dir(space)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        space.nope  # noqa: B018


def test_cli_start_does_not_import_torch() -> None:
    # Every `pikenas` call (and `--help`) imports the CLI package; torch costs ~2 s.
    code = "import sys, pikenas.search.cli, pikenas.space; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
