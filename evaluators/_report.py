"""The ACE report: totals, elementwise element counts and the per-layer breakdown.

Costs are in the cost table's unit (``bit-ops`` for DESIGN.md's ACE v2 table); they are
integers when the table's scales are integers, and then the breakdown sums exactly to the
totals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

__all__ = ["AceReport", "BreakdownRow", "LayerSummary"]

Number = int | float


@dataclass(frozen=True)
class BreakdownRow:
    """One layer's operations of one kind at one pair of counted operand widths.

    ``layer``: the module path (``blocks.3.pointwise``); ``module``: its class name; ``op``: the
    op kind; ``count``: executions; ``bits_a`` / ``bits_b``: the widths charged (float operands
    at the table's ``float_bits``); ``float_operands``: float arithmetic; ``labels``: the
    declared labels merged into this row (``dequantize+bn_scale``); ``cost``: ACE v2 cost;
    ``ace_v1``: the row's ACE v1 (mac rows only, at the declared widths).
    """

    layer: str
    module: str
    op: str
    count: int
    bits_a: int
    bits_b: int
    float_operands: bool
    labels: str
    cost: Number
    ace_v1: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerSummary:
    """One layer's totals (the rows of :meth:`AceReport.to_table`)."""

    layer: str
    module: str
    params: int
    macs: int
    ace_v1: int
    mac_cost: Number
    elementwise_cost: Number

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AceReport:
    """ACE v1 / ACE v2 of one network on one forward pass of batch 1.

    ``ace_v1``: sum over MACs of weight bits x activation bits (PokeBNN); ``ace_v2``: the cost
    table's total over every operation; ``macs``: multiply-accumulates; ``params``: parameters
    stored for inference; ``mac_cost`` / ``elementwise_cost``: ACE v2 of the mac ops and of
    everything else; ``elementwise_share`` = elementwise_cost / ace_v2;
    ``elementwise_elements``: for each elementwise kind (``batchnorm``, ``quantnorm``, ``dprelu``
    ...) the output elements processed; ``breakdown``: one :class:`BreakdownRow` per layer, op
    kind and operand widths; ``layers``: one :class:`LayerSummary` per layer.
    """

    ace_v1: int
    ace_v2: Number
    macs: int
    params: int
    mac_cost: Number
    elementwise_cost: Number
    elementwise_share: float
    elementwise_elements: dict[str, int]
    breakdown: tuple[BreakdownRow, ...]
    layers: tuple[LayerSummary, ...] = ()
    cost_table: str = "ace_v2"
    cost_unit: str = "bit-ops"
    float_bits: int = 32
    input_shape: tuple[int, ...] = ()
    model: str = ""
    op_totals: dict[str, Number] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: the totals, ``elementwise_elements``, ``breakdown`` and ``layers``."""
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "cost_table": self.cost_table,
            "cost_unit": self.cost_unit,
            "float_bits": self.float_bits,
            "ace_v1": self.ace_v1,
            "ace_v2": self.ace_v2,
            "macs": self.macs,
            "params": self.params,
            "mac_cost": self.mac_cost,
            "elementwise_cost": self.elementwise_cost,
            "elementwise_share": self.elementwise_share,
            "elementwise_elements": dict(self.elementwise_elements),
            "op_totals": dict(self.op_totals),
            "breakdown": [row.as_dict() for row in self.breakdown],
            "layers": [layer.as_dict() for layer in self.layers],
        }

    def to_dataframe(self) -> pandas.DataFrame:
        """The breakdown as a DataFrame, one row per layer, op kind and operand widths."""
        import pandas

        columns = list(BreakdownRow.__dataclass_fields__)
        return pandas.DataFrame([row.as_dict() for row in self.breakdown], columns=columns)

    def to_table(self) -> str:
        """A terminal table in the manner of Larq's model summary: one row per layer, totals."""
        from evaluators._table import render_report

        return render_report(self)
