"""The README.md model card of an export bundle."""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

from pikenas.results.layers import bits_string, layer_bits
from pikenas.results.record import FinalResult, TrialRecord
from pikenas.space._text import code_span, inline, markdown
from pikenas.space.arch import ArchConfig, ConvStemSpec, PikeBlockSpec, PokeBottleneckSpec

__all__ = ["model_card"]


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
                f"| b{index} | {markdown(block.kind)} | {block.out_channels} | | | | | | | | |"
            )
    head = arch.head.linear
    rows.append(
        f"| head | linear | {arch.num_classes} | - | - | {head.weight_bits} "
        f"({head.weight_quantizer}, {head.weight_granularity}) | {arch.head.input_bits} (input) "
        "| - | - | - | no |"
    )
    return rows


def _verification_text(verified: Any, check: Any, raw_pixels: bool) -> list[str]:
    """What was verified at export, on how many images, with what result."""
    inputs = "uniform raw pixels 0..255" if raw_pixels else "normal"
    widest = max((seen for seen, _ in verified.widest.values()), default=0)
    if check is None:
        onnx = "(not written: the export's --format left it out)"
    else:
        onnx = (
            "bit for bit (integer codes and logits)"
            if check.exact
            else f"within {check.max_difference:.2g} on the logits (float convs sum differently)"
        )
    return [
        f"Verified at export on {verified.images} random inputs ({inputs}, seed 0):",
        "",
        f"- the PyTorch eval forward equals the numpy runner of the integer program "
        f"({verified.compared_elements:,} values of {verified.values} intermediates compared, "
        f"{verified.mismatches} differ; {verified.stages} requantization points);",
        f"- every integer intermediate stayed inside its declared width (widest seen: {widest} "
        "bits);",
        f"- every operation after a float conv, re-run on the same inputs, gave the same result "
        f"(float convs within {verified.max_float_error_ratio:.2g} of their float32 rounding "
        "bound);",
        f"- the training (fake-quantization) forward, which never sees the lowering, gives the "
        f"same codes at every requantization stage ({verified.surrogate_elements:,} codes, "
        f"{verified.surrogate_mismatches} differ, all at rounding ties);",
        f"- onnxruntime runs `model.onnx` to the program's result {onnx}.",
        "",
        "Check it again on real data: `pikenas verify <this folder> --dataset NAME --images N`.",
    ]


def _hls4ml_text(check: Any) -> list[str]:
    if check is None:
        return []
    if check.refusals:
        return [f"- hls4ml: not converted ({check.refusals[0]}); `hls4ml/check.json` says so."]
    if not check.compiled:
        return ["- hls4ml: the project was not compiled here (install hls4ml and g++)."]
    notes = "".join(f" Note: {note}." for note in check.notes)
    return [
        f"- hls4ml (`hls4ml/project`, C simulation with g++): {check.summary}; the float ends "
        "(pixels to input codes, accumulator to logits) are the program's own operations."
        + notes
    ]


def _qonnx_text(check: Any) -> list[str]:
    if check is None:
        return []
    if not check.executed:
        ran = "was not executed here (install the `qonnx` package: the `dev` extra)"
    else:
        result = "exactly" if check.exact else f"within {check.max_difference:.3g}"
        ran = (
            f"was cleaned up and executed by qonnx (`execute_onnx`) on {check.images} images: "
            f"its logits equal the program's {result}"
        )
    return [
        f"- `model.qonnx.onnx` {ran}; `pikenas ace` of it equals the program's ACE v2 "
        "(every breakdown row).",
    ]


def _input_contract(arch: ArchConfig) -> list[str]:
    """What the bundle's program, ``model.onnx``, ``model.qonnx.onnx`` and ``run_program.py``
    take, as markdown lines."""
    shape = f"(N, {arch.input_channels}, {arch.resolution}, {arch.resolution})"
    if arch.input is None:
        return [
            f"`{shape}` **normalized** floats: this architecture predates raw-pixel inputs and "
            "records no normalization; feed `(pixels / 255 - mean) / std` with the training "
            "set's per-channel statistics."
        ]
    order = "one grey channel" if arch.input_channels == 1 else (
        "channels in the data set's order (R, G, B for colour images)"
        if arch.input_channels == 3 else "channels in the data set's order"
    )
    mean = ", ".join(f"{value:.6f}" for value in arch.input.mean)
    std = ", ".join(f"{value:.6f}" for value in arch.input.std)
    return [
        f"**Raw pixels**, what a camera gives: `{shape}` values `0..255` (`model.onnx` takes "
        f"them as uint8; `model.qonnx.onnx` as float32 declared UINT8, FINN's convention; "
        f"`run_program.py` and `load_bundle` as any numeric array), {order}, rows top to "
        f"bottom, no resizing beyond "
        f"{arch.resolution}x{arch.resolution}. Do not normalize: the per-channel normalization "
        f"`(pixel / 255 - mean) / std` with mean `({mean})` and std `({std})` (the training "
        "split's statistics, recorded in `arch.json` under `input`) is folded into the input "
        "quantizer, where the program runs it as one multiply and one add per pixel, charged "
        "by ACE v2 like every other operation.",
    ]


