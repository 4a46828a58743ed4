"""The README.md model card of an export bundle."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from results.layers import bits_string, layer_bits
from space.arch import ArchConfig, ConvStemSpec, PikeBlockSpec, PokeBottleneckSpec

__all__ = ["model_card"]


def _cell(value: Any) -> str:
    """A markdown table cell: pipes and newlines cannot break the table."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _percent(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{100 * number:.2f}%"


def _count(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:,.0f}"


def _architecture_rows(arch: ArchConfig) -> list[str]:
    header = (
        "| part | kind | out channels | kernel | stride | weight bits (quantizer, granularity) "
        "| activation bits | norm | scale format | activation | residual |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [header]
    stem = arch.stem
    if isinstance(stem, ConvStemSpec):
        weights = f"{stem.conv.weight_bits} ({stem.conv.weight_quantizer}, "
        weights += f"{stem.conv.weight_granularity})"
        rows.append(
            f"| stem | conv | {stem.out_channels} | {stem.kernel_size} | {stem.stride} | "
            f"{weights} | {stem.activation_bits} | {stem.norm} | {stem.scale_format} | "
            f"{stem.activation} | no |"
        )
    else:
        rows.append(
            f"| stem | pokebnn | {stem.out_channels} | 4, 3 | 4, 1 | {stem.weight_bits} "
            f"(uniform) | {stem.activation_bits} | batchnorm | float32 | dprelu | no |"
        )
    for index, block in enumerate(arch.blocks):
        if isinstance(block, PikeBlockSpec):
            dw, pw = block.depthwise, block.pointwise
            weights = (
                f"dw {dw.weight_bits} ({dw.weight_quantizer}, {dw.weight_granularity}); "
                f"pw {pw.weight_bits} ({pw.weight_quantizer}, {pw.weight_granularity})"
            )
            rows.append(
                f"| b{index} | pikelpn | {block.out_channels} | {block.kernel_size} | "
                f"{block.stride} | {weights} | {block.activation_bits} | {block.norm} | "
                f"{block.scale_format} | {block.activation} | "
                f"{'yes' if block.residual else 'no'} |"
            )
        elif isinstance(block, PokeBottleneckSpec):
            rows.append(
                f"| b{index} | pokebnn bottleneck | {block.out_channels} | 1, 3, 1 | "
                f"{block.stride} | {block.weight_bits} (binary) | {block.activation_bits} | "
                f"batchnorm | float32 | dprelu | yes |"
            )
        else:
            rows.append(
                f"| b{index} | {_cell(block.kind)} | {block.out_channels} | | | | | | | | |"
            )
    head = arch.head.linear
    rows.append(
        f"| head | linear | {arch.num_classes} | - | - | {head.weight_bits} "
        f"({head.weight_quantizer}, {head.weight_granularity}) | {arch.head.input_bits} (input) "
        "| - | - | - | no |"
    )
    return rows


def _onnx_text(check: Any) -> str:
    if check.tie_sensitivity is None:
        return f"onnxruntime matched PyTorch within {check.max_difference:.2g} at export."
    return (
        f"onnxruntime differed from PyTorch by up to {check.max_difference:.2g} at export. "
        "This network is tie-sensitive: values that sit exactly on a sign / rounding threshold "
        "(typical of untrained weights, whose batch norms are still the identity) fall on "
        "either side with float32 rounding, so even PyTorch float32 and float64 differ by "
        f"{check.tie_sensitivity:.2g}; trained weights remove most such ties."
    )


def model_card(
    *,
    arch: ArchConfig,
    row: pd.Series,
    info: dict[str, str],
    cost: dict[str, Any],
    has_weights: bool,
    onnx_check: Any,
    folder_name: str,
) -> str:
    """The model card text (markdown) of one bundle."""
    number = int(row["number"])
    title = f"pikenas model {arch.archid}: trial {number} of study {_cell(info['study'])}"
    searched = row["arch"]
    refitted = isinstance(searched, str) and searched and ArchConfig.from_json(searched) != arch
    baseline = row["baseline"] if isinstance(row["baseline"], str) and row["baseline"] else ""
    if has_weights:
        weights_text = (
            "`weights.safetensors` holds the fully trained weights (from "
            f"`{_cell(row['final_dir'])}`); `model.onnx` contains them."
        )
    else:
        weights_text = (
            "**No trained weights**: this candidate was only proxy-trained during the search, "
            "not fully trained, so `weights.safetensors` is omitted and `model.onnx` holds the "
            "untrained initial weights. Train it fully with `pikenas train` "
            "(see `pikenas train --help`)."
        )
    layers = "\n".join(
        f"| {layer.layer} | {layer.weight_bits} | {layer.activation_bits} |"
        for layer in layer_bits(arch)
    )
    lines = [
        f"# {title}",
        "",
        f"Found by pikenas, an architecture search for low-precision CNNs scored by proxy "
        f"accuracy and ACE v2.{' Zoo baseline: ' + _cell(baseline) + '.' if baseline else ''}",
        "",
        "## Scores",
        "",
        "| proxy accuracy | final accuracy | ACE v2 | ACE v1 | MACs | parameters | "
        "elementwise share of ACE v2 |",
        "|---|---|---|---|---|---|---|",
        f"| {_percent(row['accuracy'])} | {_percent(row['final_accuracy'])} | "
        f"{_count(cost['ace_v2'])} | {_count(cost['ace_v1'])} | {_count(cost['macs'])} | "
        f"{_count(cost['params'])} | {_percent(cost['elementwise_share'])} |",
        "",
        f"ACE v2 (unit: {_cell(cost.get('cost_unit', 'bit-ops'))}, cost table "
        f"{_cell(cost.get('cost_table', ''))}) charges every inference operation by its operand "
        "widths; ACE v1 counts only MACs (weight bits x activation bits). The per-layer "
        "breakdown is in `cost.json`. Proxy accuracy: the search's short training; final "
        "accuracy: full training (`-` when not fully trained).",
        "",
        "## Architecture",
        "",
        f"Input `(N, {arch.input_channels}, {arch.resolution}, {arch.resolution})` float, "
        f"output `(N, {arch.num_classes})` logits. archid `{arch.archid}`"
        f"{', name ' + _cell(arch.name) if arch.name else ''}."
        + (
            " Full training fitted the input size / classes to its data set, so this differs "
            "from the searched architecture in that geometry only."
            if refitted
            else ""
        ),
        "",
        *_architecture_rows(arch),
        "",
        f"Per-layer bits (weight / input activation of each MAC layer): `{bits_string(arch)}`",
        "",
        "| layer | weight bits | activation bits |",
        "|---|---|---|",
        layers,
        "",
        "## How it was found",
        "",
        f"- study: `{_cell(info['study'])}`, trial {number} "
        f"(status {_cell(row['status'] if isinstance(row['status'], str) else '-')})",
        f"- sampler: {_cell(info['sampler'] or 'not recorded')}",
        f"- data set: {_cell(info['dataset'] or 'not recorded')}",
        f"- cost table: {_cell(info['cost_table'] or 'not recorded')}",
        f"- pikenas version: {_cell(info['pikenas_version'] or 'not recorded')}",
        "",
        "## Files",
        "",
        "- `arch.json`: the architecture (`ArchConfig`); `pikenas ace arch.json` costs it again.",
        f"- {weights_text}",
        "- `model.onnx`: the network in eval mode; input `input` "
        f"`(1, {arch.input_channels}, {arch.resolution}, {arch.resolution})` float32, output "
        f"`logits` `(1, {arch.num_classes})`; {_onnx_text(onnx_check)}",
        "- `cost.json`: the ACE v1 / ACE v2 report with the per-layer breakdown.",
        "",
        "## How to load",
        "",
        "```python",
        "from results.export import load_bundle",
        "",
        f'arch, model = load_bundle("{folder_name}")  # safetensors only, nothing unpickled',
        "logits = model(images)  # images: (N, C, H, W) float tensor, any N",
        "```",
        "",
        "```python",
        "import onnxruntime",
        "",
        f'session = onnxruntime.InferenceSession("{folder_name}/model.onnx")',
        'logits = session.run(["logits"], {"input": image})[0]  # image: (1, C, H, W) float32',
        "```",
        "",
    ]
    return "\n".join(lines)
