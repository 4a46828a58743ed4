"""``SearchConfig``: one search, read from YAML and validated before anything is created.

Sections (unknown keys are refused everywhere)::

    dataset:    {name, data_dir}                  # the data set (data_dir for cifar / folders)
    space:      SearchSpace                       # skeleton + per-block choices
    proxy:      TrainConfig fields                # the cheap budget every candidate gets
    fidelity:   null | {rungs, reduction}         # Pareto successive halving (search.halving)
    full:       TrainConfig fields                # the budget of the fully trained winners
    max_ace:    ACE v2 budget or null             # candidates above it are not trained
    cost_table: null | ace_v2 | FILE | {...}     # what ACE v2 charges (null: the default table)
    baselines:  [zoo names]                       # enqueued as fixed points of the study
    search:     {trials, sampler, population_size, seed, full_train_top}

``cost_table`` is a built-in name (``ace_v2``), a YAML / JSON cost table file
(relative to the config file) or the table itself; the config holds the resolved table, so a
study records exactly what scored it. Every problem raises
:class:`~space.errors.SearchConfigError` with one line ``FILE: KEY.PATH: what is wrong; how to
fix it``. ``proxy`` and ``full`` are held as :class:`~evaluators.training.TrainConfig` on the
``dataset:`` (with fidelity, the proxy's epochs are the top rung); the candidate evaluator is
built from typed parts (:meth:`SearchConfig.evaluator_setup`), never from the whole config. The
embedded default is ``search/default_search.yaml`` (the same text as
``configs/digits_default.yaml``).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_serializer, field_validator, model_validator

from pikenas.evaluators.candidate import DatasetSpec, EvaluatorSetup
from pikenas.evaluators.cost import CostTable
from pikenas.evaluators.training.config import TrainConfig
from pikenas.search.halving import FidelityConfig
from pikenas.space._parse import parse_yaml, read_text
from pikenas.space._strict import StrictModel, one_line
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import CostModelError, PikeNASError, SearchConfigError, UnknownNameError
from pikenas.space.searchspace import SearchSpace

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DatasetConfig",
    "SearchSettings",
    "SearchConfig",
    "baseline_arch",
    "load_config",
    "default_config_text",
    "config_from_dict",
    "resolve_cost_table",
]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_NAME = "default_search.yaml"
#: TrainConfig fields the search sets itself (from ``dataset:`` and the worker's cores).
_RESERVED_BUDGET_KEYS = {
    "dataset": "set the data set in the dataset: section",
    "data_dir": "set the data folder in the dataset: section",
    "threads": "pikenas sets torch threads per worker (cores // workers)",
}
#: built-in cost tables by name (float operands at 32 bits: the program runs fp32).
_BUILTIN_TABLES = {"ace_v2": 32}


#: the ``dataset:`` section (one definition, in evaluators).
DatasetConfig = DatasetSpec


class SearchSettings(StrictModel):
    """Run defaults; the command line overrides each of them."""

    trials: int = Field(default=48, ge=1, le=1_000_000)
    sampler: str = "nsga2"
    population_size: int = Field(default=12, ge=2, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    full_train_top: int = Field(default=3, ge=0, le=1_000)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        from pikenas.search.samplers import SAMPLERS

        value = value.strip().lower()  # NSGA2 and nsga2 name the same sampler
        try:
            SAMPLERS.get(value)
        except UnknownNameError as exc:  # its message lists the valid names
            raise ValueError(str(exc)) from None
        return value


class SearchConfig(StrictModel):
    """A whole search (see the module docstring for the sections)."""

    dataset: DatasetSpec = DatasetSpec()
    space: SearchSpace
    proxy: TrainConfig = TrainConfig()
    fidelity: FidelityConfig | None = None
    full: TrainConfig = TrainConfig()
    max_ace: float | None = Field(default=None, gt=0)
    cost_table: dict[str, Any] | None = None
    baselines: tuple[str, ...] = ()
    search: SearchSettings = SearchSettings()

    @model_validator(mode="before")
    @classmethod
    def _budgets_train_on_the_dataset(cls, data: Any) -> Any:
        """``proxy`` / ``full`` as given (no reserved keys) on the ``dataset:`` section."""
        if not isinstance(data, dict):
            return data
        dataset = data.get("dataset")
        if isinstance(dataset, DatasetSpec):
            on = {"dataset": dataset.name, "data_dir": dataset.data_dir}
        elif isinstance(dataset, dict):
            on = {"dataset": dataset.get("name", "digits"), "data_dir": dataset.get("data_dir")}
        else:
            on = {"dataset": "digits", "data_dir": None}
        data = dict(data)
        for kind in ("proxy", "full"):
            budget = data.get(kind)
            if isinstance(budget, TrainConfig):
                budget = _given(budget)
            if budget is None:
                budget = {}
            if isinstance(budget, dict):
                for key, fix in _RESERVED_BUDGET_KEYS.items():
                    if key in budget:
                        raise ValueError(f"{kind}: {key} cannot be set here; {fix}")
                data[kind] = {**budget, **on}
        return data

    @model_validator(mode="after")
    def _proxy_epochs_are_the_top_rung(self) -> SearchConfig:
        if self.fidelity is None:
            return self
        if "epochs" in self.proxy.model_fields_set and self.proxy.epochs != self.fidelity.top:
            raise ValueError(
                f"proxy.epochs {self.proxy.epochs} differs from the top rung {self.fidelity.top} "
                "of fidelity.rungs: the top rung is the proxy budget; drop proxy.epochs or make "
                "them equal"
            )
        if self.proxy.epochs != self.fidelity.top:
            top = self.proxy.model_copy(update={"epochs": self.fidelity.top})
            object.__setattr__(self, "proxy", top)  # frozen: set once, while validating
        return self

    @field_serializer("proxy", "full")
    def _budget_as_given(self, budget: TrainConfig) -> dict[str, Any]:
        return _given(budget)

    @field_validator("cost_table", mode="before")
    @classmethod
    def _valid_table(cls, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = resolve_cost_table(value)
        try:
            table = CostTable.from_dict(value, source="table").to_dict()
        except CostModelError as exc:
            raise ValueError(str(exc).removeprefix("table: ")) from None
        return None if table == CostTable.default().to_dict() else table

    def cost_table_object(self) -> CostTable:
        """The :class:`~evaluators.cost.CostTable` that scores this search."""
        if self.cost_table is None:
            return CostTable.default()
        return CostTable.from_dict(self.cost_table)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what ``OUT/config.yaml`` and the study's search_config hold)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def searched_json(self) -> str:
        """The parts every worker of a study must share: all but the ``search:`` run settings."""
        data = self.to_dict()
        data.pop("search")
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def with_overrides(self, **changes: Any) -> SearchConfig:
        """A validated copy with ``search:`` settings, ``max_ace``, ``cost_table`` (a name,
        file or mapping) changed; ``None`` values are
        ignored. Errors name the command-line option."""
        data = self.to_dict()
        for key, value in changes.items():
            if value is None:
                continue
            if key in ("max_ace", "cost_table"):
                data[key] = value
            else:
                data["search"][key] = value
        try:
            return config_from_dict(data, source="command line", check_references=False)
        except SearchConfigError as exc:
            text = str(exc).removeprefix("command line: ")
            for key in changes:
                location = key if key in ("max_ace", "cost_table") else f"search.{key}"
                if text.startswith(location + ":"):
                    option = "--" + key.replace("_", "-")
                    raise SearchConfigError(f"{option}{text[len(location) :]}") from None
            raise

    def baseline_genomes(self) -> list[tuple[str, dict[str, Any]]]:
        """``(zoo name, genome)`` of each baseline at the space's geometry. The trial always
        evaluates exactly the zoo model (:func:`baseline_arch`); the genome is what the sampler
        sees for it: the model's own when it is inside the space, else the nearest one, or the
        space's default genome when the model has another skeleton. A bad name, or a model that
        cannot take the space's input, raises a one-line error naming its index."""
        from pikenas.space.zoo.catalog import zoo_names

        known = set(zoo_names())
        space = self.space
        genomes = []
        for index, name in enumerate(self.baselines):
            if name not in known:
                raise SearchConfigError(
                    f"baselines.{index}: unknown zoo model {name!r}; see 'pikenas zoo' for the "
                    "names"
                )
            try:
                arch = baseline_arch(name, space)
            except PikeNASError as exc:
                raise SearchConfigError(f"baselines.{index}: {exc}") from None
            try:
                genome = space.encode(arch)
            except PikeNASError as exc:  # another skeleton: no nearest genome
                logger.info("baseline %s: %s; the default genome stands for it", name, exc)
                genome = space.default_params()
            else:
                if not space.encodes_exactly(arch):
                    logger.info("baseline %s is outside the space; nearest genome used", name)
            genomes.append((name, genome))
        return genomes

    def check_data(self) -> None:
        """Load the data set as the ``proxy`` and ``full`` budgets will (its name, its files,
        their resolution) and fit the space's architectures to it, before a study exists: a
        data set that cannot work raises one :class:`SearchConfigError` instead of failing every
        trial. (All architectures of a space share its strides: one decoded genome stands for
        all of them.)"""
        from pikenas.evaluators.data.datasets import fit_arch_to_dataset, load_dataset

        dataset = self.dataset
        if dataset.data_dir is not None and not Path(dataset.data_dir).expanduser().is_dir():
            raise SearchConfigError(
                f"dataset.data_dir: {dataset.data_dir} is not a folder; give the folder that "
                f"holds the {dataset.name} files"
            )
        arch = self.space.decode(self.space.default_params())
        for kind in ("proxy", "full"):
            resolution = self.train_config(kind).resolution
            try:
                splits = load_dataset(
                    dataset.name, data_dir=dataset.data_dir, resolution=resolution
                )
            except PikeNASError as exc:
                where = f"{kind}.resolution" if "resolution" in str(exc) else "dataset"
                raise SearchConfigError(f"{where}: {exc}") from None
            try:
                fit_arch_to_dataset(arch, splits)
            except PikeNASError as exc:
                where = f"{kind}.resolution" if resolution is not None else "dataset"
                raise SearchConfigError(
                    f"{where}: the space cannot take this input: {exc}"
                ) from None

    def train_config(
        self, kind: Literal["proxy", "full"], threads: int = 1, **extra: Any
    ) -> TrainConfig:
        """The ``proxy`` or ``full`` budget with ``threads`` torch threads (and ``extra``
        fields changed)."""
        budget = self.proxy if kind == "proxy" else self.full
        return budget.replace(threads=threads, **extra)

    def with_dataset(self, dataset: DatasetSpec) -> SearchConfig:
        """This config on another ``dataset`` (its budgets too)."""
        on = {"dataset": dataset.name, "data_dir": dataset.data_dir}
        proxy, full = self.proxy.model_copy(update=on), self.full.model_copy(update=on)
        return self.model_copy(update={"dataset": dataset, "proxy": proxy, "full": full})

    def evaluator_setup(self, threads: int = 1) -> EvaluatorSetup:
        """The typed parts a candidate evaluator is built from (``threads`` torch threads)."""
        return EvaluatorSetup(
            dataset=self.dataset,
            cost_table=self.cost_table_object(),
            proxy=self.train_config("proxy", threads),
            full=self.train_config("full", threads),
            rungs=self.fidelity.rungs if self.fidelity is not None else (),
            searched_resolution=self.space.searched_resolution,
        )