def model_card(
    *,
    arch: ArchConfig,
    number: int,
    record: TrialRecord,
    accuracy: float | None,
    final: FinalResult | None,
    info: dict[str, str],
    cost: dict[str, Any],
    has_weights: bool,
    onnx_check: Any,
    verified: Any,
    folder_name: str,
    qonnx_check: Any = None,
) -> str:
    """The model card text (markdown) of one bundle: of trial ``number`` (``-1``: a
    ``pikenas train`` folder) with its ``record``, proxy ``accuracy`` and full training
    ``final``. Every string a user or a study chose (names, paths, cost-table name and unit) is
    escaped by :mod:`space._text` (:func:`markdown`, :func:`code_span`): no HTML, no Markdown,
    no control byte, no line break of theirs."""
    folder = inline(folder_name)
    shell = shlex.quote(folder)
    literal, onnx_literal = json.dumps(folder), json.dumps(f"{folder}/model.onnx")
    title = f"pikenas model {arch.archid}: trial {number} of study {markdown(info['study'])}"
    if number < 0:  # not from a study: a 'pikenas train' folder
        title = f"pikenas model {arch.archid}: {markdown(info['study'])}"
    searched = record.arch
    refitted = bool(searched) and ArchConfig.from_json(searched) != arch
    baseline = record.baseline or ""
    status = record.status or ("trained" if number < 0 else "-")
    final_dir = final.final_dir if final is not None else None
    final_accuracy = final.final_accuracy if final is not None else None
    if has_weights:
        weights_text = (
            "`weights.safetensors` holds the fully trained weights (from "
            f"{code_span(final_dir)}); the program and `model.onnx` are built from them."
        )
    else:
        weights_text = (
            "**No trained weights**: this candidate was only proxy-trained during the search, "
            "not fully trained, so `weights.safetensors` is omitted and the program and "
            "`model.onnx` hold the untrained initial weights. Train it fully with `pikenas train` "
            "(see `pikenas train --help`)."
        )
    layers = "\n".join(
        f"| {layer.layer} | {layer.weight_bits} | {layer.activation_bits} |"
        for layer in layer_bits(arch)
    )
    shape = f"(N, {arch.input_channels}, {arch.resolution}, {arch.resolution})"
    contract = _input_contract(arch)
    lines = [
        f"# {title}",
        "",
        f"Found by pikenas, an architecture search for low-precision CNNs scored by proxy "
        f"accuracy and ACE v2.{' Zoo baseline: ' + markdown(baseline) + '.' if baseline else ''}",
        "",
        "## Scores",
        "",
        "| proxy accuracy | final accuracy | ACE v2 | ACE v1 | MACs | parameters | "
        "elementwise share of ACE v2 |",
        "|---|---|---|---|---|---|---|",
        f"| {_percent(accuracy)} | {_percent(final_accuracy)} | "
        f"{_count(cost['ace_v2'])} | {_count(cost['ace_v1'])} | {_count(cost['macs'])} | "
        f"{_count(cost['params'])} | {_percent(cost['elementwise_share'])} |",
        "",
        f"ACE v2 (unit: {markdown(cost.get('cost_unit', 'bit-ops'))}, cost table "
        f"{markdown(cost.get('cost_table', ''))}) charges every inference operation by its operand "
        "widths; ACE v1 counts only MACs (weight bits x activation bits). The per-layer "
        "breakdown is in `cost.json`. Proxy accuracy: the search's short training; final "
        "accuracy: full training (`-` when not fully trained).",
        "",
        "## Input contract",
        "",
        *contract,
        "",
        "## Architecture",
        "",
        f"Input `{shape}` (see the input contract), "
        f"output `(N, {arch.num_classes})` logits. archid `{arch.archid}`"
        f"{', name ' + markdown(arch.name) if arch.name else ''}."
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
        f"- study: {code_span(info['study'])}, trial {number} "
        f"(status {markdown(status)})",
        f"- sampler: {markdown(info['sampler'] or 'not recorded')}",
        f"- data set: {markdown(info['dataset'] or 'not recorded')}",
        f"- cost table: {markdown(info['cost_table'] or 'not recorded')}",
        f"- pikenas version: {markdown(info['pikenas_version'] or 'not recorded')}",
        "",
        "## Files",
        "",
        "- `arch.json`: the architecture (`ArchConfig`); `pikenas ace arch.json` costs it again.",
        f"- {weights_text}",
        "- `program.json`, `program.safetensors`: the integer program, the exact arithmetic "
        "inference runs (what ACE v2 counts); `run_program.py` runs it with numpy alone: "
        f"{code_span(f'python {shell}/run_program.py {shell} --input images.npy')}.",
        "- `model.onnx`: the program as an ONNX graph; input `input` "
        f"`{shape}` float32 holding the input contract's values, output "
        f"`logits` `(N, {arch.num_classes})`.",
        *(
            [
                "- `model.qonnx.onnx`: the program as QONNX (Quant / BipolarQuant nodes of scale 1 "
                "on integer codes), for FINN, hls4ml and `qonnx`; `pikenas ace model.qonnx.onnx` "
                "costs it to the same ACE v2."
            ]
            if qonnx_check is not None
            else []
        ),
        "- `cost.json`: the ACE v1 / ACE v2 report (counted from the program) with the "
        "per-layer breakdown.",
        "",
        "## Verification",
        "",
        *_verification_text(verified, onnx_check, arch.input is not None),
        *_qonnx_text(qonnx_check),
        *_hls4ml_text(getattr(verified, "hls4ml", None)),
        "",
        "## How to load",
        "",
        "```python",
        "from pikenas.results.export import load_bundle",
        "",
        f"arch, model = load_bundle({literal})  # safetensors only, nothing unpickled",
        f"logits = model(images)  # images: {shape} float tensor of the input contract",
        "```",
        "",
        "```python",
        "import onnxruntime",
        "",
        f"session = onnxruntime.InferenceSession({onnx_literal})",
        'logits = session.run(["logits"], {"input": images.astype('
        + ('"uint8"' if arch.input is not None else '"float32"')
        + ")})[0]",
        "```",
        "",
    ]
    return "\n".join(lines)
