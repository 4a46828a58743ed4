"""``build_model(arch) -> PikeNet``: the network an ``ArchConfig`` describes.

Stems and blocks are built through the registries in :mod:`pikenas.space.nn._builders` (filled
by :mod:`.blocks` and :mod:`.pokebnn`), so a new block kind only registers a builder.
Each built part reports ``output_codes``; a block builder whose signature has an
``input_codes`` keyword receives the previous part's.

``PikeNet`` has two forwards: in training mode the fake-quantization forward (straight-through
gradients); in eval mode the network's integer program
(:func:`pikenas.space.program.builder.lower`), executed exactly with torch. So evaluation
measures the network that is costed and exported.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
from torch import Tensor, nn

from pikenas.space.arch import ArchConfig
from pikenas.space.errors import ArchConfigError
from pikenas.space.nn import blocks as _blocks  # noqa: F401  (registers "conv" and "pikelpn")
from pikenas.space.nn import pokebnn as _pokebnn  # noqa: F401  (registers the PokeBNN stem and bottleneck)
from pikenas.space.nn._builders import BLOCK_BUILDERS, STEM_BUILDERS
from pikenas.space.nn.blocks import Head
from pikenas.space.program._torch_runner import TorchProgram
from pikenas.space.program.builder import ProgramBuilder, lower
from pikenas.space.program.ir import IntegerProgram, ProgramError, Value

__all__ = ["PikeNet", "build_model", "check_arch_size"]


def _takes(builder: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name for p in parameters)


class PikeNet(nn.Module):
    """Stem -> blocks -> head. Input ``(N, input_channels, resolution, resolution)``: raw
    pixel values 0..255 when ``arch.input`` is set (the normalization is folded into the input
    quantizer), else normalized floats; output ``(N, num_classes)`` float logits."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch
        stem_builder = STEM_BUILDERS.get(arch.stem.kind)
        if arch.input is not None and not _takes(stem_builder, "input_spec"):
            raise ArchConfigError(
                f"stem kind {arch.stem.kind!r} cannot take raw pixels (no input_spec); "
                "remove 'input' from the architecture"
            )
        stem_options = {"input_spec": arch.input} if arch.input is not None else {}
        self.stem = stem_builder(arch.stem, arch.input_channels, **stem_options)
        codes = self.stem.output_codes
        channels = arch.stem.out_channels
        blocks = []
        for spec in arch.blocks:
            builder = BLOCK_BUILDERS.get(spec.kind)
            if _takes(builder, "input_codes"):
                block = builder(spec, channels, input_codes=codes)
            else:
                block = builder(spec, channels)
            blocks.append(block)
            codes = block.output_codes
            channels = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(arch.head, channels, arch.num_classes, signed=codes.lo < 0)
        self._program: tuple[Any, TorchProgram, list[Tensor]] | None = None

    def fake_quant_forward(self, x: Tensor) -> Tensor:
        """The training forward (also callable in eval mode: running statistics)."""
        y, step = self.stem(x)
        for block in self.blocks:
            y, step = block(y, step)
        return self.head(y, step)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.fake_quant_forward(x)
        return self.program_on(x.device)(x)

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        parts = [("stem", self.stem)]
        parts += [(f"blocks.{index}", block) for index, block in enumerate(self.blocks)]
        for path, part in [*parts, ("head", self.head)]:
            x = builder.part(path, part, x)
        return x

    def program(self) -> IntegerProgram:
        """The integer program of the current weights (see
        :func:`pikenas.space.program.builder.lower`)."""
        return self.program_on("cpu").program

    def program_on(self, device: torch.device | str) -> TorchProgram:
        """The program with its constants on ``device``, cached until a weight changes: an
        in-place write (the tensor's version counter), or new storage behind the same parameter
        (``param.data = ...``, ``torch.nn.utils.vector_to_parameters``, ``.to()``), which keeps
        the tensor's id and version but not its storage. The cache holds the storages it was
        lowered from, so a new one can never reuse their address while the entry lives."""
        tensors = [*self.parameters(), *self.buffers()]
        key = (tuple(_storage_key(t) for t in tensors), str(torch.device(device)))
        if self._program is None or self._program[0] != key:
            program = lower(self)
            held = [t.detach() for t in tensors]  # keeps the storages (and addresses) alive
            object.__setattr__(self, "_program", (key, TorchProgram(program, device), held))
        return self._program[1]  # type: ignore[index]


def _storage_key(t: Tensor) -> tuple[Any, ...]:
    """What identifies a tensor's current contents without reading them: the object, its
    version counter, and where and how it views its storage."""
    if t.is_meta:
        return (id(t), t._version, None)
    return (
        id(t),
        t._version,
        t.data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        t.stride(),
        t.dtype,
        str(t.device),
    )


def build_model(
    arch: ArchConfig, *, seed: int = 0, device: torch.device | str | None = None
) -> PikeNet:
    """Build the network for ``arch`` with deterministic initial weights (``seed``).

    ``device="meta"`` (or an enclosing ``with torch.device("meta")``) builds it without
    allocating memory, as the ACE counter does. The global RNG state is left untouched.
    """
    device_context = torch.device(device) if device is not None else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), device_context:
        torch.manual_seed(seed)
        return PikeNet(arch)


def check_arch_size(arch: Any, *, batch: int = 1) -> IntegerProgram:
    """Refuse (:class:`~space.errors.ArchConfigError`, one line) an architecture whose network
    would be too large to build, run or verify on ``batch`` images (a valid ``arch.json`` of a
    small net at 4096 px, absurd channel counts): lowered shape-only on the meta device, nothing
    allocated, its work and memory bounded by :meth:`IntegerProgram.check_work`. Returns the
    shape-only program."""
    with torch.device("meta"):
        program = lower(build_model(arch))
    try:
        program.check_work(batch)
    except ProgramError as exc:
        raise ArchConfigError(
            f"architecture {arch.name!r} at {arch.resolution} px is too large: {exc}"
        ) from None
    return program
