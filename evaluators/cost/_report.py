"""The ACE report: totals, elementwise element counts and the per-layer breakdown.

Costs are in the cost table's unit (``bit-ops`` for DESIGN.md's ACE v2 table); they are
integers when the table's scales are integers, and then the breakdown sums exactly to the
totals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pikenas.space._text import inline

if TYPE_CHECKING:
    import pandas

__all__ = ["AceReport", "BreakdownRow", "LayerSummary", "format_number", "render_report"]

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
        return render_report(self)


# ---- the terminal table (Larq model-summary style) ---------------------------------------
def format_number(value: int | float) -> str:
    """Integers with thousands separators; floats with 4 significant digits."""
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _share(part: int | float, whole: int | float) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def render_report(report: AceReport) -> str:
    """Per-layer rows (params, MACs, ACE v1, ACE v2 of MACs and of elementwise ops), totals,
    then the elementwise element counts per kind."""
    header = (
        "Layer (type)",
        "Params",
        "MACs",
        "ACE v1",
        "ACE v2 MAC",
        "ACE v2 elementwise",
        "elementwise %",
    )
    body = [
        (
            f"{inline(layer.layer)} ({inline(layer.module)})",
            format_number(layer.params),
            format_number(layer.macs),
            format_number(layer.ace_v1),
            format_number(layer.mac_cost),
            format_number(layer.elementwise_cost),
            _share(layer.elementwise_cost, layer.mac_cost + layer.elementwise_cost),
        )
        for layer in report.layers
    ]
    total = (
        "Total",
        format_number(report.params),
        format_number(report.macs),
        format_number(report.ace_v1),
        format_number(report.mac_cost),
        format_number(report.elementwise_cost),
        _share(report.elementwise_cost, report.ace_v2),
    )
    widths = [max(len(row[i]) for row in (header, *body, total)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    shape = "x".join(str(size) for size in report.input_shape)
    title = inline(report.model or "model")  # user strings (ONNX names, cost tables): one line
    unit = inline(report.cost_unit)
    lines = [
        f"ACE report: {title}, input {shape}, cost table {inline(report.cost_table)} "
        f"({unit}, float operands at {report.float_bits} bits)",
        rule,
        line(header),
        rule,
        *(line(row) for row in body),
        rule,
        line(total),
        rule,
        f"ACE v1 (PokeBNN, MACs only): {format_number(report.ace_v1)}",
        f"ACE v2 ({unit}): {format_number(report.ace_v2)}  "
        f"= MAC {format_number(report.mac_cost)} + elementwise "
        f"{format_number(report.elementwise_cost)} "
        f"({100.0 * report.elementwise_share:.1f} % elementwise)",
    ]
    if report.op_totals:
        parts = ", ".join(
            f"{inline(op)} {format_number(v)}" for op, v in report.op_totals.items()
        )
        lines.append(f"ACE v2 by op kind: {parts}")
    if report.elementwise_elements:
        parts = ", ".join(
            f"{inline(kind)} {format_number(count)}"
            for kind, count in sorted(report.elementwise_elements.items())
        )
        lines.append(f"Elementwise elements: {parts}")
    return "\n".join(lines)
