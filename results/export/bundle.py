"""Export bundles: a discovered architecture as files that rebuild and run it anywhere.

A bundle is a folder ``trial-<N>/`` holding

* ``arch.json``: the :class:`~space.arch.ArchConfig` (``pikenas ace arch.json`` costs it again);
* ``weights.safetensors``: the fully trained weights, copied from the trial's ``final_dir``
  (only when the candidate was fully trained; the model card says when they are absent).
  Full training may have fitted the input size / classes to its data set: the bundle then
  describes the trained network (``arch.json`` of ``final_dir``), which the card notes;
* ``program.json`` + ``program.safetensors``: the network's integer program (the operations
  its inference runs, integer constants), and ``run_program.py``, its numpy-only runner
  (``python run_program.py trial-N --input images.npy``);
* ``model.onnx``: the program as an ONNX graph that onnxruntime runs to the program's exact
  integer codes (:mod:`results._onnx`), input ``input`` ``(N, C, H, W)`` float, output
  ``logits``; checked with ``onnx.checker`` and against the numpy runner at export;
* ``model.qonnx.onnx``: the program as QONNX (:mod:`results._qonnx`: ``Quant`` / ``BipolarQuant``
  nodes, integer codes in float32, the FINN / hls4ml / qonnx input), checked with
  ``onnx.checker``, by ``pikenas ace model.qonnx.onnx`` (equal to the program's ACE, exactly)
  and, where ``qonnx`` is installed, by its cleanup and ``execute_onnx`` against the program;
* ``hls4ml/`` (``--format hls4ml``): an hls4ml project of the program, compiled for C
  simulation with g++ and compared bit for bit with the program (:mod:`results.export._hls4ml`);
  ``hls4ml/check.json`` holds the result, or the one-line reason an operation does not map;
* ``cost.json``: ACE v1 / v2 counted from the program (totals and per-layer breakdown);
* ``README.md``: the model card, with what was verified (PyTorch eval forward = numpy runner =
  onnxruntime, on how many images, with what result).

Each bundle is built in a temp folder and renamed into place (atomic per bundle); a bundle that
fails is reported (:class:`BundleError`) after every other one is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from torch import nn

from pikenas.evaluators._atomic import atomic_directory, check_replaceable
from pikenas.results.export._model_card import model_card
from pikenas.results.pareto import best_per_archid, pareto_front
from pikenas.results.record import FinalResult, TrialRecord
from pikenas.results.storage import open_study
from pikenas.results.trials import final_results, study_cost_table, study_info, trials_frame
from pikenas.space._parse import read_text
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import (
    ArchConfigError,
    EvaluationError,
    PikeNASError,
    RunDirError,
    RuntimeFailureError,
)
from pikenas.space.program.onnx.export_onnx import OnnxCheck, export_onnx

__all__ = [
    "ARCH_FILE",
    "WEIGHTS_FILE",
    "ONNX_FILE",
    "QONNX_FILE",
    "FORMATS",
    "DEFAULT_FORMATS",
    "COST_FILE",
    "CARD_FILE",
    "RUNNER_FILE",
    "VERIFY_IMAGES",
    "BundleError",
    "bundle_name",
    "export_trial",
    "export_pareto",
    "export_trained",
    "load_bundle",
    "export_onnx",
    "OnnxCheck",
]

logger = logging.getLogger(__name__)

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
QONNX_FILE = "model.qonnx.onnx"
#: the graph formats a bundle can hold (``pikenas export --format``).
FORMATS = ("onnx", "qonnx", "hls4ml")
#: written when ``--format`` is not given (hls4ml compiles C++: a minute or more).
DEFAULT_FORMATS = ("onnx", "qonnx")
COST_FILE = "cost.json"
CARD_FILE = "README.md"
RUNNER_FILE = "run_program.py"
#: random inputs of its contract (raw pixels or normal values, seed 0) every bundle is verified on.
VERIFY_IMAGES = 16


class BundleError(RuntimeFailureError):
    """Some bundles failed (a runtime failure: exit code 1); ``written`` holds the ones that
    did not, ``failures`` the others as ``(trial number, one-line reason)``."""

    def __init__(self, written: list[Path], failures: list[tuple[int, str]]) -> None:
        self.written, self.failures = written, failures
        listed = "; ".join(f"trial {number}: {reason}" for number, reason in failures)
        super().__init__(
            f"{len(failures)} of {len(written) + len(failures)} bundles failed ({listed}); "
            f"the other {len(written)} were written"
        )


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
    if not _regular_file(arch_path) or arch_path.stat().st_size > 1 << 20:
        raise RunDirError(f"{arch_path} is not an architecture file (larger than 1 MiB)")
    try:
        text = arch_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"cannot read {arch_path}: {exc}") from None
    arch = ArchConfig.from_json(text)  # sizes are bounded before anything is built
    weights = folder / WEIGHTS_FILE
    return arch, _build(arch, weights if _regular_file(weights) else None)


def _regular_file(path: Path) -> bool:
    """``path`` is a regular file (not a folder, not a link to a device or elsewhere); a path
    that exists as anything else is refused, never taken for "absent"."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise RunDirError(f"{path} is not a regular file (a folder, link or device); remove it")
    return path.is_file()


