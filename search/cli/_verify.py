"""`pikenas verify`: prove that a network's integer program is what PyTorch computes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pikenas.search.cli._app import app, echo, fail
from pikenas.search.cli._common import resolve_arch

if TYPE_CHECKING:
    import torch


@app.command()
def verify(
    target: Annotated[
        str,
        typer.Argument(
            metavar="NAME_OR_ARCH_JSON_OR_BUNDLE",
            help="A zoo name, an ArchConfig JSON file, or an export bundle folder (trial-N/).",
            show_default=False,
        ),
    ],
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="weights.safetensors to load (default: the bundle's, else the initial weights).",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="Verify on this data set's test images (digits, synthetic, "
            "fashion_mnist, mnist, idx, cifar10, cifar100, imagefolder) and report the "
            "accuracy on its whole test split; default: random inputs.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder of the data set's files.")
    ] = None,
    images: Annotated[
        int, typer.Option("--images", min=1, max=100_000, help="How many images.")
    ] = 32,
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution", min=1, max=4096, help="Input size (zoo names and JSON files)."
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", min=0, max=2**31 - 1, help="Seed of the initial weights and random inputs."
        ),
    ] = 0,
    hls4ml: Annotated[
        bool,
        typer.Option(
            "--hls4ml",
            help="Also convert the program to hls4ml, compile it for C simulation (g++) and "
            "compare it with the program on these images (a minute or more).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Lower the network to its integer program, run it with the numpy runner and with the
    PyTorch eval forward on the same images, and compare every intermediate.

    Prints the stages checked, mismatching elements, the largest logit difference, the widest
    intermediate per layer against its declared width, ACE v1 / ACE v2 counted from the
    program, every operation after a float conv re-run on the same inputs, and the training
    forward's codes at every requantization stage (a difference away from a rounding tie is a
    lowering bug). Exit 0 when every check passes, 1 on a mismatch, an overflow or a
    training-forward code away from a tie, 2 on bad input.
    """
    from pikenas.evaluators.verify import verify as run_verify
    from pikenas.space.errors import PikeNASError

    try:
        model = _model(target, weights, resolution, seed)
        inputs = _inputs(model.arch, dataset, data_dir, images, seed)
        report = run_verify(model, inputs, stored=_stored_program(target, weights))
        report.hls4ml = _hls4ml(target, model, inputs, hls4ml)
        report.bundle_failures = _bundle_failures(target, weights, model, inputs)
        accuracy = _test_accuracy(model, dataset, data_dir) if dataset else None
    except PikeNASError as exc:
        raise fail(str(exc)) from None
    data = report.to_dict()
    if accuracy is not None:
        data["test_accuracy"], data["test_images"] = accuracy
    if as_json:
        echo(json.dumps(data, indent=2))
    else:
        echo(_text(data, "data set " + dataset if dataset else "random inputs"))
    if not report.exact:
        raise typer.Exit(1)


