"""What decides a training run (:class:`TrainConfig`) and what it measured (:class:`TrainResult`);
:mod:`evaluators.training` runs them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from pikenas.space._strict import StrictModel, one_line
from pikenas.space.errors import SearchConfigError

__all__ = ["TrainConfig", "TrainResult"]


#: the schedule length (optimizer steps) from which ``compile: auto`` compiles the activation
#: quantizers: about 10 s of compiling (cold, 2-core CPU) against the time they save a step,
#: both measured by ``benchmarks/training.py --compile``
COMPILE_MIN_STEPS = 2_000


class TrainConfig(StrictModel):
    """Everything that decides a training run (the proxy budget of :func:`evaluate` too).

    ``epochs``, ``data_fraction`` (a fixed stratified share of the training images) and
    ``resolution`` (``None``: the data set's own) are the proxy knobs. ``warmup_epochs`` of
    linear warm-up precede a cosine decay to 0 over the remaining steps. ``threads`` is the
    torch CPU thread count (keep workers x threads <= cores). ``distill_from`` names a float
    teacher: a folder written by :func:`train` (``arch.json`` + ``weights.safetensors``) or a
    zoo name (trained first with this same config, without distillation). ``compile``: the
    activation quantizers as compiled kernels (:mod:`pikenas.space.nn._compiled`; same codes,
    the scale gradient summed in another order); ``auto`` when the schedule has at least
    :data:`COMPILE_MIN_STEPS` steps, where the compile time is won back.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = Field(default=30, ge=1, le=100_000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=4e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    scale_lr_factor: float = Field(default=0.1, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    data_fraction: float = Field(default=1.0, gt=0, le=1)
    resolution: int | None = Field(default=None, ge=1, le=4_096)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    threads: int = Field(default=1, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"
    distill_from: str | None = None
    distill_weight: float = Field(default=0.5, ge=0, le=1)
    distill_temperature: float = Field(default=4.0, gt=0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Validate; a problem raises :class:`SearchConfigError` with one line."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            if exc.errors()[0]["type"] == "extra_forbidden":
                where = ".".join(str(part) for part in exc.errors()[0]["loc"])
                raise SearchConfigError(
                    f"invalid training option {where}: unknown option; valid ones: "
                    f"{', '.join(cls.model_fields)}"
                ) from None
            raise SearchConfigError(f"invalid training option {one_line(exc)}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.model_dump(), **changes})


@dataclass(frozen=True)
class TrainResult:
    """Metrics of one run. ``wall_s``: seconds of the whole run (all resumed parts);
    ``images_per_s``: training images per second of training steps; ``curve``: one dict per
    epoch (``epoch``, ``lr``, ``train_loss``, ``train_accuracy``, ``val_loss``,
    ``val_accuracy``, ``seconds``); ``best_epoch``: the epoch whose weights a full run keeps
    (the best validation accuracy of the integer program; 0 for a rung)."""

    val_accuracy: float
    test_accuracy: float
    val_loss: float
    test_loss: float
    epochs: int
    wall_s: float
    images_per_s: float
    curve: tuple[dict[str, float], ...] = field(default=())
    best_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["curve"] = [dict(entry) for entry in self.curve]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        names = cls.__dataclass_fields__
        values = {key: value for key, value in data.items() if key in names}
        values["curve"] = tuple(values.get("curve", ()))
        return cls(**values)
