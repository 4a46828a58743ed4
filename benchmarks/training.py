"""Training benchmarks: digits accuracy and time, QAT step cost versus float, throughput.

Run: ``.venv/bin/python benchmarks/training.py [--threads 2] [--only digits,step,throughput,cuda]``
(about 2-3 minutes on 2 idle CPU cores). Prints:

(a) digits: ``tiny-w8a8`` and ``tiny-binary`` trained exactly as ``pikenas train NAME --dataset
    digits --epochs E --seed 0`` does (checkpoints included), test accuracy and wall / CPU time;
    targets >= 97 % and >= 90 % in <= 60 s each.
(b) one training step (forward, loss, backward, AdamW update, as the loop does it) of a QAT
    model versus the same architecture in float, measured side by side (interleaved, minimum
    of N, process CPU time so that other processes on a shared machine distort it less):
    ``tiny-w8a8`` / ``tiny-float`` on 8x8x1 digits batches and ``mobilenet_v1-0.25-w4a4`` /
    ``-float`` at 32x32x3; target <= 1.3x.
(c) training images per second of the real loop (batching, CIFAR augmentation, evaluation
    excluded) on 32x32x3 images, batch 128.
(d) the same on CUDA (bf16 autocast, batch 256) when a GPU is present.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pikenas.evaluators.data.datasets import Augmentation, DatasetSplits, Split
from pikenas.evaluators.training.loop import (
    TrainConfig,
    _make_optimizer,
    _use_channels_last,
    evaluate,
    train,
)
from pikenas.space.nn.build import build_model
from pikenas.space.zoo.catalog import get_zoo_arch

# (zoo name, epochs, target test accuracy): trained with TrainConfig's defaults otherwise.
DIGITS_RUNS = (("tiny-w8a8", 30, 0.97), ("tiny-binary", 30, 0.90))
DIGITS_SECONDS = 60.0
STEP_PAIRS = (
    ("tiny-w8a8", "tiny-float", 8, 1),
    ("mobilenet_v1-0.25-w4a4", "mobilenet_v1-0.25-float", 32, 3),
)
STEP_TARGET = 1.3
THROUGHPUT_MODELS = ("tiny-w8a8", "mobilenet_v1-0.25-w4a4")


def digits(threads: int) -> None:
    print(f"(a) digits, pikenas train defaults, seed 0, {threads} thread(s)")
    for name, epochs, target in DIGITS_RUNS:
        config = TrainConfig(dataset="digits", epochs=epochs, seed=0, threads=threads)
        with tempfile.TemporaryDirectory() as out:
            wall, cpu = time.perf_counter(), time.process_time()
            result = train(get_zoo_arch(name), config, Path(out) / "run")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        verdict = "ok" if result.test_accuracy >= target and wall <= DIGITS_SECONDS else "MISSED"
        print(
            f"  {name:12s} {epochs} epochs: test {100 * result.test_accuracy:5.2f} % "
            f"(val {100 * result.val_accuracy:5.2f} %), wall {wall:5.1f} s, CPU {cpu:5.1f} s, "
            f"{result.images_per_s:6.0f} img/s   target >= {100 * target:.0f} % in "
            f"<= {DIGITS_SECONDS:.0f} s: {verdict}"
        )


def _step_function(name: str, resolution: int, channels: int, batch: int):
    arch = get_zoo_arch(name, resolution=resolution, input_channels=channels, num_classes=10)
    device = torch.device("cpu")
    memory_format = (
        torch.channels_last if _use_channels_last(device, resolution) else torch.contiguous_format
    )
    model = build_model(arch).to(memory_format=memory_format).train()
    optimizer = _make_optimizer(model, TrainConfig())
    images = torch.randn(batch, channels, resolution, resolution)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: first-call allocations and kernel selection
    return step


def step_cost(threads: int, steps: int, batch: int = 128) -> None:
    print(
        f"(b) one training step, QAT vs float, batch {batch}, {threads} thread(s), min of {steps}"
    )
    for quantized, floating, resolution, channels in STEP_PAIRS:
        functions = {
            name: _step_function(name, resolution, channels, batch)
            for name in (quantized, floating)
        }
        cpu: dict[str, list[float]] = {name: [] for name in functions}
        wall: dict[str, list[float]] = {name: [] for name in functions}
        for _ in range(steps):
            for name, step in functions.items():
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                step()
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start_wall)
        ratio = min(cpu[quantized]) / min(cpu[floating])
        verdict = "ok" if ratio <= STEP_TARGET else "MISSED"
        geometry = f"{resolution}x{resolution}x{channels}"
        for name in functions:
            print(
                f"  {name:24s} {geometry:8s} CPU {1000 * min(cpu[name]):7.1f} ms   "
                f"wall {1000 * min(wall[name]):7.1f} ms"
            )
        print(
            f"  ratio {quantized} / {floating}: {ratio:.2f}x (target <= {STEP_TARGET}x: {verdict})"
        )


def _cifar_like(count: int, resolution: int = 32) -> DatasetSplits:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (count, 3, resolution, resolution), dtype=torch.uint8, generator=generator
    )
    labels = torch.randint(0, 10, (count,), generator=generator)
    small = Split(images[:256], labels[:256])
    return DatasetSplits(
        name="cifar-like",
        train=Split(images, labels),
        val=small,
        test=small,
        num_classes=10,
        mean=(0.5, 0.5, 0.5),
        std=(0.29, 0.29, 0.29),
        augmentation=Augmentation(crop_padding=4, horizontal_flip=True),
    )


def throughput(threads: int, device: str, batch: int, images: int, epochs: int) -> None:
    splits = _cifar_like(images)
    for name in THROUGHPUT_MODELS:
        config = TrainConfig(
            dataset="synthetic", epochs=epochs, batch_size=batch, threads=threads, device=device
        )
        result = evaluate(get_zoo_arch(name), config, splits=splits)
        print(
            f"  {name:24s} 32x32x3 batch {batch}: {result.images_per_s:8.0f} training images/s "
            f"({device}, {threads} thread(s), {epochs} epochs of {images} images)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--only", default="digits,step,throughput,cuda")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads available")
    if "digits" in parts:
        digits(args.threads)
    if "step" in parts:
        step_cost(args.threads, args.steps)
    if "throughput" in parts:
        print("(c) throughput of the training loop on CPU")
        throughput(args.threads, "cpu", batch=128, images=2048, epochs=2)
    if "cuda" in parts:
        if torch.cuda.is_available():
            print(f"(d) throughput on CUDA ({torch.cuda.get_device_name()}), bf16 autocast")
            throughput(args.threads, "cuda", batch=256, images=50_000, epochs=2)
        else:
            print("(d) CUDA: not available on this machine, skipped")


if __name__ == "__main__":
    main()