def _hls4ml(target: str, model: Any, inputs: Any, run: bool) -> Any:
    """The C simulation on ``inputs`` (``--hls4ml``), else a bundle's stored result, else None."""
    import tempfile

    from pikenas.results.export._hls4ml import HLS4ML_DIR, Hls4mlCheck, export_hls4ml
    from pikenas.space.errors import ArchConfigError

    if run:
        with tempfile.TemporaryDirectory(prefix="pikenas-hls4ml-") as folder:
            return export_hls4ml(model.program(), Path(folder), inputs.numpy())
    stored = Path(target) / HLS4ML_DIR / "check.json"
    if not stored.is_file():
        return None
    try:
        data = json.loads(stored.read_text(encoding="utf-8"))
        data.pop("summary", None)
        return Hls4mlCheck(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise ArchConfigError(f"{stored}: {exc}") from None


def _model(target: str, weights: Path | None, resolution: int | None, seed: int) -> Any:
    from pikenas.results.export.bundle import ARCH_FILE, WEIGHTS_FILE, load_bundle
    from pikenas.space.errors import ArchConfigError
    from pikenas.space.nn.build import build_model

    folder = Path(target)
    if folder.is_dir():
        if not (folder / ARCH_FILE).is_file():
            raise ArchConfigError(f"{target}: a folder without {ARCH_FILE} is not a bundle")
        arch, model = load_bundle(folder)
        if weights is None or weights == folder / WEIGHTS_FILE:
            return model
    else:
        arch = resolve_arch(target, resolution)
        model = build_model(arch, seed=seed)
    if weights is not None:
        _load_weights(model, weights)
    return model.eval()


def _bundle_failures(target: str, weights: Path | None, model: Any, inputs: Any) -> list[str]:
    """What a bundle's runner, cost.json, ONNX and QONNX files got wrong against its program
    (nothing for other targets, or when other weights are loaded)."""
    from pikenas.results.export._bundle_check import check_bundle_files, is_bundle
    from pikenas.results.export.bundle import WEIGHTS_FILE

    folder = Path(target)
    if not is_bundle(folder) or (weights is not None and weights != folder / WEIGHTS_FILE):
        return []
    return check_bundle_files(folder, model.program(), inputs.numpy())


def _stored_program(target: str, weights: Path | None) -> Any:
    """The program of a bundle (None for other targets or when other weights are loaded)."""
    from pikenas.results.export.bundle import WEIGHTS_FILE
    from pikenas.space.errors import ArchConfigError
    from pikenas.space.program.ir import PROGRAM_FILE, IntegerProgram, ProgramError

    folder = Path(target)
    if not (folder / PROGRAM_FILE).is_file():
        return None
    if weights is not None and weights != folder / WEIGHTS_FILE:
        return None
    try:
        return IntegerProgram.load(folder)
    except ProgramError as exc:
        raise ArchConfigError(f"{target}: {exc}") from None


def _load_weights(model: Any, path: Path) -> None:
    from pikenas.evaluators.training._checkpoint import load_weights
    from pikenas.space.errors import ArchConfigError, RunDirError

    if not path.is_file():
        raise ArchConfigError(f"--weights {path}: no such file")
    try:
        load_weights(model, path)
    except RunDirError as exc:
        raise ArchConfigError(f"--weights {exc}") from None


def _inputs(
    arch: Any, dataset: str | None, data_dir: Path | None, count: int, seed: int
) -> torch.Tensor:
    import torch

    from pikenas.evaluators.data.datasets import (
        batch_normalization,
        iterate_batches,
        load_dataset,
    )
    from pikenas.space.errors import DataError

    shape = (arch.input_channels, arch.resolution, arch.resolution)
    if dataset is None:
        generator = torch.Generator().manual_seed(seed)
        if getattr(arch, "input", None) is not None:  # raw pixels 0..255
            return torch.randint(0, 256, (count, *shape), generator=generator).float()
        return torch.randn((count, *shape), generator=generator)
    splits = load_dataset(dataset, data_dir=data_dir, resolution=arch.resolution)
    if (splits.input_channels, splits.resolution) != shape[:2]:
        raise DataError(
            f"data set {dataset} has {splits.input_channels}-channel {splits.resolution}px "
            f"images; the network takes {shape[0]}-channel {shape[1]}px ones"
        )
    normalization = batch_normalization(arch, splits)  # none: the bundle takes raw pixels
    batch = next(iter(iterate_batches(splits.test, count, **normalization)))
    return batch[0]


def _test_accuracy(model: Any, dataset: str, data_dir: Path | None) -> tuple[float, int]:
    """``(top-1 accuracy, images)`` of the eval forward (the integer program, checked exact
    above) on the whole test split, fed as the network's contract says (raw pixels when it has
    an input spec)."""
    import torch

    from pikenas.evaluators.data.datasets import (
        batch_normalization,
        iterate_batches,
        load_dataset,
    )

    arch = model.arch
    splits = load_dataset(dataset, data_dir=data_dir, resolution=arch.resolution)
    correct = 0
    model.eval()
    with torch.no_grad():
        for images, labels in iterate_batches(
            splits.test, 500, **batch_normalization(arch, splits)
        ):
            correct += int((model(images).argmax(1) == labels).sum())
    return correct / len(splits.test), len(splits.test)


def _text(data: dict[str, Any], source: str) -> str:
    from pikenas.space._text import inline  # user strings (model, layer, table): one line each

    verdict = "exact" if data["exact"] else "NOT EXACT"
    lines = [
        f"{inline(data['model'] or 'network')}: {verdict} on {data['images']} images ({source})",
        f"  values compared: {data['values']} intermediates, {data['compared_elements']:,} "
        f"elements; {data['stages']} requantization stages",
        f"  mismatching elements (numpy runner vs PyTorch eval forward): {data['mismatches']}",
        f"  largest logit difference: {data['max_logit_diff']:.3g}",
        f"  overflows: {len(data['overflows'])}",
    ]
    if "test_accuracy" in data:
        lines.append(
            f"  test accuracy of the integer program: {100 * data['test_accuracy']:.2f} % on "
            f"{data['test_images']:,} test images"
        )
    lines += [f"    {inline(line)}" for line in data["overflows"][:5]]
    lines += [f"    mismatch: {inline(line)}" for line in data["mismatch_values"][:5]]
    lines.append(
        f"  after float convs, op by op on the same inputs: {data['float_path_mismatches']} "
        f"elements differ (float convs at {data['max_float_error_ratio']:.2g} of their float32 "
        f"rounding bound; codes flipped at a tie: {data['float_path_flips']})"
    )
    forward = data["training_forward"]
    lines.append(
        f"  training forward: {forward['code_mismatches']} of {forward['codes_compared']:,} codes "
        f"differ, {forward['mismatches_not_at_ties']} not at a rounding tie"
    )
    if forward["stages_not_compared"]:
        lines.append(f"    stages it could not be compared at: {forward['stages_not_compared']}")
    if "hls4ml" in data:
        lines.append(f"  hls4ml C simulation: {data['hls4ml']['summary']}")
    lines += [f"  FAILED: {inline(reason)}" for reason in data["failures"]]
    table = inline(data["cost_table"])
    lines.append(f"  ACE v1 {data['ace_v1']:,}  ACE v2 {data['ace_v2']:,} ({table})")
    lines.append("  widest integer per layer (seen / declared bits):")
    for layer, widths in data["widest"].items():
        seen, declared = widths["seen_bits"], widths["declared_bits"]
        lines.append(f"    {inline(layer):<40} {seen:>3} / {declared}")
    return "\n".join(lines)