def _given(budget: TrainConfig) -> dict[str, Any]:
    """The fields of ``budget`` the config file sets (not those the search sets itself)."""
    return budget.model_dump(mode="json", exclude_unset=True, exclude=set(_RESERVED_BUDGET_KEYS))


def baseline_arch(name: str, space: SearchSpace) -> ArchConfig:
    """Zoo model ``name`` at the space's geometry (input channels, resolution, classes): what a
    baseline trial evaluates, inside the space or not (``pikenas ace NAME`` at that geometry
    gives the same archid and ACE v2)."""
    from pikenas.space.zoo.catalog import get_zoo_arch

    return get_zoo_arch(
        name,
        resolution=space.resolution,
        input_channels=space.input_channels,
        num_classes=space.num_classes,
    )


def resolve_cost_table(name_or_file: str, base: Path | None = None) -> dict[str, Any]:
    """A built-in table name (``ace_v2``) or a table file (relative to
    ``base``) as a cost table mapping; an unreadable file raises ``ValueError``."""
    if name_or_file in _BUILTIN_TABLES:
        return CostTable.default(float_bits=_BUILTIN_TABLES[name_or_file]).to_dict()
    path = Path(name_or_file).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ValueError(
            f"{name_or_file!r} is neither a built-in table ({', '.join(_BUILTIN_TABLES)}) nor a "
            "cost table file; see configs/cost_tables/"
        )
    try:
        return CostTable.load(path).to_dict()
    except CostModelError as exc:
        raise ValueError(str(exc)) from None