def _build(arch: ArchConfig, weights: Path | None) -> nn.Module:
    from pikenas.evaluators.training._checkpoint import load_weights
    from pikenas.space.nn.build import build_model, check_arch_size

    check_arch_size(arch)  # absurd sizes refused from the declared shapes, before building
    model = build_model(arch)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _trained(
    number: int, final: FinalResult | None, arch: ArchConfig
) -> tuple[Path | None, ArchConfig]:
    """The trial's full-training weights and the architecture they belong to.

    Without full training: ``(None, arch)``. Full training may fit the architecture to its
    data set (``input_channels``, ``resolution``, ``num_classes``): then the bundle uses the
    ``arch.json`` of ``final_dir``, which must otherwise equal the trial's architecture.
    """
    final_dir = final.final_dir if final is not None else ""
    if not final_dir:
        return None, arch
    weights = Path(final_dir) / WEIGHTS_FILE
    if not _regular_file(weights):
        raise RunDirError(
            f"trial {number} was fully trained into {final_dir} but {weights.name} is "
            "missing there; restore that folder or train the trial again"
        )
    final_arch = Path(final_dir) / ARCH_FILE
    if not _regular_file(final_arch):
        return weights, arch
    try:
        trained = ArchConfig.from_json(read_text(final_arch, RunDirError))
    except ArchConfigError as exc:
        raise RunDirError(f"{final_arch}: {exc}; train the trial again") from None
    geometry = {
        "input_channels": arch.input_channels,
        "resolution": arch.resolution,
        "num_classes": arch.num_classes,
    }
    if trained.replace(**geometry).archid != arch.archid:
        raise RunDirError(
            f"{final_arch} describes architecture {trained.archid}, which is not trial "
            f"{number}'s {arch.archid}; the final_dir belongs to another trial"
        )
    return weights, trained


BUNDLE_FILES = frozenset({ARCH_FILE, WEIGHTS_FILE, ONNX_FILE, COST_FILE, CARD_FILE, RUNNER_FILE,
                          "program.json", "program.safetensors", "model.qonnx.onnx", "hls4ml"})


def _check_replaceable(target: Path) -> None:
    """An existing bundle folder is replaced only when pikenas wrote it (the outputs ledger)
    and it holds nothing but bundle files: pikenas never deletes what it did not write."""
    check_replaceable(target, folder=True)
    if not target.exists():
        return
    foreign = sorted(p.name for p in target.iterdir() if p.name not in BUNDLE_FILES)
    if foreign:
        raise RunDirError(
            f"{target} holds files pikenas did not write ({', '.join(foreign[:3])}); move "
            "them or choose another --out"
        )


