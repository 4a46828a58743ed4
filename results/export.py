"""Export bundles: a discovered architecture as files that rebuild and run it anywhere.

A bundle is a folder ``trial-<N>/`` holding

* ``arch.json``: the :class:`~space.arch.ArchConfig` (``pikenas ace arch.json`` costs it again);
* ``weights.safetensors``: the fully trained weights, copied from the trial's ``final_dir``
  (only when the candidate was fully trained; the model card says when they are absent).
  Full training may have fitted the input size / classes to its data set: the bundle then
  describes the trained network (``arch.json`` of ``final_dir``), which the card notes;
* ``model.onnx``: ``build_model(arch)`` in eval mode (with those weights), input ``input``
  ``(1, C, H, W)`` float, output ``logits`` ``(1, classes)``; checked with ``onnx.checker``
  and against PyTorch in onnxruntime on random inputs (max abs difference <=
  :data:`ONNX_ATOL`), else the export fails (see :func:`export_onnx` for tie-sensitive
  networks);
* ``cost.json``: ``count_ace(arch).to_dict()`` (ACE v1 / v2 totals and per-layer breakdown);
* ``README.md``: the model card.

Each bundle is built in a temp folder and renamed into place (atomic per bundle).

ONNX exporter: the default torch.export-based ``torch.onnx.export(..., dynamo=True)`` (it
handles every quantizer, including the ``exp2`` of power-of-two scales, which the deprecated
TorchScript exporter cannot translate). The batch size is fixed at 1: with a dynamic batch the
LSQ quantizers' gradient scale ``1 / sqrt(numel)`` becomes a symbolic ``sqrt`` the exporter
cannot translate (it would need ``space.quantizers`` to skip that factor without gradients).
About 4-12 s per model on the project's 2-core machines.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
from torch import nn

from results._atomic import atomic_directory
from results._model_card import model_card
from results.pareto import pareto_front
from results.storage import open_study
from results.trials import study_info, trial_arch, trials_frame
from space.arch import ArchConfig
from space.errors import EvaluationError, RunDirError

__all__ = [
    "ARCH_FILE",
    "WEIGHTS_FILE",
    "ONNX_FILE",
    "COST_FILE",
    "CARD_FILE",
    "ONNX_ATOL",
    "bundle_name",
    "export_trial",
    "export_pareto",
    "load_bundle",
    "export_onnx",
    "OnnxCheck",
]

logger = logging.getLogger(__name__)

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
COST_FILE = "cost.json"
CARD_FILE = "README.md"
#: largest accepted |onnxruntime - PyTorch| on the logits.
ONNX_ATOL = 1e-4
#: random inputs compared between onnxruntime and PyTorch.
_CHECK_SAMPLES = 4


def bundle_name(number: int) -> str:
    """``trial-<number>``: the folder name of a trial's bundle."""
    return f"trial-{number}"


def load_bundle(folder: str | Path) -> tuple[ArchConfig, nn.Module]:
    """Rebuild the network of a bundle from ``arch.json`` (+ ``weights.safetensors`` when
    present) without unpickling anything; the module is in eval mode on the CPU.
    """
    folder = Path(folder)
    arch_path = folder / ARCH_FILE
    if not arch_path.is_file():
        raise RunDirError(
            f"{folder} is not an export bundle (no {ARCH_FILE}); pass a trial-N folder"
        )
    arch = ArchConfig.from_json(arch_path.read_text(encoding="utf-8"))
    model = _build(arch, folder / WEIGHTS_FILE if (folder / WEIGHTS_FILE).is_file() else None)
    return arch, model


def _build(arch: ArchConfig, weights: Path | None) -> nn.Module:
    from safetensors.torch import load_file

    from space.build import build_model

    model = build_model(arch)
    if weights is not None:
        try:
            model.load_state_dict(load_file(str(weights)), strict=True)
        except (RuntimeError, OSError) as exc:
            raise RunDirError(
                f"{weights} does not fit architecture {arch.archid}: "
                f"{str(exc).splitlines()[0]}; export the trial again"
            ) from None
    return model.eval()


@dataclass(frozen=True)
class OnnxCheck:
    """How ``model.onnx`` compared with PyTorch: ``max_difference`` = max |ORT - PyTorch| on
    the logits; ``tie_sensitivity`` = max |PyTorch float32 - PyTorch float64| when the strict
    comparison failed (None when it passed)."""

    max_difference: float
    tie_sensitivity: float | None = None


