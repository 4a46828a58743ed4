from __future__ import annotations

import pytest

from results.outputs import write_run_outputs
from tests.results_tests._studies import Point, make_run


@pytest.mark.slow
def test_run_outputs_land_in_the_run_folder(tmp_path):
    make_run(tmp_path, [Point(0.5, 10.0, bits=((2, 2),)), Point(0.4, 20.0)])
    outputs = write_run_outputs(tmp_path)
    assert outputs.front_csv == tmp_path / "front.csv" and outputs.front_csv.is_file()
    assert outputs.dashboard == tmp_path / "dashboard.html" and outputs.dashboard.is_file()
    assert outputs.exports == [tmp_path / "exports" / "trial-0"]
    assert (tmp_path / "exports" / "trial-0" / "model.onnx").is_file()
