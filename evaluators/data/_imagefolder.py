"""ImageNet-style image folders: one sub-folder per class, read with Pillow into memory.

Layouts: ``DIR/train/CLASS/*.png`` with optional ``DIR/val/`` and ``DIR/test/`` beside it, or
simply ``DIR/CLASS/*.png``. A missing validation or test part is carved out of the training
images (a fixed, stratified 15 % each). Images are centre-cropped to a square, resized to the
requested resolution (``torch.nn.functional.interpolate``, anti-aliased) and kept as ``uint8``;
they have 1 channel when every image is greyscale, else 3 (RGB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pikenas.evaluators.data._splits import Augmentation, DatasetSplits, Split, channel_stats, stratified_split
from pikenas.evaluators.data._transforms import resize
from pikenas.space.errors import DataError

__all__ = ["load_imagefolder", "DEFAULT_IMAGEFOLDER_RESOLUTION", "IMAGE_SUFFIXES"]

DEFAULT_IMAGEFOLDER_RESOLUTION = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_HELD_OUT_FRACTION = 0.15


def _list_images(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_name in enumerate(classes):
        folder = root / class_name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, labels


def _read_images(paths: list[Path], resolution: int) -> torch.Tensor:
    """``(N, C, resolution, resolution)`` uint8 pixels of the images at ``paths``."""
    from PIL import Image, UnidentifiedImageError

    pictures = []
    for path in paths:
        try:
            with Image.open(path) as picture:
                picture.load()
                pictures.append(picture.copy())
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path} ({exc}); remove or replace it") from None
    grey = all(picture.mode in _GREY_MODES for picture in pictures)
    tensors = []
    for picture in pictures:
        array = np.asarray(picture.convert("L" if grey else "RGB"), dtype=np.uint8)
        array = array[:, :, None] if array.ndim == 2 else array
        height, width = array.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = array[top : top + side, left : left + side].copy()
        tensor = torch.from_numpy(square).permute(2, 0, 1)[None]
        tensors.append(resize(tensor, resolution))
    return torch.cat(tensors)


def load_imagefolder(
    data_dir: Path | None, resolution: int | None = None, seed: int = 0
) -> DatasetSplits:
    """Read a class-per-folder image set (see the module docstring for the layouts)."""
    del seed  # the splits are fixed
    if data_dir is None:
        raise DataError("imagefolder needs --data-dir: a folder with one sub-folder per class")
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist; pass a folder of class folders")
    resolution = resolution or DEFAULT_IMAGEFOLDER_RESOLUTION
    train_root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir() and p.name[0] != ".")
    if train_root is data_dir:
        classes = [name for name in classes if name not in ("val", "test")]
    if len(classes) < 2:
        raise DataError(
            f"{train_root} holds {len(classes)} class folder(s); imagefolder needs at least 2 "
            "(DIR/CLASS/image.png or DIR/train/CLASS/image.png)"
        )
    paths, labels = _list_images(train_root, classes)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {train_root}/CLASS/")
    pool = Split(_read_images(paths, resolution), torch.tensor(labels, dtype=torch.int64))

    parts: dict[str, Split] = {}
    for part in ("val", "test"):
        part_root = data_dir / part
        if train_root is not data_dir and part_root.is_dir():
            unknown = sorted({p.name for p in part_root.iterdir() if p.is_dir()} - set(classes))
            if unknown:
                raise DataError(f"{part_root} has classes not in {train_root}: {unknown}")
            part_paths, part_labels = _list_images(part_root, classes)
            if part_paths:
                images = _read_images(part_paths, resolution)
                parts[part] = Split(images, torch.tensor(part_labels, dtype=torch.int64))
    missing = [part for part in ("val", "test") if part not in parts]
    if missing:
        fractions = (1.0 - _HELD_OUT_FRACTION * len(missing),) + (_HELD_OUT_FRACTION,) * len(
            missing
        )
        indices = stratified_split(pool.labels.numpy(), fractions)
        for part, part_indices in zip(missing, indices[1:], strict=True):
            parts[part] = pool.select(torch.from_numpy(part_indices))
        pool = pool.select(torch.from_numpy(indices[0]))
    mean, std = channel_stats(pool.images)
    return DatasetSplits(
        name="imagefolder",
        train=pool,
        val=parts["val"],
        test=parts["test"],
        num_classes=len(classes),
        mean=mean,
        std=std,
        augmentation=Augmentation(crop_padding=max(1, resolution // 8), horizontal_flip=True),
        class_names=tuple(classes),
    )