def default_config_text() -> str:
    """The YAML text of the embedded default search (digits)."""
    return importlib.resources.files("pikenas.search").joinpath(DEFAULT_CONFIG_NAME).read_text()


def load_config(path: str | Path | None = None, *, check_references: bool = True) -> SearchConfig:
    """Read and fully validate a search config (``None``: the embedded default).

    Checks beyond the schema (``check_references``): the proxy / full budgets are valid
    training configs, the baselines are zoo names whose architectures have the space's skeleton.
    """
    if path is None:
        text, source, folder = default_config_text(), f"<embedded {DEFAULT_CONFIG_NAME}>", None
    else:
        file = Path(path).expanduser()
        source, folder = str(file), file.resolve().parent
        text = read_text(file, SearchConfigError, "config file")
    data = parse_yaml(text, source, SearchConfigError)
    if not isinstance(data, dict):
        raise SearchConfigError(
            f"{source}: the file must hold a mapping with the sections dataset, space, proxy, "
            "fidelity, full, max_ace, cost_table, baselines, search"
        )
    if isinstance(data.get("cost_table"), str):
        try:
            data["cost_table"] = resolve_cost_table(data["cost_table"], folder)
        except ValueError as exc:
            raise SearchConfigError(f"{source}: cost_table: {exc}") from None
    return config_from_dict(data, source=source, check_references=check_references)


def config_from_dict(
    data: dict[str, Any], source: str = "<config>", *, check_references: bool = True
) -> SearchConfig:
    """Validate a config mapping; ``source`` names the file in error messages."""
    try:
        config = SearchConfig.model_validate(data)
    except ValidationError as exc:
        raise SearchConfigError(f"{source}: {one_line(exc)}") from None
    if check_references:
        _check_baselines(config, source)
    return config


def _check_baselines(config: SearchConfig, source: str) -> None:
    try:
        config.baseline_genomes()
    except PikeNASError as exc:
        raise SearchConfigError(f"{source}: {exc}") from None
