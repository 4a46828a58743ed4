"""Per-epoch training checkpoints as one safetensors file (no pickles).

``checkpoint.safetensors`` holds every tensor needed to continue bit-identically on the CPU:
the model's ``state_dict`` (``model.*``), the weights of the best epoch so far when it is an
earlier one (``best.*``, see :func:`load_checkpoint`), the optimizer's per-parameter state
(``optimizer.<index>.<name>``), the global torch RNG state and the data-order generator's
state (``rng.*``). The small JSON state (finished epochs, optimizer step, curve, elapsed time,
the optimizer's parameter groups) lives in the same file's header metadata under ``"state"``,
so tensors and state are replaced together by one atomic ``os.replace``: a run killed at any
moment leaves either the previous checkpoint or the new one, never a mixture.

Files are written with :func:`evaluators._atomic.atomic_write`, pikenas's one atomic write;
:func:`load_weights` is its one loader of a ``weights.safetensors`` file. This module imports
torch only when a tensor function runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pikenas.evaluators._atomic import atomic_write
from pikenas.space.errors import RunDirError

if TYPE_CHECKING:  # torch is imported on use: results writes its files through this module
    import torch

__all__ = [
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "save_tensors",
]

CHECKPOINT_FORMAT = 1


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomically write ``tensors`` (copied to the CPU, contiguous) and string ``metadata`` as
    safetensors. Contiguous because safetensors refuses strided tensors, and a channels_last
    conv weight (CUDA and every run at 16 px or more) is one."""
    from safetensors.torch import save_file

    cpu_tensors = {
        name: value.detach().to("cpu", copy=True).contiguous() for name, value in tensors.items()
    }
    atomic_write(path, lambda temporary: save_file(cpu_tensors, temporary, metadata=metadata))


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load a ``weights.safetensors`` file into ``model`` (strict: every tensor must fit); a
    missing or unreadable file, or one of another network, raises :class:`RunDirError` with one
    line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, ValueError, SafetensorError) as exc:
        raise RunDirError(f"cannot read {path}: {_first_line(exc)}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise RunDirError(f"{path} does not fit this architecture: {_first_line(exc)}") from None
    return model


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the checkpoint (see the module docstring); ``state`` must be JSON-serializable;
    ``best``: a ``state_dict`` kept beside the model's (the best epoch's weights)."""
    import torch

    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    tensors.update({f"best.{name}": value for name, value in (best or {}).items()})
    optimizer_state = optimizer.state_dict()
    plain_values: dict[str, dict[str, Any]] = {}
    for index, parameter_state in optimizer_state["state"].items():
        for name, value in parameter_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                plain_values.setdefault(str(index), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for device_index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{device_index}"] = cuda_state
    header = {
        "format": CHECKPOINT_FORMAT,
        "state": state,
        "optimizer_param_groups": optimizer_state["param_groups"],
        "optimizer_plain_values": plain_values,
    }
    save_tensors(path, tensors, {"state": json.dumps(header)})


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore model, optimizer and RNG states from ``path``; return the JSON ``state``, with
    the ``best`` weights saved beside the model's (if any) under ``"best_weights"``. A
    truncated, garbage or foreign checkpoint raises :class:`RunDirError` with one line."""
    import stat

    from safetensors import SafetensorError

    if not stat.S_ISREG(Path(path).lstat().st_mode):
        raise RunDirError(f"checkpoint {path} is not a regular file (a link or device); remove it")
    try:
        return _restore(path, model, optimizer, generator)
    except RunDirError:
        raise
    except (
        OSError,
        KeyError,
        ValueError,
        RuntimeError,
        TypeError,
        IndexError,
        AttributeError,
        SafetensorError,
    ) as exc:
        raise RunDirError(
            f"cannot resume from checkpoint {path} ({_first_line(exc)}); delete it to restart "
            "that run from scratch"
        ) from None


def _restore(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> dict[str, Any]:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        header = json.loads((handle.metadata() or {})["state"])
    tensors = load_file(str(path))
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise RunDirError(f"checkpoint {path} has an unknown format; delete it to restart")
    model_state = {
        name.removeprefix("model."): value
        for name, value in tensors.items()
        if name.startswith("model.")
    }
    model.load_state_dict(model_state, strict=True)
    per_parameter: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            per_parameter.setdefault(int(index), {})[key] = value
    for index, values in header["optimizer_plain_values"].items():
        per_parameter.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict(
        {"state": per_parameter, "param_groups": header["optimizer_param_groups"]}
    )
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if torch.cuda.is_available():
        cuda_states = [tensors.get(f"rng.cuda.{i}") for i in range(torch.cuda.device_count())]
        if cuda_states and all(cuda_state is not None for cuda_state in cuda_states):
            torch.cuda.set_rng_state_all(cuda_states)
    state = dict(header["state"])
    best = {
        name.removeprefix("best."): value
        for name, value in tensors.items()
        if name.startswith("best.")
    }
    if best:
        state["best_weights"] = best
    return state
