"""What several commands share: the one resolver of "zoo name or ArchConfig JSON file", the
options of ``search`` and ``worker``, and the worker spec they build from them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

if TYPE_CHECKING:
    from pikenas.results.storage import StorageTarget
    from pikenas.search.spec import WorkerSpec
    from pikenas.space.arch import ArchConfig

__all__ = [
    "check_threads",
    "resolve_arch",
    "worker_spec",
    "ConfigArgument",
    "TrialsOption",
    "SeedOption",
    "SamplerOption",
    "StudyOption",
    "CostTableOption",
    "EvaluatorOption",
    "HeartbeatOption",
    "StaleAfterOption",
]

ConfigArgument = Annotated[
    str | None, typer.Argument(help="Search config YAML (default: the embedded digits search).")
]
TrialsOption = Annotated[
    int | None,
    typer.Option("--trials", help="COMPLETE trials the study must hold (default: config)."),
]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Sampler seed.")]
SamplerOption = Annotated[
    str | None,
    typer.Option("--sampler", help="nsga2, tpe, random, gp or qmc (default: config)."),
]
StudyOption = Annotated[str, typer.Option("--study", help="Study name.")]
CostTableOption = Annotated[
    str | None,
    typer.Option(
        "--cost-table",
        help="What ACE v2 charges: ace_v2 or a cost table file (see "
        "configs/cost_tables/); default: the config's. Recorded in the study.",
    ),
]
EvaluatorOption = Annotated[
    str | None,
    typer.Option(
        "--evaluator",
        help="MODULE:CALLABLE of a custom evaluator factory (EvaluatorSetup) -> evaluator "
        "(default: proxy training).",
    ),
]
HeartbeatOption = Annotated[
    float, typer.Option("--heartbeat-interval", help="Seconds between heartbeats of a trial.")
]
StaleAfterOption = Annotated[
    float,
    typer.Option(
        "--stale-after",
        help="A running trial without heartbeat for this many seconds is failed and retried.",
    ),
]
#: WorkerSpec fields -> the options that set them, for error messages.
_OPTIONS = {"n_trials": "--trials", "study_name": "--study", "threads": "--threads"}


def check_threads(threads: int, option: str = "--threads") -> None:
    """Refuse more torch threads than this process's cores (oversubscribed threads run many
    times slower; a huge count crashes the math libraries)."""
    from pikenas.search.spec import available_cores
    from pikenas.space.errors import SearchConfigError

    cores = available_cores()
    if threads < 1 or threads > cores:
        raise SearchConfigError(
            f"{option} {threads}: give 1 to {cores} (the cores this process may use); one "
            "thread per core is fastest"
        )


def resolve_arch(target: str, resolution: int | None = None) -> ArchConfig:
    """The ArchConfig of a JSON file (when ``target`` names a file or looks like a path) or of
    a zoo model; ``resolution`` overrides its input size."""
    from pikenas.space._parse import read_text
    from pikenas.space.arch import ArchConfig
    from pikenas.space.errors import ArchConfigError
    from pikenas.space.zoo.catalog import get_zoo_arch

    path = Path(target)
    if not (path.is_file() or path.suffix.lower() == ".json" or "/" in target or "\\" in target):
        return get_zoo_arch(target, resolution=resolution)
    if not path.exists():
        raise ArchConfigError(
            f"{target}: no such file; pass an ArchConfig JSON file or a zoo name "
            "('pikenas zoo' lists them)"
        )
    text = read_text(path, ArchConfigError, "architecture file")
    try:
        arch = ArchConfig.from_json(text)
    except ArchConfigError as exc:
        raise ArchConfigError(f"{target}: {exc}") from None
    if resolution is not None and resolution != arch.resolution:
        arch = arch.replace(resolution=resolution)
    from pikenas.space.nn.build import check_arch_size

    check_arch_size(arch)  # absurd sizes refused before anything is built or run
    return arch


def worker_spec(
    config_path: str | None,
    *,
    storage: str | StorageTarget,
    study: str,
    overrides: dict[str, object],
    evaluator: str | None,
    heartbeat_interval: float,
    stale_after: float,
    seed: int | None = None,
    threads: int = 1,
    checkpoints: str | None = None,
) -> WorkerSpec:
    """The validated spec of the command line's worker(s): the config with the command line's
    ``overrides`` (``trials``, ``sampler``, ``cost_table``, ...); any problem raises a one-line
    :class:`SearchConfigError` naming the option (creates nothing)."""
    from pikenas.search._evaluator import evaluator_factory
    from pikenas.search.config import load_config
    from pikenas.search.spec import WorkerSpec
    from pikenas.space._strict import one_line
    from pikenas.space.errors import SearchConfigError

    config = load_config(config_path).with_overrides(**overrides)
    try:
        config.check_data()
    except SearchConfigError as exc:
        raise SearchConfigError(f"{config_path or 'the default config'}: {exc}") from None
    evaluator_factory(evaluator)  # importable, or exit 2 now
    try:
        return WorkerSpec(
            config=config,
            storage=storage,
            study_name=study.strip(),
            n_trials=config.search.trials,
            seed=seed,
            threads=threads,
            evaluator=evaluator,
            heartbeat_interval=heartbeat_interval,
            stale_after=stale_after,
            checkpoints=checkpoints,
        )
    except ValidationError as exc:
        text = one_line(exc)
        field, _, rest = text.partition(":")
        option = _OPTIONS.get(field, f"--{field.replace('_', '-')}")
        raise SearchConfigError(f"{option}:{rest}" if rest else text) from None
