"""Plain-text rendering of an :class:`~evaluators._report.AceReport` (Larq model-summary style)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluators._report import AceReport

__all__ = ["render_report", "format_number"]


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
            f"{layer.layer} ({layer.module})",
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
    title = report.model or "model"
    lines = [
        f"ACE report: {title}, input {shape}, cost table {report.cost_table} "
        f"({report.cost_unit}, float operands at {report.float_bits} bits)",
        rule,
        line(header),
        rule,
        *(line(row) for row in body),
        rule,
        line(total),
        rule,
        f"ACE v1 (PokeBNN, MACs only): {format_number(report.ace_v1)}",
        f"ACE v2 ({report.cost_unit}): {format_number(report.ace_v2)}  "
        f"= MAC {format_number(report.mac_cost)} + elementwise "
        f"{format_number(report.elementwise_cost)} "
        f"({100.0 * report.elementwise_share:.1f} % elementwise)",
    ]
    if report.op_totals:
        parts = ", ".join(f"{op} {format_number(v)}" for op, v in report.op_totals.items())
        lines.append(f"ACE v2 by op kind: {parts}")
    if report.elementwise_elements:
        parts = ", ".join(
            f"{kind} {format_number(count)}"
            for kind, count in sorted(report.elementwise_elements.items())
        )
        lines.append(f"Elementwise elements: {parts}")
    return "\n".join(lines)
