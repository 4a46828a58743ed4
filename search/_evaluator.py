"""The search edge where an evaluator is named: ``--evaluator MODULE:CALLABLE`` resolved to a
factory, called with the typed parts of the search (:class:`~evaluators.candidate.EvaluatorSetup`).

The default is :class:`~evaluators.candidate.ProxyEvaluator`; tests plug in their zero-cost
evaluators the same way (``tests.search_tests.fakes:fake``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pikenas.evaluators.candidate import CandidateEvaluator, EvaluatorFactory, ProxyEvaluator
from pikenas.space.errors import SearchConfigError

if TYPE_CHECKING:
    from pikenas.search.config import SearchConfig

__all__ = ["DEFAULT_EVALUATOR", "evaluator_factory", "evaluator_name", "make_evaluator"]

#: how a study records that the real proxy evaluator scores it (``--evaluator`` not given).
DEFAULT_EVALUATOR = "pikenas"


def evaluator_name(reference: str | None) -> str:
    """What the study record keeps of ``reference``: its ``module:callable`` as given, or
    :data:`DEFAULT_EVALUATOR` for the real proxy evaluator (``None``)."""
    return DEFAULT_EVALUATOR if reference is None else reference


def evaluator_factory(reference: str | None) -> EvaluatorFactory:
    """The factory named ``module:callable`` (``None``: :class:`ProxyEvaluator`); an unknown
    one raises :class:`SearchConfigError` with one line."""
    if reference is None:
        return ProxyEvaluator
    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SearchConfigError(
            f"--evaluator {reference!r}: cannot import it ({exc}); give MODULE:CALLABLE of a "
            "factory (EvaluatorSetup) -> evaluator"
        ) from None
    if not callable(factory):
        raise SearchConfigError(f"--evaluator {reference!r} is not callable")
    return factory


def make_evaluator(
    reference: str | None, config: SearchConfig, threads: int = 1
) -> CandidateEvaluator:
    """The evaluator of ``reference`` (see :func:`evaluator_factory`) built from the typed parts
    of ``config`` with ``threads`` torch threads."""
    return evaluator_factory(reference)(config.evaluator_setup(threads))
