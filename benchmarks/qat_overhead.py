"""Cost of quantization-aware training: one QAT step versus the same architecture in float.

Run: ``.venv/bin/python benchmarks/qat_overhead.py [--resolution 32] [--channels 3]
[--batch 128] [--steps 6] [--threads 1]``.

Builds a small depthwise-separable PikeLPN network (conv stem + 5 blocks, widths 32..128) four
ways: float (32-bit weights and activations, float BN), and QAT at 4-bit weights / 4-bit
activations with (a) float BN, (b) QuantNorm + pow2 Double Quantization, (c) QuantNorm + int8.
Each SGD step (forward, cross-entropy, backward, update) on a fixed channels_last batch is timed
in process CPU time (robust to other processes on a shared machine), the variants interleaved;
the minimum over ``--steps`` is printed with its ratio to float.
"""

from __future__ import annotations

import argparse
import time

import torch

from pikenas.space import ArchConfig, ConvQuantSpec, ConvStemSpec, PikeBlockSpec, build_model

WIDTHS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1))


def _arch(resolution: int, channels: int, norm: str | None, scale_format: str) -> ArchConfig:
    if norm is None:  # float
        conv = ConvQuantSpec(weight_bits=32, weight_quantizer="float")
        blocks = [
            PikeBlockSpec(
                out_channels=width,
                stride=stride,
                depthwise=conv,
                pointwise=conv,
                activation_bits=32,
            )
            for width, stride in WIDTHS
        ]
        stem = ConvStemSpec(out_channels=16, stride=1, input_bits=32, conv=conv, activation_bits=32)
    else:
        blocks = [
            PikeBlockSpec(
                out_channels=width,
                stride=stride,
                depthwise=ConvQuantSpec(weight_bits=4, weight_quantizer="pow2"),
                pointwise=ConvQuantSpec(weight_bits=4),
                activation_bits=4,
                norm=norm,
                scale_format=scale_format,
            )
            for width, stride in WIDTHS
        ]
        stem = ConvStemSpec(out_channels=16, stride=1, norm=norm, scale_format=scale_format)
    return ArchConfig(
        input_channels=channels, resolution=resolution, num_classes=10, stem=stem, blocks=blocks
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {
        "float": (None, "float32"),
        "w4a4 batchnorm": ("batchnorm", "float32"),
        "w4a4 quantnorm pow2": ("quantnorm", "pow2"),
        "w4a4 quantnorm int8": ("quantnorm", "int8"),
    }
    images = torch.randn(args.batch, args.channels, args.resolution, args.resolution)
    images = images.to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,))
    steps = {}
    for name, (norm, scale_format) in variants.items():
        model = build_model(_arch(args.resolution, args.channels, norm, scale_format))
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()

        step()  # warm-up
        steps[name] = step
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.process_time()
            step()
            seconds[name].append(time.process_time() - start)
    base = min(seconds["float"])
    print(
        f"batch {args.batch} x {args.channels}x{args.resolution}x{args.resolution}, "
        f"{args.threads} thread(s), process CPU time per SGD step (min of {args.steps})"
    )
    for name, values in seconds.items():
        print(f"  {name:22s} {min(values) * 1000:8.1f} ms   {min(values) / base:5.2f}x float")


if __name__ == "__main__":
    main()
