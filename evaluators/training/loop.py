"""Quantization-aware training: the proxy :func:`evaluate` and the full, resumable :func:`train`.

Both run the same loop (:func:`_fit`), readable top to bottom in the manner of nanoGPT:
deterministic seeds, AdamW or SGD, cosine learning rate with linear warm-up (set per step, so
the "scheduler" state is just the step counter), label smoothing, optional distillation from a
float teacher (KL term at a temperature), bf16 autocast on CUDA in training only (evaluation
runs the network's integer program exactly, see ``space.build.PikeNet``), an explicit torch thread
count, a progress bar when asked. A non-finite loss raises :class:`EvaluationError`.

Successive halving trains a candidate in rungs: :func:`evaluate` with ``until_epoch`` stops
after that epoch of the ``budget.epochs`` schedule and with ``checkpoint`` continues from the
last one, so a candidate trained rung by rung ends bit-identical to one trained in one go (CPU,
same threads). Below the last epoch the validation accuracy is that of the training forward
(fake quantization, batch statistics; :func:`evaluators._scoring.batch_statistics_eval`):
early in training the running averages lag far behind the weights and the eval forward (the
integer program) scores near chance, while the training forward already ranks candidates by
their final accuracy (``benchmarks/search_efficiency.py`` measures it).
The training state is left untouched.

Accuracies are fractions in ``[0, 1]``; losses are mean cross-entropy (no smoothing) in nats.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pikenas.evaluators.data.datasets import (
    DatasetSplits,
    Split,
    batch_normalization,
    fit_arch_to_dataset,
    iterate_batches,
    load_dataset,
    stratified_subset,
)
from pikenas.evaluators.training._checkpoint import load_checkpoint, save_checkpoint, save_tensors
from pikenas.evaluators.training._progress import TrainingProgress
from pikenas.evaluators.training._run_dir import RunFolder
from pikenas.evaluators.training._scoring import batch_statistics_eval, evaluate_split
from pikenas.evaluators.training.config import COMPILE_MIN_STEPS, TrainConfig, TrainResult
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import DataError, EvaluationError, RunDirError
from pikenas.space.nn._compiled import compiled_quantizers

__all__ = [
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "train",
    "learning_rate",
    "build_teacher",
]

logger = logging.getLogger(__name__)


# ---- the pieces the loop uses -----------------------------------------------------------------
def learning_rate(step: int, *, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps`` (step 0 gets ``peak / warmup_steps``),
    then a cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for but CUDA is not available; use auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _build_model(arch: ArchConfig, seed: int) -> torch.nn.Module:
    from pikenas.space.nn.build import build_model

    return build_model(arch, seed=seed)


def _quantizer_scales(model: torch.nn.Module) -> set[int]:
    """``id`` of every learned quantizer step size (LSQ scales) in ``model``."""
    from pikenas.space.nn.quantizers import Quantizer

    return {
        id(parameter)
        for module in model.modules()
        if isinstance(module, Quantizer)
        for parameter in module.parameters(recurse=False)
    }


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Three parameter groups: conv / linear weights (dim >= 2) with weight decay; biases,
    norms and activation slopes without; the quantizers' learned step sizes without decay and
    at ``scale_lr_factor`` times the learning rate. Adam moves every parameter by about the
    learning rate per step whatever its gradient, and a step size of 0.002 moved by 0.004
    collapses the quantization grid (the network then stops learning)."""
    scales = _quantizer_scales(model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for p in parameters if p.dim() >= 2 and id(p) not in scales],
            "weight_decay": config.weight_decay,
            "lr_factor": 1.0,
        },
        {
            "params": [p for p in parameters if p.dim() < 2 and id(p) not in scales],
            "weight_decay": 0.0,
            "lr_factor": 1.0,
        },
        {
            "params": [p for p in parameters if id(p) in scales],
            "weight_decay": 0.0,
            "lr_factor": config.scale_lr_factor,
        },
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def _use_channels_last(device: torch.device, resolution: int) -> bool:
    """channels_last speeds up convs on larger maps (CUDA, and CPU from about 16x16 up); on
    8x8 digits the layout conversions cost more than they save."""
    return device.type == "cuda" or resolution >= 16


