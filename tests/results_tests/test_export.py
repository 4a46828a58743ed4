from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import save_file

from pikenas.evaluators._atomic import LEDGER_NAME, atomic_directory
from pikenas.evaluators.cost import count_ace
from pikenas.results.export.bundle import (
    ARCH_FILE,
    CARD_FILE,
    COST_FILE,
    ONNX_FILE,
    QONNX_FILE,
    RUNNER_FILE,
    WEIGHTS_FILE,
    BundleError,
    export_onnx,
    export_pareto,
    export_trained,
    export_trial,
    load_bundle,
)
from pikenas.space.arch import ArchConfig, ConvQuantSpec, PikeBlockSpec
from pikenas.space.errors import ArchConfigError, EvaluationError, RunDirError
from pikenas.space.nn.build import build_model
from pikenas.space.program.ir import CONSTANTS_FILE, PROGRAM_FILE, IntegerProgram
from tests.results_tests._studies import Point, make_run, tiny_arch

torch.set_num_threads(1)
TRAINED_BITS = ((4, 4), (4, 4))


def trained_final_dir(tmp_path):
    """A fake full-training folder: arch.json + weights that differ from the initial ones."""
    arch = tiny_arch(TRAINED_BITS)
    model = build_model(arch, seed=7)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "scale" not in name and "running_var" not in name:
                tensor.add_(0.1 * torch.randn_like(tensor))
    final = tmp_path / "final" / "trial-1"
    final.mkdir(parents=True)
    save_file(dict(model.state_dict()), str(final / WEIGHTS_FILE))
    (final / ARCH_FILE).write_text(arch.to_json())
    return final, model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    final, model = trained_final_dir(tmp_path)
    run = tmp_path / "run"
    make_run(
        run,
        [
            Point(0.5, 100.0, bits=((2, 2), (2, 2))),
            Point(
                0.9,
                900.0,
                bits=TRAINED_BITS,
                attrs={"final_dir": str(final), "final_accuracy": 0.93},
            ),
            Point(0.9, 900.0, bits=TRAINED_BITS, attrs={"status": "duplicate"}),
            Point(0.1, 950.0),
        ],
    )
    with atomic_directory(run / "exports" / "trial-0") as stale:  # an earlier export's bundle
        (stale / COST_FILE).write_text("from an earlier export")
    bundles = export_pareto(run)
    return run, bundles, model


@pytest.mark.slow
def test_pareto_export_one_bundle_per_front_architecture(exported):
    run, bundles, _ = exported
    assert [b.name for b in bundles] == ["trial-0", "trial-1"]  # trial 2 duplicates trial 1
    assert all(b.parent == run / "exports" for b in bundles)
    assert sorted(p.name for p in bundles[1].iterdir()) == sorted(
        [
            ARCH_FILE,
            WEIGHTS_FILE,
            ONNX_FILE,
            QONNX_FILE,
            COST_FILE,
            CARD_FILE,
            PROGRAM_FILE,
            CONSTANTS_FILE,
            RUNNER_FILE,
        ]
    )
    assert not (bundles[0] / WEIGHTS_FILE).exists()
    hidden = [p.name for p in (run / "exports").iterdir() if p.name.startswith(".")]
    assert hidden == [LEDGER_NAME]  # no temporary left, only the ledger of what it wrote


