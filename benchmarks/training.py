"""Training and evaluation speed on Fashion-MNIST: pikenas QAT nets versus plain PyTorch float.

Run: ``.venv/bin/python benchmarks/training.py [--quick] [--threads 1,2] [--steps 40] [--compile]
[--device cpu|cuda] [--profile NAME]`` (``--quick``: about 1-2 minutes on 2 idle cores).

One geometry, the one the Fashion-MNIST issue measures: 28x28x1 input, a 3x3 stride-2 conv stem
to 32 channels, four depthwise-separable blocks 64 / 128 (stride 2) / 128 (residual) / 256
(stride 2), global average pool, linear classifier (about 67 k parameters, 2.5 M MACs an image).
Four networks of that geometry, timed side by side in one run:

* ``float-ref``: written below in plain PyTorch (nothing of pikenas): the reference;
* ``w8a8``: pikenas, 8-bit uniform weights and activations, float BN;
* ``pikelpn``: pikenas, PikeLPN-style (pow2 4-bit pointwise, QuantNorm pow2, 4-bit activations);
* ``binary``: pikenas, binary weights and 1-bit activations (W1A1), float BN + PReLU.

Per thread count it prints (all on real Fashion-MNIST images, read from the Debian package's
IDX files by a small local reader):

(a) training: AdamW steps on batches of 128 (forward, label-smoothed cross-entropy, backward,
    update), the networks interleaved step by step after a warm-up; median wall time a step,
    images/s and the ratio to ``float-ref`` (target <= 1.2x);
(b) evaluation of the test images: ``float-ref`` in eval mode versus the pikenas eval forward
    (the integer program run by torch, exact), interleaved batch by batch (target <= 2x);
(c) one Fashion-MNIST epoch (60,000 training images plus a 10,000-image validation pass),
    estimated from (a) and (b), for the median candidate (``pikelpn``: the middle of the three
    by cost) against ``float-ref`` (target <= 1.3x).

The machine may be shared: every figure is a ratio to the reference timed in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from pikenas.space.nn._compiled import compiled_quantizers
from pikenas.space.nn.build import build_model
from pikenas.space.zoo._parts import separable_arch
from pikenas.space.zoo.mobilenet import MOBILENET_PRECISIONS, PIKELPN_PRECISION
from pikenas.space.zoo.tiny import TINY_BINARY_PRECISION

DATA = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530
STEM = 32
LAYOUT = ((64, 1, False), (128, 2, False), (128, 1, True), (256, 2, False))
PRECISIONS = {
    "w8a8": MOBILENET_PRECISIONS["w8a8"][0],
    "pikelpn": PIKELPN_PRECISION,
    "binary": TINY_BINARY_PRECISION,
}
MEDIAN_CANDIDATE = "pikelpn"
REFERENCE = "float-ref"
TRAIN_TARGET, EVAL_TARGET, EPOCH_TARGET = 1.2, 2.0, 1.3
BATCH = 128
TRAIN_IMAGES, VAL_IMAGES = 60_000, 10_000
COMPILED = "+compile"  # the same net trained with compiled quantizers (``--compile``)


# ---- data: a small IDX reader (numpy + gzip) ---------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as a numpy array: ``(N, 28, 28)`` uint8 images or ``(N,)`` labels."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, 28, 28) float32 normalised, labels (N,) int64)``, the first ``count``."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(DATA / f"{prefix}-images-idx3-ubyte.gz")[:count]
    labels = read_idx(DATA / f"{prefix}-labels-idx1-ubyte.gz")[:count]
    x = torch.from_numpy(images.copy()).float().div_(255).sub_(MEAN).div_(STD).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# ---- the plain-PyTorch float reference ---------------------------------------------------------
def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, groups: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SeparableBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.depthwise = _conv_bn_relu(c_in, c_in, 3, stride, c_in)
        self.pointwise = _conv_bn_relu(c_in, c_out, 1, 1, 1)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return y + x if self.residual else y


class FloatReference(nn.Module):
    """Stem 3x3/2 -> separable blocks (:data:`LAYOUT`) -> global average pool -> linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(1, STEM, 3, 2, 1)]
        channels = STEM
        for c_out, stride, residual in LAYOUT:
            layers.append(SeparableBlock(channels, c_out, stride, residual))
            channels = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def build(name: str, device: torch.device, channels_last: bool = False) -> nn.Module:
    torch.manual_seed(0)
    name = name.removesuffix(COMPILED)
    if name == REFERENCE:
        model: nn.Module = FloatReference()
    else:
        arch = separable_arch(
            name=name,
            precision=PRECISIONS[name],
            stem_channels=STEM,
            stem_stride=2,
            layout=LAYOUT,
            resolution=28,
            input_channels=1,
            num_classes=10,
        )
        model = build_model(arch)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format)


