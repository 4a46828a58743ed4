"""``SearchConfig``: one search, read from YAML and validated before anything is created.

Sections (unknown keys are refused everywhere)::

    dataset:   {name, data_dir}                   # the data set (data_dir for cifar / folders)
    space:     SearchSpace                        # skeleton + per-block choices
    proxy:     TrainConfig fields                 # the cheap budget every candidate gets
    full:      TrainConfig fields                 # the budget of the fully trained winners
    max_ace:   ACE v2 budget or null              # candidates above it are not trained
    baselines: [zoo names]                        # enqueued as fixed points of the study
    search:    {trials, sampler, population_size, seed, full_train_top}

Every problem raises :class:`~space.errors.SearchConfigError` with one line
``FILE: KEY.PATH: what is wrong; how to fix it``. The embedded default is
``search/default_search.yaml`` (the same text as ``configs/digits_default.yaml``).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from space.errors import PikeNASError, SearchConfigError
from space.searchspace import SearchSpace

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DatasetConfig",
    "SearchSettings",
    "SearchConfig",
    "load_config",
    "default_config_text",
    "config_from_dict",
]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_NAME = "default_search.yaml"
#: TrainConfig fields the search sets itself (from ``dataset:`` and the worker's cores).
_RESERVED_BUDGET_KEYS = {
    "dataset": "set the data set in the dataset: section",
    "data_dir": "set the data folder in the dataset: section",
    "threads": "pikenas sets torch threads per worker (cores // workers)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """The data set: a name known to ``evaluators.datasets`` and its folder when it needs one."""

    name: str = "digits"
    data_dir: str | None = None


class SearchSettings(_Strict):
    """Run defaults; the command line overrides each of them."""

    trials: int = Field(default=48, ge=1)
    sampler: str = "nsga2"
    population_size: int = Field(default=12, ge=2)
    seed: int = Field(default=0, ge=0)
    full_train_top: int = Field(default=3, ge=0)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        from search.samplers import SAMPLERS

        if value not in SAMPLERS:
            raise ValueError(
                f"unknown sampler {value!r}; choose one of: {', '.join(SAMPLERS.names())}"
            )
        return value


class SearchConfig(_Strict):
    """A whole search (see the module docstring for the sections)."""

    dataset: DatasetConfig = DatasetConfig()
    space: SearchSpace
    proxy: dict[str, Any] = Field(default_factory=dict)
    full: dict[str, Any] = Field(default_factory=dict)
    max_ace: float | None = Field(default=None, gt=0)
    baselines: tuple[str, ...] = ()
    search: SearchSettings = SearchSettings()

    @field_validator("proxy", "full")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, fix in _RESERVED_BUDGET_KEYS.items():
            if key in value:
                raise ValueError(f"{key} cannot be set here; {fix}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what ``OUT/config.yaml`` and the study's search_config hold)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def with_overrides(self, **changes: Any) -> SearchConfig:
        """A validated copy with ``search:`` settings (or ``max_ace``) changed; ``None`` values
        are ignored. Errors name the command-line option."""
        data = self.to_dict()
        for key, value in changes.items():
            if value is None:
                continue
            if key == "max_ace":
                data["max_ace"] = value
            else:
                data["search"][key] = value
        try:
            return config_from_dict(data, source="command line", check_references=False)
        except SearchConfigError as exc:
            text = str(exc).removeprefix("command line: ")
            for key in changes:
                location = "max_ace" if key == "max_ace" else f"search.{key}"
                if text.startswith(location + ":"):
                    option = "--" + key.replace("_", "-")
                    raise SearchConfigError(f"{option}{text[len(location) :]}") from None
            raise

    def train_config(self, kind: str, threads: int = 1, **extra: Any) -> Any:
        """The ``evaluators.training.TrainConfig`` of the ``proxy`` or ``full`` budget."""
        from evaluators.training import TrainConfig

        fields = dict(self.proxy if kind == "proxy" else self.full)
        fields.update(extra)
        return TrainConfig(
            dataset=self.dataset.name, data_dir=self.dataset.data_dir, threads=threads, **fields
        )


def default_config_text() -> str:
    """The YAML text of the embedded default search (digits)."""
    return importlib.resources.files("search").joinpath(DEFAULT_CONFIG_NAME).read_text()


def load_config(path: str | Path | None = None, *, check_references: bool = True) -> SearchConfig:
    """Read and fully validate a search config (``None``: the embedded default).

    Checks beyond the schema (``check_references``): the proxy / full budgets are valid
    training configs, the baselines are zoo names whose architectures have the space's skeleton.
    """
    if path is None:
        text, source = default_config_text(), f"<embedded {DEFAULT_CONFIG_NAME}>"
    else:
        file = Path(path).expanduser()
        source = str(file)
        if not file.is_file():
            raise SearchConfigError(f"{source}: no such config file; give a path to a YAML file")
        text = file.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise SearchConfigError(
            f"{source}: not valid YAML{where}: {problem}; fix the syntax"
        ) from None
    if not isinstance(data, dict):
        raise SearchConfigError(
            f"{source}: the file must hold a mapping with the sections dataset, space, proxy, "
            "full, max_ace, baselines, search"
        )
    return config_from_dict(data, source=source, check_references=check_references)


def config_from_dict(
    data: dict[str, Any], source: str = "<config>", *, check_references: bool = True
) -> SearchConfig:
    """Validate a config mapping; ``source`` names the file in error messages."""
    try:
        config = SearchConfig.model_validate(data)
    except ValidationError as exc:
        raise SearchConfigError(f"{source}: {_describe(exc)}") from None
    if check_references:
        _check_budgets(config, source)
        _check_baselines(config, source)
    return config


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "config"
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key; remove it or check its spelling"
    elif first["type"] == "missing":
        message = "required key is missing; add it"
    elif first["type"] in ("greater_than", "greater_than_equal", "less_than_equal"):
        message += f" (got {first.get('input')!r}); change the value"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{location}: {message}{suffix}"


def _check_budgets(config: SearchConfig, source: str) -> None:
    try:
        from evaluators.training import TrainConfig  # noqa: F401
    except ImportError:  # the training module is optional for config-only use
        logger.warning("evaluators.training is not importable; budgets are not validated")
        return
    for kind in ("proxy", "full"):
        try:
            config.train_config(kind)
        except ValidationError as exc:
            raise SearchConfigError(f"{source}: {kind}.{_describe(exc)}") from None
        except PikeNASError as exc:
            raise SearchConfigError(f"{source}: {kind}: {exc}") from None


def _check_baselines(config: SearchConfig, source: str) -> None:
    if not config.baselines:
        return
    from space.zoo import get_zoo_arch, zoo_names

    known = set(zoo_names())
    space = config.space
    for index, name in enumerate(config.baselines):
        if name not in known:
            raise SearchConfigError(
                f"{source}: baselines.{index}: unknown zoo model {name!r}; see 'pikenas zoo' "
                "for the names"
            )
        try:
            arch = get_zoo_arch(
                name,
                resolution=space.resolution,
                input_channels=space.input_channels,
                num_classes=space.num_classes,
            )
            space.encode(arch)
        except PikeNASError as exc:
            raise SearchConfigError(f"{source}: baselines.{index}: {exc}") from None
        if not space.encodes_exactly(arch):
            logger.info(
                "baseline %s is not inside the search space; its nearest genome is enqueued", name
            )