@pytest.mark.slow
def test_bundle_runs_three_ways_to_the_same_logits(exported, tmp_path):
    """PyTorch (eval forward), the bundle's numpy runner in a process without torch, and
    onnxruntime on model.onnx: identical logits; and ACE v2 from the bundle's program."""
    import subprocess
    import sys

    _, bundles, trained = exported
    arch, model = load_bundle(bundles[1])
    assert arch == tiny_arch(TRAINED_BITS) and not model.training
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
        reference = model(x).numpy()
    assert np.abs(reference).max() > 1e-3  # the comparison is not trivially between zeros
    program = IntegerProgram.load(bundles[1])
    assert np.array_equal(program.run(x.numpy()).output, reference)
    np.save(tmp_path / "x.npy", x.numpy())
    no_torch = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    runner = bundles[1] / RUNNER_FILE
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            no_torch,
            str(runner),
            str(bundles[1]),
            "--input",
            str(tmp_path / "x.npy"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert np.array_equal(np.array(json.loads(done.stdout), dtype=np.float32), reference)
    session = onnxruntime.InferenceSession(str(bundles[1] / ONNX_FILE))
    assert np.array_equal(session.run(["logits"], {"input": x.numpy()})[0], reference)
    cost = json.loads((bundles[1] / COST_FILE).read_text())
    assert cost["ace_v2"] == count_ace(arch).ace_v2 == count_ace(program).ace_v2


@pytest.mark.slow
def test_model_card_says_how_it_was_found(exported):
    _, bundles, _ = exported
    trained = (bundles[1] / CARD_FILE).read_text()
    assert "trial 1 of study pikenas" in trained and "93.00%" in trained
    assert "sampler: nsga2" in trained and "data set: digits" in trained
    assert "`8/8 4/8 4/4 4/4 4/4 8/8`" in trained and "load_bundle" in trained
    assert "Verified at export on 16 random inputs" in trained and "bit for bit" in trained
    untrained = (bundles[0] / CARD_FILE).read_text()
    assert "No trained weights" in untrained


def test_missing_trained_weights_fail_without_leaving_a_bundle(tmp_path):
    run = tmp_path / "run"
    make_run(run, [Point(0.5, 10.0, attrs={"final_dir": str(tmp_path / "gone")})])
    with pytest.raises(RunDirError, match="weights.safetensors is missing"):
        export_trial(run, 0)
    assert not (run / "exports" / "trial-0").exists()


def test_unknown_trial_and_bad_bundle(tmp_path):
    run = tmp_path / "run"
    make_run(run, [Point()])
    with pytest.raises(RunDirError, match="no trial 5; trial numbers go from 0 to 0"):
        export_trial(run, 5)
    with pytest.raises(RunDirError, match="not an export bundle"):
        load_bundle(tmp_path)


@pytest.mark.slow
def test_export_replaces_an_existing_bundle(exported):
    _, bundles, _ = exported
    assert (bundles[0] / COST_FILE).read_text() != "from an earlier export"
    assert (bundles[0] / ONNX_FILE).is_file()


def test_export_never_deletes_files_it_did_not_write(tmp_path):
    run = tmp_path / "run"
    make_run(run, [Point(0.5, 100.0), Point(0.9, 900.0, bits=((4, 4), (4, 4)))])
    mine = run / "exports" / "trial-0" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my notes")
    with pytest.raises(BundleError, match=r"trial 0: .*is not a folder pikenas wrote"):
        export_pareto(run)
    assert mine.read_text() == "my notes"
    mine.parent.rename(run / "mine")  # now a bundle pikenas wrote, with the user's notes added
    with atomic_directory(run / "exports" / "trial-0") as bundle:
        (bundle / COST_FILE).write_text("{}")
    (run / "exports" / "trial-0" / "notes.txt").write_text("my notes")
    with pytest.raises(BundleError, match=r"trial 0: .*holds files pikenas did not write"):
        export_pareto(run)
    assert (run / "exports" / "trial-0" / "notes.txt").read_text() == "my notes"
    assert (run / "exports" / "trial-1" / ONNX_FILE).is_file()  # the other bundle is written


def test_hostile_bundles_are_refused(tmp_path):
    bundle = tmp_path / "trial-0"
    bundle.mkdir()
    (bundle / ARCH_FILE).write_text(tiny_arch().to_json())
    (bundle / WEIGHTS_FILE).mkdir()
    with pytest.raises(RunDirError, match="not a regular file"):
        load_bundle(bundle)
    (bundle / WEIGHTS_FILE).rmdir()
    (bundle / WEIGHTS_FILE).symlink_to("/dev/zero")
    with pytest.raises(RunDirError, match="not a regular file"):
        load_bundle(bundle)
    (bundle / WEIGHTS_FILE).unlink()
    (bundle / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(RunDirError, match="cannot read .*weights.safetensors"):
        load_bundle(bundle)
    (bundle / WEIGHTS_FILE).unlink()
    data = json.loads(tiny_arch().to_json())
    data["blocks"][0]["out_channels"] = 10**9
    (bundle / ARCH_FILE).write_text(json.dumps(data))
    with pytest.raises(ArchConfigError, match="less than or equal"):
        load_bundle(bundle)


@pytest.mark.slow
def test_onnx_that_differs_from_the_program_fails_loudly(tmp_path):
    program = build_model(tiny_arch()).eval().program()

    class Wrong(IntegerProgram):
        def run(self, inputs, **kwargs):  # noqa: ANN001, ANN003, ANN201
            result = IntegerProgram.run(self, inputs, **kwargs)
            result.output = result.output + 1.0
            return result

    wrong = Wrong(**{k: getattr(program, k) for k in program.__dataclass_fields__})
    with pytest.raises(EvaluationError, match="differs from the integer program"):
        export_onnx(wrong, tmp_path / "m.onnx", np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.slow
def test_binary_network_with_ties_at_zero_exports_exactly(tmp_path):
    """Untrained binary blocks after a ReLU stem: many depthwise sums are exactly 0. The program
    decides their sign (+1) by exact arithmetic, and the ONNX graph reproduces it."""
    binary = ConvQuantSpec(weight_bits=1, weight_quantizer="binary")
    block = PikeBlockSpec(
        out_channels=64,
        depthwise=binary,
        pointwise=binary,
        activation_bits=1,
        activation="prelu",
    )
    arch = tiny_arch().model_copy(update={"blocks": (block, block)})
    arch = ArchConfig.from_json(arch.to_json())
    program = build_model(arch).eval().program()
    images = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    check = export_onnx(program, tmp_path / "m.onnx", images)
    assert check.exact and check.max_difference == 0.0


@pytest.mark.slow
def test_a_pikenas_train_folder_exports_as_a_bundle(tmp_path):
    final, trained = trained_final_dir(tmp_path)
    (final / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9, "dataset": "digits"}))
    bundle = export_trained(final, tmp_path / "out")
    assert bundle == tmp_path / "out" / "trial-1-bundle"
    arch, model = load_bundle(bundle)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    card = (bundle / CARD_FILE).read_text()
    assert "pikenas train trial-1" in card and "90.00%" in card
    session = onnxruntime.InferenceSession(str(bundle / ONNX_FILE))
    assert np.array_equal(session.run(["logits"], {"input": x.numpy()})[0], trained(x).numpy())
    with pytest.raises(RunDirError, match="not a finished 'pikenas train' folder"):
        export_trained(tmp_path)


def test_cost_json_is_priced_with_the_studys_cost_table(tmp_path):
    """A study scored with another table exports its bundles' cost.json in that table."""
    from pikenas.evaluators.cost import CostTable
    from pikenas.results.record import update_study_record

    run = tmp_path / "run"
    study = make_run(run, [Point()])
    table = {**CostTable.default().to_dict(), "name": "double"}
    for price in table["ops"].values():
        price["scale"] = 2
    update_study_record(
        study,
        search_config=json.dumps({"search": {"sampler": "nsga2"}, "dataset": {"name": "digits"},
                                  "cost_table": table}),
    )
    cost = json.loads((export_trial(run, 0) / COST_FILE).read_text())
    assert cost["cost_table"] == "double"
    assert cost["ace_v2"] == 2 * count_ace(tiny_arch()).ace_v2


def _train_folder(tmp_path, name: str = "tiny-pikelpn"):  # noqa: ANN001, ANN202
    from pikenas.space.zoo.catalog import get_zoo_arch

    folder = tmp_path / "trained"
    folder.mkdir()
    arch = get_zoo_arch(name)
    (folder / ARCH_FILE).write_text(arch.to_json())
    state = {k: v.contiguous() for k, v in build_model(arch, seed=2).state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder


def test_export_refuses_a_lowering_bug_the_training_forward_sees(tmp_path, monkeypatch):
    """Both runners execute the same program; the export runs verify's full check, so a
    dropped rounding constant in the lowering writes nothing."""
    from pikenas.space.nn import _requant

    folder = _train_folder(tmp_path)
    monkeypatch.setattr(_requant, "_rounding", lambda exponent: torch.zeros_like(exponent))
    with pytest.raises(EvaluationError, match="training-forward codes differ away from a"):
        export_trained(folder)
    assert not (tmp_path / "trained-bundle").exists()
    monkeypatch.undo()
    card = (export_trained(folder) / CARD_FILE).read_text()
    assert "the training (fake-quantization) forward, which never sees the lowering" in card


def test_hls4ml_format_writes_the_check_or_the_reason(tmp_path):
    run = tmp_path / "run"
    make_run(run, [Point()])
    bundle = export_trial(run, 0, formats=("hls4ml",))
    check = json.loads((bundle / "hls4ml" / "check.json").read_text())
    assert check["refusals"] and "float32 requantization" in check["refusals"][0]
    card = (bundle / CARD_FILE).read_text()
    assert "- hls4ml: not converted (stem.stage: mul -> float32" in card
    assert not (bundle / ONNX_FILE).exists()  # only the formats asked for