# ---- timing ------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_step(
    model: nn.Module, device: torch.device, compiled: bool = False
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with compiled_quantizers(compiled):  # pikenas's switch; no-op for the reference
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()

    return step


def time_training(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """Seconds of each timed step per model, interleaved step by step after 3 warm-up steps
    (``"first"``: the first step of each, where a compiled model compiles)."""
    functions = {
        name: _train_step(model, device, compiled=name.endswith(COMPILED))
        for name, model in models.items()
    }
    batches = [
        (images[i : i + BATCH].to(device), labels[i : i + BATCH].to(device))
        for i in range(0, len(images) - BATCH + 1, BATCH)
    ]
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    first: dict[str, float] = {}
    for index in range(steps + 3):
        batch = batches[index % len(batches)]
        for name, step in functions.items():
            _sync(device)
            start = time.perf_counter()
            step(*batch)
            _sync(device)
            if index == 0:
                first[name] = time.perf_counter() - start
            if index >= 3:
                seconds[name].append(time.perf_counter() - start)
    return seconds, first


def _median_ratios(seconds: dict[str, list[float]]) -> dict[str, float]:
    """Per model, the median over rounds of its time / the reference's time in that round
    (interleaved rounds see the same load, so the ratio is steadier than either time)."""
    reference = seconds[REFERENCE]
    return {
        name: statistics.median(a / b for a, b in zip(values, reference, strict=True))
        for name, values in seconds.items()
    }


@torch.no_grad()
def time_eval(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, float]]:
    """``(seconds, accuracy)`` of an eval pass over ``images`` per model, interleaved batch by
    batch (each model's first batch, which lowers and caches the program, is timed apart and
    not counted)."""
    for model in models.values():
        model.eval()
        model(images[:batch].to(device))  # warm-up: lowering, program constants on the device
    seconds = dict.fromkeys(models, 0.0)
    correct = dict.fromkeys(models, 0)
    for start in range(0, len(images), batch):
        x, y = images[start : start + batch].to(device), labels[start : start + batch].to(device)
        for name, model in models.items():
            _sync(device)
            begin = time.perf_counter()
            logits = model(x)
            _sync(device)
            seconds[name] += time.perf_counter() - begin
            correct[name] += int((logits.argmax(1) == y).sum())
    return seconds, {name: count / len(images) for name, count in correct.items()}


