"""Hostile inputs and faults of a search (issue 22): a worker with another evaluator than its
study's, a corrupt rung checkpoint, a ``--out`` path that is not UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest

from pikenas.results.record import StudyRecord
from pikenas.results.storage import JOURNAL_NAME, open_study
from pikenas.search.cli import main
from tests.search_tests.fakes import FAKE, FAKE_TRAINING


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _search(config: Path, out: Path, *options: str) -> list[str]:
    return [
        "search", str(config), "--out", str(out), "--trials", "3", "--workers", "1",
        "--full-train-top", "0", "--no-export", *options,
    ]  # fmt: skip


def test_a_worker_with_another_evaluator_is_refused(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_search(config_file, out, "--evaluator", FAKE)) == 0
    study = open_study(out)
    assert StudyRecord.of(study).evaluator == FAKE
    trials = len(study.trials)
    capsys.readouterr()
    storage = str(out / JOURNAL_NAME)
    for other in ([], ["--evaluator", FAKE_TRAINING]):  # the real one, another fake
        argv = ["worker", str(config_file), "--storage", storage, "--study", "pikenas"]
        assert main([*argv, "--trials", "6", *other]) == 2
        line = _one_error_line(capsys)
        assert f"evaluated by '{FAKE}'" in line and f"--evaluator {FAKE}" in line, line
    assert len(open_study(out).trials) == trials  # nothing evaluated by the others
    assert main(_search(config_file, out)) == 2  # nor does a rerun of the search
    assert f"evaluated by '{FAKE}'" in _one_error_line(capsys)
    # the same evaluator joins
    argv = ["worker", str(config_file), "--storage", storage, "--trials", "4"]
    assert main([*argv, "--evaluator", FAKE]) == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage, not safetensors", b"\xff" * 8 + b"{}", b"\x08\x00\x00\x00", None],
)
def test_a_corrupt_rung_checkpoint_is_discarded_and_the_rung_retrained(
    tmp_path: Path, config_file: Path, content: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    from pikenas.evaluators.candidate import ProxyEvaluator, RungBudget
    from pikenas.search.config import load_config

    config = load_config(config_file)
    config = config.model_copy(update={"proxy": config.proxy.replace(epochs=2, data_fraction=0.1)})
    evaluator = ProxyEvaluator(config.evaluator_setup())
    arch = evaluator.fit(config.space.decode(config.space.default_params()))
    checkpoint = tmp_path / "checkpoints" / "pikenas" / f"{arch.archid}.safetensors"
    checkpoint.parent.mkdir(parents=True)
    if content is None:  # a real checkpoint cut in half (a worker killed while copying it)
        evaluator.proxy(arch, RungBudget(1, checkpoint))
        content = checkpoint.read_bytes()[: checkpoint.stat().st_size // 2]
    checkpoint.write_bytes(content)
    first = evaluator.proxy(arch, RungBudget(1, checkpoint))
    assert "discarded an unreadable rung checkpoint" in caplog.text
    assert checkpoint.stat().st_size > len(content)  # a new checkpoint, after epoch 1
    clean = tmp_path / "clean.safetensors"

    def measured(rung: RungBudget) -> tuple[float, float]:
        metrics = evaluator.proxy(arch, rung)
        return metrics.val_accuracy, metrics.val_loss

    assert measured(RungBudget(1, clean)) == (first.val_accuracy, first.val_loss)  # as fresh
    # and the next rung continues the new checkpoint exactly as it continues a clean one
    assert measured(RungBudget(2, checkpoint)) == measured(RungBudget(2, clean))


@pytest.mark.parametrize(
    ("name", "storage"),
    [("\udcffdir", None), ("ok/\udcfe\udcff/run", None), ("run", "\udcff.log")],
)
def test_a_run_path_that_is_not_utf8_is_refused_before_anything_is_written(
    tmp_path: Path,
    config_file: Path,
    name: str,
    storage: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / name  # as Python gives a command line's undecodable bytes (surrogates)
    options = ["--storage", str(tmp_path / storage)] if storage else []
    before = sorted(tmp_path.rglob("*"))
    assert main(_search(config_file, out, "--evaluator", FAKE, *options)) == 2
    line = _one_error_line(capsys)
    assert "not a valid UTF-8 path" in line and "\\xff" in line, line
    assert sorted(tmp_path.rglob("*")) == before  # no folder, config.yaml or study.log
