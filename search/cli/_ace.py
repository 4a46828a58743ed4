"""`pikenas ace`: the ACE v1 / ACE v2 report of a zoo model or an ArchConfig JSON file."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pikenas.search.cli._app import app, echo, fail
from pikenas.search.cli._common import resolve_arch


@app.command()
def ace(
    name_or_arch_json: Annotated[
        str,
        typer.Argument(
            metavar="NAME_OR_ARCH_JSON_OR_ONNX",
            help="A zoo name (see 'pikenas zoo'), an ArchConfig JSON file, or an ONNX / QONNX "
            "model file (.onnx: Brevitas exports, our bundles' model.qonnx.onnx).",
            show_default=False,
        ),
    ],
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", min=1, help="Input size in pixels (default: the model's)."),
    ] = None,
    cost_table: Annotated[
        str | None,
        typer.Option(
            "--cost-table",
            help="What ACE v2 charges: ace_v2 or a cost table file (YAML or JSON, "
            "see configs/cost_tables/); default: DESIGN.md's (the names 'search' takes).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Count ACE v1 and ACE v2 of one network on one 1 x C x R x R input, before any training.

    An .onnx file (QONNX or plain ONNX) is costed node by node with the same rules and report;
    a node it cannot price stops the count with one line naming it (exit 2).

    Prints a per-layer table (MACs, ACE v1, ACE v2 of MACs and of elementwise operations) and
    the totals; --json prints a JSON object with ace_v1, ace_v2, macs, params,
    elementwise_share, elementwise_elements and the per-layer breakdown.
    """
    from pikenas.evaluators.cost import CostTable, count_ace, count_onnx
    from pikenas.search.config import resolve_cost_table
    from pikenas.space.errors import PikeNASError

    onnx_file = name_or_arch_json.lower().endswith(".onnx")
    if onnx_file and resolution is not None:
        raise fail("--resolution does not apply to an .onnx model (its input shape is fixed)")
    try:
        table = CostTable.default()
        if cost_table is not None:
            try:  # the one name table of 'search' and its configs
                table = CostTable.from_dict(resolve_cost_table(cost_table))
            except ValueError as exc:
                raise fail(f"--cost-table: {exc}") from None
        if onnx_file:
            arch = None
            report = count_onnx(name_or_arch_json, cost_table=table)
        else:
            arch = resolve_arch(name_or_arch_json, resolution)
            report = count_ace(arch, cost_table=table)
    except PikeNASError as exc:
        raise fail(str(exc)) from None
    if as_json:
        if arch is None:
            data = {"name": name_or_arch_json, "archid": None, **report.to_dict()}
        else:
            data = {"name": arch.name or name_or_arch_json, "archid": arch.archid}
            data.update(report.to_dict())
        echo(json.dumps(data, indent=2))
    else:
        echo(report.to_table())