def _verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def run(threads: int, args: argparse.Namespace, device: torch.device) -> None:
    torch.set_num_threads(threads)
    names = [REFERENCE, *PRECISIONS]
    if args.compile:
        names += [name + COMPILED for name in PRECISIONS]
    models = {name: build(name, device, args.channels_last) for name in names}
    train_x, train_y = load("train", args.train_images)
    test_x, test_y = load("test", args.eval_images)
    train_x, test_x = _layout(train_x, args.channels_last), _layout(test_x, args.channels_last)
    layout = "channels_last" if args.channels_last else "contiguous"
    print(f"== {threads} thread(s), device {device}, {layout} (every network)")
    times, first = time_training(models, train_x, train_y, args.steps, device)
    step_s = {name: statistics.median(values) for name, values in times.items()}
    ratios = _median_ratios(times)
    print(
        f"(a) training, AdamW, batch {BATCH}, median of {args.steps} interleaved steps "
        "(ratio: median of the per-round ratios)"
    )
    for name in names:
        ratio = ratios[name]
        target = "" if name == REFERENCE else f"  target <= {TRAIN_TARGET}x: "
        target += "" if name == REFERENCE else _verdict(ratio, TRAIN_TARGET)
        print(
            f"  {name:10s} {1000 * step_s[name]:7.1f} ms/step {BATCH / step_s[name]:8.0f} img/s"
            f"  QAT/float {ratio:5.2f}x{target}"
        )
    for name in names:
        if name.endswith(COMPILED):
            eager = name.removesuffix(COMPILED)
            cost = first[name] - first[eager]
            saved = step_s[eager] - step_s[name]
            even = f"{cost / saved:,.0f} steps" if saved > 0 else "never"
            print(
                f"  {name:10s} compiling cost {cost:.1f} s in its first step, saves "
                f"{1000 * saved:.1f} ms a step: break-even after {even}"
            )
    models = {name: model for name, model in models.items() if not name.endswith(COMPILED)}
    names = [name for name in names if not name.endswith(COMPILED)]
    eval_s, accuracy = time_eval(models, test_x, test_y, args.eval_batch, device)
    print(
        f"(b) eval of {len(test_x)} test images, batch {args.eval_batch} "
        "(pikenas: the integer program; untrained nets, accuracy only a sanity check)"
    )
    for name in names:
        ratio = eval_s[name] / eval_s[REFERENCE]
        target = "" if name == REFERENCE else f"  target <= {EVAL_TARGET}x: "
        target += "" if name == REFERENCE else _verdict(ratio, EVAL_TARGET)
        print(
            f"  {name:10s} {eval_s[name]:7.2f} s {len(test_x) / eval_s[name]:8.0f} img/s"
            f"  int-eval/float-eval {ratio:5.2f}x{target}"
        )
    epoch = {
        name: TRAIN_IMAGES / (BATCH / step_s[name]) + VAL_IMAGES * eval_s[name] / len(test_x)
        for name in names
    }
    ratio = epoch[MEDIAN_CANDIDATE] / epoch[REFERENCE]
    print(
        f"(c) one epoch (60,000 training + 10,000 validation images), estimated: "
        f"{REFERENCE} {epoch[REFERENCE]:.0f} s, {MEDIAN_CANDIDATE} {epoch[MEDIAN_CANDIDATE]:.0f} s"
        f" ({ratio:.2f}x, target <= {EPOCH_TARGET}x: {_verdict(ratio, EPOCH_TARGET)}); "
        + ", ".join(f"{n} {epoch[n] / epoch[REFERENCE]:.2f}x" for n in PRECISIONS)
    )
    if args.compile:
        compiled = {
            n: TRAIN_IMAGES / (BATCH / step_s[n + COMPILED]) + VAL_IMAGES * eval_s[n] / len(test_x)
            for n in PRECISIONS
        }
        print(
            "    with compiled quantizers (compiling not counted): "
            + ", ".join(f"{n} {compiled[n] / epoch[REFERENCE]:.2f}x" for n in PRECISIONS)
        )


def profile(name: str, threads: int, device: torch.device, steps: int, channels_last: bool) -> None:
    """torch.profiler table of ``steps`` training steps of one network (then of its eval)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(threads)
    model = build(name, device, channels_last)
    x, y = load("train", BATCH * 4)
    x = _layout(x, channels_last)
    step = _train_step(model, device)
    for _ in range(3):
        step(x[:BATCH].to(device), y[:BATCH].to(device))
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for index in range(steps):
            start = (index % 4) * BATCH
            step(x[start : start + BATCH].to(device), y[start : start + BATCH].to(device))
    print(f"training profile of {name}, {steps} steps, {threads} thread(s)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    model.eval()
    with torch.no_grad():
        model(x[:256].to(device))
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x[:512].to(device))
    print(f"eval profile of {name}, 512 images")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and eval images")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per net")
    parser.add_argument("--eval-images", type=int, default=10_000)
    parser.add_argument("--eval-batch", type=int, default=128, help="as pikenas train")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--profile", default=None, help="profile one net instead: a name")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also each pikenas net with compiled quantizers (TrainConfig compile: on)",
    )
    parser.add_argument(
        "--contiguous",
        dest="channels_last",
        action="store_false",
        help="NCHW tensors (default: channels_last, as pikenas train uses at 28x28)",
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_images = min(args.steps, 12), min(args.eval_images, 2_000)
    args.train_images = BATCH * max(8, min(args.steps + 3, 64))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, {torch.get_num_threads()} threads available")
    threads = [int(t) for t in args.threads.split(",")]
    if args.profile:
        profile(args.profile, threads[0], device, args.steps, args.channels_last)
        return
    for count in threads:
        run(count, args, device)


if __name__ == "__main__":
    main()
