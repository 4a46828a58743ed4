"""ACE v1 / ACE v2 cost counting.

``count_ace(arch)`` builds the network on the meta device, lowers it to its integer program
(the operations it runs at inference, with operand widths) and prices every operation with a
:class:`CostTable` into an :class:`AceReport` (totals, elementwise element counts, per-layer
breakdown)::

    from pikenas.evaluators.cost import CostTable, count_ace
    from pikenas.space.zoo import get_zoo_arch

    report = count_ace(get_zoo_arch("mobilenet_v1-1.0-w8a8"))
    print(report.ace_v1, report.ace_v2, report.elementwise_share)
    print(report.to_table())
"""

from __future__ import annotations

from pikenas.evaluators.cost._cost_table import COST_RULES, FLOAT_WIDTHS, CostTable, OpPrice
from pikenas.evaluators.cost._counter import ROOT_LAYER, count_ace, count_onnx, program_of
from pikenas.evaluators.cost._report import AceReport, BreakdownRow, LayerSummary

__all__ = [
    "AceReport",
    "BreakdownRow",
    "COST_RULES",
    "CostTable",
    "FLOAT_WIDTHS",
    "LayerSummary",
    "OpPrice",
    "ROOT_LAYER",
    "count_ace",
    "count_onnx",
    "program_of",
]