def export_onnx(model: nn.Module, arch: ArchConfig, path: Path) -> OnnxCheck:
    """Export ``model`` (eval mode) to ``path``, check it and compare it with PyTorch.

    The check runs :data:`_CHECK_SAMPLES` random inputs through onnxruntime and PyTorch and
    accepts a max abs difference <= :data:`ONNX_ATOL`. Networks with binary / low-bit
    thresholds can be *tie-sensitive*: a value that is exactly on a sign or rounding threshold
    in exact arithmetic (typical of untrained networks, whose batch norms are still the
    identity) lands on either side depending on float32 summation order, so no two runtimes
    agree to 1e-4. When the strict comparison fails, PyTorch float32 is compared with PyTorch
    float64 on the same inputs; if that differs by more than :data:`ONNX_ATOL` too, the
    network is tie-sensitive and onnxruntime is accepted within ``ONNX_ATOL + 2 x`` that
    difference (the card says so). Anything else raises :class:`EvaluationError`.
    """
    import onnx
    import onnxruntime

    shape = (1, arch.input_channels, arch.resolution, arch.resolution)
    generator = torch.Generator().manual_seed(0)
    # The exporter logs "torchvision is not installed" for each export: not our concern.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter (torchvision ops absent, ...)
        try:
            torch.onnx.export(
                model,
                (torch.randn(shape, generator=generator),),
                str(path),
                dynamo=True,
                verbose=False,
                external_data=False,  # one self-contained file
                input_names=["input"],
                output_names=["logits"],
            )
        except Exception as exc:  # the exporter raises many types; one line is enough
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise EvaluationError(f"ONNX export of {arch.archid} failed: {message}") from None
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EvaluationError(f"ONNX export of {arch.archid} is invalid: {exc}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [torch.randn(shape, generator=generator) for _ in range(_CHECK_SAMPLES)]
    with torch.no_grad():
        expected = np.stack([model(x).numpy() for x in inputs])
    actual = np.stack([session.run(["logits"], {"input": x.numpy()})[0] for x in inputs])
    if actual.shape != expected.shape:
        raise EvaluationError(
            f"ONNX export of {arch.archid}: onnxruntime gives shape {actual.shape[1:]}, "
            f"PyTorch {expected.shape[1:]}"
        )
    difference = float(np.max(np.abs(actual - expected)))
    if math.isfinite(difference) and difference <= ONNX_ATOL:
        return OnnxCheck(difference)
    double = copy.deepcopy(model).double()
    with torch.no_grad():
        exact = np.stack([double(x.double()).numpy() for x in inputs])
    sensitivity = float(np.max(np.abs(expected - exact)))
    if (
        math.isfinite(difference)
        and sensitivity > ONNX_ATOL
        and difference <= ONNX_ATOL + 2 * sensitivity
    ):
        logger.warning(
            "ONNX export of %s: onnxruntime differs from PyTorch by %.3g, but this network is "
            "tie-sensitive (PyTorch float32 vs float64: %.3g); accepted",
            arch.archid,
            difference,
            sensitivity,
        )
        return OnnxCheck(difference, sensitivity)
    raise EvaluationError(
        f"ONNX export of {arch.archid}: onnxruntime differs from PyTorch by {difference:.3g} "
        f"(limit {ONNX_ATOL:g}; PyTorch float32 vs float64: {sensitivity:.3g}); "
        "the exported graph is wrong"
    )


def _trained(row: pd.Series, arch: ArchConfig) -> tuple[Path | None, ArchConfig]:
    """The trial's full-training weights and the architecture they belong to.

    Without full training: ``(None, arch)``. Full training may fit the architecture to its
    data set (``input_channels``, ``resolution``, ``num_classes``): then the bundle uses the
    ``arch.json`` of ``final_dir``, which must otherwise equal the trial's architecture.
    """
    final_dir = row["final_dir"]
    if not isinstance(final_dir, str) or not final_dir:
        return None, arch
    weights = Path(final_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise RunDirError(
            f"trial {row['number']} was fully trained into {final_dir} but {weights.name} is "
            "missing there; restore that folder or train the trial again"
        )
    final_arch = Path(final_dir) / ARCH_FILE
    if not final_arch.is_file():
        return weights, arch
    trained = ArchConfig.from_json(final_arch.read_text(encoding="utf-8"))
    geometry = {
        "input_channels": arch.input_channels,
        "resolution": arch.resolution,
        "num_classes": arch.num_classes,
    }
    if trained.replace(**geometry).archid != arch.archid:
        raise RunDirError(
            f"{final_arch} describes architecture {trained.archid}, which is not trial "
            f"{row['number']}'s {arch.archid}; the final_dir belongs to another trial"
        )
    return weights, trained


def _write_bundle(row: pd.Series, info: dict[str, str], out_dir: Path) -> Path:
    from evaluators.ace import count_ace

    number = int(row["number"])
    arch = trial_arch(row)
    if arch is None:
        raise RunDirError(f"trial {number} has no architecture recorded; it cannot be exported")
    weights, arch = _trained(row, arch)
    target = out_dir / bundle_name(number)
    with atomic_directory(target) as folder:
        (folder / ARCH_FILE).write_text(arch.to_json(indent=2) + "\n", encoding="utf-8")
        model = _build(arch, weights)
        if weights is not None:
            shutil.copyfile(weights, folder / WEIGHTS_FILE)
        check = export_onnx(model, arch, folder / ONNX_FILE)
        cost = count_ace(arch).to_dict()
        (folder / COST_FILE).write_text(json.dumps(cost, indent=2) + "\n", encoding="utf-8")
        card = model_card(
            arch=arch,
            row=row,
            info=info,
            cost=cost,
            has_weights=weights is not None,
            onnx_check=check,
            folder_name=target.name,
        )
        (folder / CARD_FILE).write_text(card, encoding="utf-8")
    logger.info(
        "exported trial %d to %s (ONNX max diff %.2g)", number, target, check.max_difference
    )
    return target


def _study_and_frame(
    run: str | Path | optuna.Study, study: str | None
) -> tuple[optuna.Study, pd.DataFrame]:
    optuna_study = run if isinstance(run, optuna.Study) else open_study(run, study)
    return optuna_study, trials_frame(optuna_study)


def _default_out(run: str | Path | optuna.Study, out_dir: str | Path | None) -> Path:
    if out_dir is not None:
        return Path(out_dir).expanduser().resolve()
    if isinstance(run, optuna.Study) or not Path(run).is_dir():
        raise RunDirError(f"{run!r} is not a run folder; pass --out DIR for the bundles")
    return Path(run).resolve() / "exports"


def export_trial(
    run: str | Path | optuna.Study,
    number: int,
    out_dir: str | Path | None = None,
    study: str | None = None,
) -> Path:
    """Export trial ``number`` of ``run`` to ``out_dir/trial-<number>`` (default
    ``RUN/exports``); return the bundle folder.
    """
    optuna_study, frame = _study_and_frame(run, study)
    rows = frame[frame["number"] == number]
    if rows.empty:
        last = int(frame["number"].max()) if len(frame) else -1
        raise RunDirError(
            f"study {optuna_study.study_name!r} has no trial {number}; "
            f"trial numbers go from 0 to {last}"
        )
    return _write_bundle(rows.iloc[0], study_info(optuna_study), _default_out(run, out_dir))


def export_pareto(
    run: str | Path | optuna.Study,
    out_dir: str | Path | None = None,
    study: str | None = None,
) -> list[Path]:
    """Export every trial on the Pareto front, one bundle per distinct architecture (of trials
    with the same archid the fully trained one, else the lowest number); return the folders.
    """
    optuna_study, frame = _study_and_frame(run, study)
    front = pareto_front(frame)
    if front.empty:
        raise RunDirError(
            f"study {optuna_study.study_name!r} has no completed trial, so no front to export"
        )
    # one bundle per architecture: prefer the fully trained trial, then the lowest number
    trained = front["final_dir"].fillna("").astype(str) != ""
    front = (
        front.assign(_untrained=~trained)
        .sort_values(["_untrained", "number"])
        .drop_duplicates("archid", keep="first")
        .sort_values("number")
    )
    out = _default_out(run, out_dir)
    info = study_info(optuna_study)
    return [_write_bundle(row, info, out) for _, row in front.iterrows()]