def _verification_images(arch: ArchConfig) -> np.ndarray:
    """Random inputs of the network's contract: raw pixels 0..255 (as float32) when it has an
    input spec, else normalized floats."""
    generator = np.random.default_rng(0)
    shape = (VERIFY_IMAGES, arch.input_channels, arch.resolution, arch.resolution)
    if arch.input is not None:
        return generator.integers(0, 256, shape).astype(np.float32)
    return generator.standard_normal(shape).astype(np.float32)


def _write_bundle(
    study: optuna.Study, number: int, info: dict[str, str], out_dir: Path,
    formats: tuple[str, ...] = DEFAULT_FORMATS, cost_table: Any = None,
) -> Path:
    trial = study.get_trials(deepcopy=False)[number]  # trial numbers are positions
    record = TrialRecord.of(trial)
    final = final_results(study).get(number)
    arch = ArchConfig.from_json(record.arch) if record.arch else None
    if arch is None:
        raise RunDirError(f"trial {number} has no architecture recorded; it cannot be exported")
    weights, arch = _trained(number, final, arch)
    target = out_dir / bundle_name(number)
    accuracy = trial.values[0] if trial.values else None

    def card(cost: dict[str, Any], check: OnnxCheck, verified: Any, qonnx: Any) -> str:
        return model_card(arch=arch, number=number, record=record, accuracy=accuracy,
                          final=final, info=info, cost=cost,
                          has_weights=weights is not None, onnx_check=check, verified=verified,
                          folder_name=target.name, qonnx_check=qonnx)

    return _bundle(target, arch, weights, card, formats, cost_table)


def _bundle(target: Path, arch: ArchConfig, weights: Path | None,
            card: Callable[[dict[str, Any], Any, Any, Any], str],
            formats: tuple[str, ...] = DEFAULT_FORMATS, cost_table: Any = None) -> Path:
    """Write one bundle folder atomically: the files of the module docstring, every check run
    before the folder appears. ``cost.json`` is priced with ``cost_table`` (the study's; the
    default table when None)."""
    from pikenas.evaluators.cost import count_ace
    from pikenas.evaluators.verify import verify
    from pikenas.space.program import ir as program_module

    _check_replaceable(target)
    with atomic_directory(target) as folder:
        (folder / ARCH_FILE).write_text(arch.to_json(indent=2) + "\n", encoding="utf-8")
        model = _build(arch, weights)
        if weights is not None:
            shutil.copyfile(weights, folder / WEIGHTS_FILE)
        program = model.program()
        program.save(folder)
        shutil.copyfile(program_module.__file__, folder / RUNNER_FILE)
        images = _verification_images(arch)
        verified = verify(model, torch.from_numpy(images))  # every check, none skippable
        if not verified.exact:
            raise EvaluationError(
                "the integer program failed verification, nothing was written: "
                + "; ".join(verified.failures())
            )
        check = export_onnx(program, folder / ONNX_FILE, images) if "onnx" in formats else None
        qonnx_check = None
        if "qonnx" in formats:
            from pikenas.results.export._qonnx_check import export_qonnx

            qonnx_check = export_qonnx(program, folder / QONNX_FILE, images)
        if "hls4ml" in formats:
            from pikenas.results.export._hls4ml import export_hls4ml

            verified.hls4ml = export_hls4ml(program, folder, images)
            if verified.hls4ml.compiled and not verified.hls4ml.exact:
                raise EvaluationError(f"hls4ml C simulation: {verified.hls4ml.summary}")
        cost = count_ace(program, cost_table=cost_table).to_dict()
        (folder / COST_FILE).write_text(json.dumps(cost, indent=2) + "\n", encoding="utf-8")
        (folder / CARD_FILE).write_text(card(cost, check, verified, qonnx_check), "utf-8")
    logger.info("exported %s (formats: %s)", target, ",".join(formats))
    return target