def _distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch."""
    return F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (temperature**2)


def _on_device(split: Split, device: torch.device) -> Split:
    return Split(split.images.to(device), split.labels.to(device))


# ---- the loop -----------------------------------------------------------------------------
def _fit(
    arch: ArchConfig,
    config: TrainConfig,
    splits: DatasetSplits,
    *,
    teacher: torch.nn.Module | None = None,
    checkpoint_path: Path | None = None,
    progress: bool = False,
    until_epoch: int | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train ``arch`` (already fitted to ``splits``) and return ``(model, result)``.

    With ``checkpoint_path`` the state is saved after every epoch and, if the file exists,
    restored first (the run continues from the last finished epoch). ``until_epoch`` stops
    after that epoch of the ``config.epochs`` schedule: the result then has the training
    forward's validation metrics (see the module docstring) and no test metrics (NaN).
    """
    run_start = time.perf_counter()
    device = _resolve_device(config.device)
    train_split = _on_device(stratified_subset(splits.train, config.data_fraction), device)
    val_split, test_split = _on_device(splits.val, device), _on_device(splits.test, device)
    if not (len(train_split) and len(val_split) and len(test_split)):
        raise DataError(f"data set {splits.name!r} has an empty split; add images")
    batch_size = min(config.batch_size, len(train_split))
    steps_per_epoch = len(train_split) // batch_size  # the short last batch is dropped
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    channels_last = _use_channels_last(device, splits.resolution)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    # Deterministic start: the global seed fixes the initial weights, the generator the data
    # order and augmentation (its state is checkpointed, so a resumed run continues exactly).
    torch.manual_seed(config.seed)
    model = _build_model(arch, config.seed).to(device=device, memory_format=memory_format)
    optimizer = _make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "curve": [], "wall_s": 0.0}
    state.update(train_s=0.0, train_images=0)
    stop = min(config.epochs, until_epoch or config.epochs)
    best: dict[str, torch.Tensor] | None = None  # the weights of the best epoch so far
    if checkpoint_path is not None and checkpoint_path.exists():
        fresh = dict(state)
        state = load_checkpoint(checkpoint_path, model, optimizer, generator)
        best = state.pop("best_weights", None)  # saved only when an earlier epoch was better
        if best is None and "best_epoch" in state:
            best = _snapshot(model)
        logger.info("resuming %s after epoch %d", checkpoint_path, state["epoch"])
        if state["epoch"] > stop:  # measured beyond this rung already: train it again
            logger.warning("%s is past epoch %d; starting afresh", checkpoint_path, stop)
            torch.manual_seed(config.seed)
            model = _build_model(arch, config.seed).to(device=device, memory_format=memory_format)
            optimizer = _make_optimizer(model, config)
            generator = torch.Generator().manual_seed(config.seed)
            state, best = fresh, None
    if teacher is not None:
        teacher = teacher.to(device=device, memory_format=memory_format).eval()
    elapsed_before = state["wall_s"]
    check_every = 1 if device.type == "cpu" else 25  # a finiteness check syncs the GPU

    title = arch.name or arch.archid
    done_steps = state["epoch"] * steps_per_epoch
    # Decided by the whole schedule, so a resumed run trains as the uninterrupted one did.
    compiled = config.compile == "on" or (
        config.compile == "auto" and total_steps >= COMPILE_MIN_STEPS
    )
    with (
        compiled_quantizers(compiled),
        TrainingProgress(progress, total_steps, done_steps, title) as bar,
    ):
        for epoch in range(state["epoch"], stop):
            model.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            seen = 0
            batches = iterate_batches(
                train_split,
                batch_size,
                **batch_normalization(arch, splits),
                augmentation=splits.augmentation,
                generator=generator,
                drop_last=True,
                channels_last=channels_last,
            )
            for images, labels in batches:
                lr = learning_rate(
                    state["step"],
                    peak=config.lr,
                    warmup_steps=warmup_steps,
                    total_steps=total_steps,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_factor"]
                with torch.autocast(
                    device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
                ):
                    logits = model(images).float()
                    loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(images).float()
                        distill = _distill_loss(logits, teacher_logits, config.distill_temperature)
                        loss = (1 - config.distill_weight) * loss + config.distill_weight * distill
                if state["step"] % check_every == 0 and not torch.isfinite(loss):
                    raise EvaluationError(
                        f"training of {title} diverged: the loss became "
                        f"{float(loss.detach())} at epoch {epoch + 1}, step {state['step'] + 1}; "
                        f"lower the learning rate (now {config.lr:g}), lengthen the warm-up, "
                        "or check the data for NaN"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["step"] += 1
                loss_sum += loss.detach() * len(labels)
                correct += (logits.detach().argmax(dim=1) == labels).sum()
                seen += len(labels)
                bar.step(epoch + 1, config.epochs)
            if not math.isfinite(float(loss_sum)):
                raise EvaluationError(
                    f"training of {title} diverged: non-finite loss in epoch {epoch + 1}; "
                    f"lower the learning rate (now {config.lr:g}) or check the data for NaN"
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - epoch_start
            val_loss, val_accuracy = evaluate_split(
                model, val_split, splits, batch_size, channels_last
            )
            state["epoch"] = epoch + 1
            state["train_s"] += train_seconds
            state["train_images"] += seen
            state["curve"].append(
                {
                    "epoch": epoch + 1,
                    "lr": lr,
                    "train_loss": float(loss_sum) / seen,
                    "train_accuracy": int(correct) / seen,
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                    "seconds": time.perf_counter() - epoch_start,
                }
            )
            bar.status(f"val {100 * val_accuracy:.1f}%")
            if val_accuracy > state.get("best_val_accuracy", -1.0):
                state["best_val_accuracy"], state["best_epoch"] = val_accuracy, epoch + 1
                best = _snapshot(model)
            state["wall_s"] = elapsed_before + time.perf_counter() - run_start
            if checkpoint_path is not None:
                earlier = best if state["best_epoch"] != state["epoch"] else None
                save_checkpoint(checkpoint_path, model, optimizer, generator, state, earlier)

    last = state["curve"][-1]
    best_epoch = 0
    if stop == config.epochs and best is not None:
        # A full run keeps its best epoch (validation accuracy of the integer program): a late
        # collapse (a quantizer that dies at the peak learning rate) cannot cost the result.
        best_epoch = state["best_epoch"]
        if best_epoch != state["epoch"]:
            model.load_state_dict(best)
            last = state["curve"][best_epoch - 1]
    val_loss, val_accuracy = last["val_loss"], last["val_accuracy"]
    if stop < config.epochs:
        test_loss = test_accuracy = math.nan
        val_loss, val_accuracy = batch_statistics_eval(
            model, val_split, splits, batch_size, channels_last
        )
    else:
        test_loss, test_accuracy = evaluate_split(
            model, test_split, splits, batch_size, channels_last
        )
    result = TrainResult(
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        val_loss=val_loss,
        test_loss=test_loss,
        epochs=state["epoch"],
        wall_s=elapsed_before + time.perf_counter() - run_start,
        images_per_s=state["train_images"] / max(state["train_s"], 1e-9),
        curve=tuple(state["curve"]),
        best_epoch=best_epoch,
    )
    return model, result


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


# ---- distillation teachers ----------------------------------------------------------------
_TEACHERS: dict[tuple[str, str], torch.nn.Module] = {}


def build_teacher(
    source: str, config: TrainConfig, splits: DatasetSplits, out_dir: Path | None = None
) -> torch.nn.Module:
    """The teacher named by ``source`` (see :class:`TrainConfig`), in eval mode, no gradients.

    A folder is loaded as is; a zoo name is trained first with ``config`` minus distillation
    (kept in ``out_dir/teacher`` by :func:`train` so it resumes too, or cached per process).
    """
    from pikenas.space.zoo.catalog import ZOO

    folder = Path(source).expanduser()
    if (folder / "arch.json").is_file():
        run = RunFolder(folder)
        arch = fit_arch_to_dataset(run.read_arch(), splits)
        teacher = _build_model(arch, 0)
        run.load_weights(teacher)
    elif source in ZOO:
        from pikenas.space.zoo.catalog import get_zoo_arch

        arch = fit_arch_to_dataset(get_zoo_arch(source), splits)
        teacher_config = config.replace(distill_from=None)
        if out_dir is not None:
            teacher, _ = _train_in_folder(arch, teacher_config, splits, out_dir / "teacher", False)
        else:
            key = (arch.archid, teacher_config.model_dump_json())
            if key not in _TEACHERS:
                _TEACHERS[key], _ = _fit(arch, teacher_config, splits)
            teacher = _TEACHERS[key]
    else:
        raise DataError(
            f"distillation teacher {source!r} is neither a folder with arch.json and "
            "weights.safetensors (from 'pikenas train') nor a zoo name (see 'pikenas zoo')"
        )
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


# ---- public entry points ------------------------------------------------------------------
def _prepare(
    arch: ArchConfig, config: TrainConfig, splits: DatasetSplits | None
) -> tuple[ArchConfig, DatasetSplits]:
    if splits is None:
        splits = load_dataset(
            config.dataset, data_dir=config.data_dir, resolution=config.resolution
        )
    elif config.resolution is not None and splits.resolution != config.resolution:
        splits = splits.resized(config.resolution)
    return fit_arch_to_dataset(arch, splits), splits


@contextlib.contextmanager
def _with_threads(threads: int) -> Iterator[None]:
    """Set the torch CPU thread count for the duration of a run, then restore it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate(
    arch: ArchConfig,
    budget: TrainConfig,
    *,
    splits: DatasetSplits | None = None,
    progress: bool = False,
    until_epoch: int | None = None,
    checkpoint: str | Path | None = None,
) -> TrainResult:
    """Proxy accuracy of ``arch``: train it under ``budget`` in memory and return its
    validation / test metrics. ``splits`` (already loaded) avoids reloading the data set;
    its geometry is fitted onto ``arch`` (:func:`fit_arch_to_dataset`). ``until_epoch`` and
    ``checkpoint`` (a file, continued from when it exists) train one rung of successive
    halving (see the module docstring)."""
    fitted, splits = _prepare(arch, budget, splits)
    with _with_threads(budget.threads):
        teacher = (
            build_teacher(budget.distill_from, budget, splits) if budget.distill_from else None
        )
        _, result = _fit(
            fitted,
            budget,
            splits,
            teacher=teacher,
            progress=progress,
            until_epoch=until_epoch,
            checkpoint_path=Path(checkpoint) if checkpoint is not None else None,
        )
    return result


def _train_in_folder(
    arch: ArchConfig, config: TrainConfig, splits: DatasetSplits, out_dir: Path, progress: bool
) -> tuple[torch.nn.Module, TrainResult]:
    run = RunFolder(out_dir)
    created = not out_dir.exists()
    stored = run.start(arch, config)
    if stored is not None:
        model = _build_model(arch, config.seed)
        run.load_weights(model)
        try:
            return model, TrainResult.from_dict(stored)
        except (TypeError, ValueError) as exc:
            raise RunDirError(
                f"{run.metrics_path} is not a metrics file ({exc}); delete it and "
                f"{run.weights_path.name} to train again"
            ) from None
    try:
        teacher = None
        if config.distill_from:
            teacher = build_teacher(config.distill_from, config, splits, out_dir)
        model, result = _fit(
            arch,
            config,
            splits,
            teacher=teacher,
            checkpoint_path=run.checkpoint_path,
            progress=progress,
        )
    except Exception:
        run.discard_unstarted(created)  # a failed first epoch must not block a corrected rerun
        raise
    metadata = {"archid": arch.archid, "name": arch.name}
    save_tensors(run.weights_path, model.state_dict(), metadata)
    run.finish(arch, {"dataset": config.dataset, "seed": config.seed, **result.to_dict()})
    return model, result


def train(
    arch: ArchConfig,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    splits: DatasetSplits | None = None,
    progress: bool = False,
) -> TrainResult:
    """Full training of ``arch`` into ``out_dir``: ``arch.json`` (fitted to the data set),
    ``config.json``, ``checkpoint.safetensors`` after every epoch, and at the end
    ``weights.safetensors`` and ``metrics.json``.

    Rerunning on an unfinished ``out_dir`` resumes after the last finished epoch and ends with
    the same weights as an uninterrupted run (CPU, same thread count); on a finished one it
    returns the stored result. A folder holding another run raises
    :class:`~space.errors.RunDirError`.
    """
    fitted, splits = _prepare(arch, config, splits)
    with _with_threads(config.threads):
        _, result = _train_in_folder(fitted, config, splits, Path(out_dir), progress)
    return result
