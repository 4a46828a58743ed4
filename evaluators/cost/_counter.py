"""The ACE counter: from a network's integer program to an :class:`AceReport`.

An ``ArchConfig`` is built on the meta device and lowered (:func:`space.lowering.lower`): the
program's operations, shapes and widths depend on the configuration only, so this runs before
any training, in milliseconds. Each operation costs its ACE primitives
(:func:`evaluators._primitives.primitives`: mac, mul, add, round, compare, shift with
operand widths); the
cost table prices them. Nothing else is counted and nothing the program runs is skipped: the
program is what the network runs at inference (and what ``pikenas verify`` executes).

ACE v1 (PokeBNN) = sum over mac primitives of ``bits_w * bits_x`` (independent of the cost
table). ACE v2 = the cost table's total over every primitive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pikenas.evaluators.cost._cost_table import CostTable
from pikenas.evaluators.cost._report import AceReport, BreakdownRow, LayerSummary
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import CostModelError
from pikenas.space.program.ir import OP_KINDS, IntegerProgram
from pikenas.space.program.pricing import primitives

__all__ = ["count_ace", "count_onnx", "program_of", "ROOT_LAYER"]

ROOT_LAYER = "(model)"


def program_of(target: ArchConfig | nn.Module | IntegerProgram) -> IntegerProgram:
    """The integer program to count: lowered from an ``ArchConfig`` on the meta device, from a
    built network (its weights untouched), or given."""
    from pikenas.space.program.builder import lower

    if isinstance(target, IntegerProgram):
        return target
    if isinstance(target, ArchConfig):
        from pikenas.space.nn.build import build_model

        with torch.device("meta"):
            model = build_model(target)
        return lower(model)
    if isinstance(target, nn.Module):
        return lower(target, with_constants=False)
    raise CostModelError(
        f"count_ace needs an ArchConfig, a built network or an IntegerProgram, not "
        f"{type(target).__name__}"
    )


def _layer_params(program: IntegerProgram) -> dict[str, int]:
    """Constants stored for inference, per layer (weights, multipliers, biases, shifts)."""
    owner: dict[str, str] = {}
    for operation in program.ops:
        for name in operation.inputs:
            if name in program.constants:
                owner.setdefault(name, operation.layer)
    params: dict[str, int] = {}
    for name, layer in owner.items():
        params[layer] = params.get(layer, 0) + program.constants[name].elements
    return params


def count_ace(
    target: ArchConfig | nn.Module | IntegerProgram,
    *,
    cost_table: CostTable | None = None,
) -> AceReport:
    """ACE v1, ACE v2, MACs, params and the per-layer breakdown of one forward pass (batch 1).

    ``target``: an :class:`ArchConfig`, a network built by ``space.build_model`` or its
    :class:`~space.program.IntegerProgram`. ``cost_table``: defaults to
    :meth:`CostTable.default` (DESIGN.md's table, fp32 floats).
    """
    table = cost_table if cost_table is not None else CostTable.default()
    program = program_of(target)
    # (layer, op, bits_a, bits_b, float) -> [count, ace_v1, kinds]
    rows: dict[tuple[str, str, int, int, bool], list[Any]] = {}
    layer_kinds: dict[str, list[str]] = {}
    counted_widths = table.counted_widths
    for operation in program.ops:
        layer = operation.layer
        kinds = layer_kinds.setdefault(layer, [])
        for kind, count, bits_a, bits_b, is_float in primitives(program, operation):
            if count == 0:
                continue
            if operation.kind and operation.kind not in kinds:
                kinds.append(operation.kind)
            charged_a, charged_b = counted_widths(bits_a, bits_b, is_float)
            key = (layer, kind, charged_a, charged_b, is_float)
            row = rows.setdefault(key, [0, 0, []])
            row[0] += count
            if kind == "mac":
                row[1] += count * bits_a * bits_b
            label = operation.kind or operation.op
            if label not in row[2]:
                row[2].append(label)
    params = _layer_params(program)
    layer_totals: dict[str, list[Any]] = {}  # layer -> [macs, ace_v1, mac cost, elementwise]
    op_totals: dict[str, Any] = {}
    breakdown: list[BreakdownRow] = []
    for (layer, kind, bits_a, bits_b, is_float), (count, v1, labels) in rows.items():
        cost = count * table.unit_cost(kind, bits_a, bits_b, is_float)
        module = "+".join(layer_kinds.get(layer, [])) or "-"
        breakdown.append(
            BreakdownRow(
                layer, module, kind, count, bits_a, bits_b, is_float, "+".join(labels), cost, v1
            )
        )
        op_totals[kind] = op_totals.get(kind, 0) + cost
        totals = layer_totals.setdefault(layer, [0, 0, 0, 0])
        if kind == "mac":
            totals[0] += count
            totals[1] += v1
            totals[2] += cost
        else:
            totals[3] += cost
    for layer in params:
        layer_totals.setdefault(layer, [0, 0, 0, 0])
    layers = tuple(
        LayerSummary(
            layer, "+".join(layer_kinds.get(layer, [])) or "-", params.get(layer, 0), *totals
        )
        for layer, totals in layer_totals.items()
    )
    elements: dict[str, int] = {}
    for _, kind, count in program.elements:
        elements[kind] = elements.get(kind, 0) + count
    ace_v2 = sum(row.cost for row in breakdown)
    mac_cost = sum(row.cost for row in breakdown if row.op == "mac")
    elementwise_cost = ace_v2 - mac_cost
    return AceReport(
        ace_v1=sum(layer.ace_v1 for layer in layers),
        ace_v2=ace_v2,
        macs=sum(layer.macs for layer in layers),
        params=sum(params.values()),
        mac_cost=mac_cost,
        elementwise_cost=elementwise_cost,
        elementwise_share=elementwise_cost / ace_v2 if ace_v2 else 0.0,
        elementwise_elements=elements,
        breakdown=tuple(breakdown),
        layers=layers,
        cost_table=table.name,
        cost_unit=table.unit,
        float_bits=table.float_bits,
        input_shape=(1, *program.input.shape),
        model=program.name,
        op_totals={kind: op_totals[kind] for kind in OP_KINDS if kind in op_totals},
    )


def count_onnx(source: str | Path | Any, *, cost_table: CostTable | None = None) -> AceReport:
    """The :class:`AceReport` of an ONNX / QONNX model file or ``onnx.ModelProto``: its graph
    imported as an integer program (:func:`pikenas.space.program.onnx.import_onnx`, which
    refuses a node it cannot price with one line), then counted as our own networks are."""
    from pikenas.space.program.onnx.importer import import_onnx

    return count_ace(import_onnx(source), cost_table=cost_table)