def export_trained(
    source: str | Path, out_dir: str | Path | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
) -> Path:
    """Bundle a ``pikenas train`` folder (``arch.json``, ``weights.safetensors``,
    ``metrics.json``) as ``OUT/<folder name>-bundle`` (default OUT: the folder's parent)."""
    source = Path(source).expanduser().resolve()
    weights = source / WEIGHTS_FILE
    if not (source / ARCH_FILE).is_file() or not _regular_file(weights):
        raise RunDirError(
            f"{source} is not a finished 'pikenas train' folder (it needs {ARCH_FILE} and "
            f"{WEIGHTS_FILE}); finish the training or pass a run folder"
        )
    arch, _ = load_bundle(source)
    metrics: dict[str, Any] = {}
    if _regular_file(source / "metrics.json"):
        try:
            metrics = json.loads((source / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            metrics = {}
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else source.parent
    target = out / f"{source.name}-bundle"
    final = FinalResult.model_construct(  # what metrics.json holds; NaN where it lacks it
        final_accuracy=metrics.get("test_accuracy", float("nan")),
        final_val_accuracy=metrics.get("val_accuracy", float("nan")),
        final_wall_s=metrics.get("wall_s", float("nan")),
        final_dir=str(source),
    )
    info = {"study": f"pikenas train {source.name}", "sampler": "-",
            "dataset": str(metrics.get("dataset", "")), "cost_table": "default",
            "pikenas_version": ""}

    def card(cost: dict[str, Any], check: OnnxCheck, verified: Any, qonnx: Any) -> str:
        return model_card(arch=arch, number=-1, record=TrialRecord(arch=arch.to_json()),
                          accuracy=None, final=final, info=info, cost=cost, has_weights=True,
                          onnx_check=check, verified=verified, folder_name=target.name,
                          qonnx_check=qonnx)

    return _bundle(target, arch, weights, card, _formats(formats))


def _write_bundles(
    study: optuna.Study, numbers: list[int], info: dict[str, str], out_dir: Path,
    formats: tuple[str, ...], cost_table: Any = None,
) -> list[Path]:
    """Every bundle that can be written; the failures are raised together at the end."""
    written: list[Path] = []
    failures: list[tuple[int, str]] = []
    for number in numbers:
        try:
            written.append(_write_bundle(study, number, info, out_dir, formats, cost_table))
        except PikeNASError as exc:
            failures.append((number, " ".join(str(exc).split())))
        except Exception as exc:  # noqa: BLE001 - one bundle's bug must not lose the others
            logger.exception("trial %s: export failed", number)
            failures.append((number, f"{type(exc).__name__}: {exc}"[:500]))
    if failures:
        raise BundleError(written, failures)
    return written


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
    formats: tuple[str, ...] = DEFAULT_FORMATS,
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
    out = _default_out(run, out_dir)
    return _write_bundle(optuna_study, number, study_info(optuna_study), out,
                         _formats(formats), study_cost_table(optuna_study))


def export_pareto(
    run: str | Path | optuna.Study,
    out_dir: str | Path | None = None,
    study: str | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
) -> list[Path]:
    """Export every trial on the Pareto front, one bundle per distinct architecture (the trial
    :func:`results.pareto.best_per_archid` picks); return the folders.
    """
    optuna_study, frame = _study_and_frame(run, study)
    front = pareto_front(frame)
    if front.empty:
        raise RunDirError(
            f"study {optuna_study.study_name!r} has no completed trial, so no front to export"
        )
    front = best_per_archid(front).sort_values("number")  # one bundle per architecture
    out = _default_out(run, out_dir)
    numbers = [int(number) for number in front["number"]]
    return _write_bundles(optuna_study, numbers, study_info(optuna_study), out,
                          _formats(formats), study_cost_table(optuna_study))


def _formats(formats: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise RunDirError(
            f"unknown export format(s) {unknown or formats!r}; use any of {', '.join(FORMATS)}"
        )
    return tuple(dict.fromkeys(formats))
