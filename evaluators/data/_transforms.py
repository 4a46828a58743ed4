"""Image transforms written with torch alone (there is no CPU build of torchvision here).

All functions take and return batched tensors ``(N, C, H, W)``; random ones draw from an
explicit :class:`torch.Generator` (on the CPU) so that a run is reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize", "to_float", "random_crop", "random_horizontal_flip", "normalize"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` pixels ``[0, 255]`` -> ``float32`` ``[0, 1]``; float images pass through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``(N, C, resolution, resolution)`` with bilinear interpolation
    (anti-aliased when shrinking). ``uint8`` input gives rounded ``uint8`` output."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    shrinking = resolution < max(images.shape[-2:])
    resized_chunks = []
    # Chunks keep the float copy small for CIFAR-sized sets (50k images).
    for chunk in images.split(4096):
        resized = F.interpolate(
            chunk.float(),
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=shrinking,
        )
        if images.dtype == torch.uint8:
            resized = resized.round_().clamp_(0, 255).to(torch.uint8)
        resized_chunks.append(resized)
    return torch.cat(resized_chunks)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels on every side, then crop each image back to its size at
    an offset drawn uniformly from ``[0, 2 * padding]`` (per image, per axis)."""
    if padding <= 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator)
    offsets = offsets.to(images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)  # (N, W)
    batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel_index = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]


def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    flip = flip.to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """``(images - mean) / std`` per channel; ``images`` are floats in the ``[0, 1]`` scale."""
    mean_tensor = torch.tensor(mean, dtype=images.dtype, device=images.device)
    std_tensor = torch.tensor(std, dtype=images.dtype, device=images.device)
    return (images - mean_tensor[:, None, None]) / std_tensor[:, None, None]
