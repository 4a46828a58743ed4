"""ImageNet-style image folders: one sub-folder per class, read with Pillow into memory.

Layouts: ``DIR/train/CLASS/*.png`` with optional ``DIR/val/`` and ``DIR/test/`` beside it, or
simply ``DIR/CLASS/*.png``. A missing validation or test part is carved out of the training
images (a fixed, stratified 15 % each). Images are centre-cropped to a square, resized to the
requested resolution (``torch.nn.functional.interpolate``, anti-aliased) and kept as ``uint8``;
they have 1 channel when every image is greyscale, 3 (RGB) when every image is colour;
a mixture, a corrupt image or an empty class folder is a one-line :class:`DataError`.

Hostile inputs: a file is opened only when it is a regular file (a FIFO named ``x.png`` is
refused, never read) of at most 256 MiB, and decoded only when its header declares at most
Pillow's ``MAX_IMAGE_PIXELS``. 16-bit greyscale images (``I;16``, ``I``: 0..65535) and float
ones (``F``: values in [0, 1]) are scaled to 8 bits (other ranges are refused, never clipped).
A class needs enough images for every split (4 when validation and test are carved out of the
training images, 1 in each given ``val``/``test`` part); fewer is refused.

Decoding is done once: the decoded ``uint8`` arrays are cached per part in the user's cache
folder (:func:`cache_folder`, ``~/.cache/pikenas`` by default, ``$PIKENAS_CACHE_DIR`` to move
it), keyed by the resolution and every file's path, size and modification time, so a changed
file invalidates the entry. Nothing is ever written into the data folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pikenas.evaluators._atomic import atomic_write
from pikenas.evaluators.data._splits import (
    Augmentation,
    DatasetSplits,
    Split,
    channel_stats,
    min_class_size,
    read_regular_file,
    stratified_split,
)
from pikenas.evaluators.data._transforms import resize
from pikenas.space.errors import DataError, PikeNASError

__all__ = ["load_imagefolder", "cache_folder", "DEFAULT_IMAGEFOLDER_RESOLUTION", "IMAGE_SUFFIXES"]

logger = logging.getLogger(__name__)

DEFAULT_IMAGEFOLDER_RESOLUTION = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GREY_MODES = ("1", "L", "LA", "La")  # 8-bit greyscale; wider ones: see _to_8_bits
_HELD_OUT_FRACTION = 0.15
_CACHE_FORMAT = 2  # 2: 16-bit and float images scaled, no longer clipped
_MAX_FILE_BYTES = 256 * 2**20  # one image file
_PENDING_BYTES = 256 * 2**20  # decoded squares waiting to be resized together


def _list_images(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The image files of every class folder under ``root`` (a missing folder is skipped, an
    existing one without images is a :class:`DataError`)."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_name in enumerate(classes):
        folder = root / class_name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add "
                "images or remove the folder"
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, labels


def _to_8_bits(picture: Any, path: Path) -> np.ndarray:
    """``(H, W)`` uint8 of a 16-bit or 32-bit-integer greyscale image (``I;16*``, ``I``: values
    0..65535, scaled by 255/65535) or a float one (``F``: values in [0, 1], scaled by 255).
    Values outside those ranges are refused: their meaning cannot be guessed."""
    values = np.asarray(picture)
    if picture.mode == "F":
        finite = np.isfinite(values).all()
        if not finite or values.size and (values.min() < 0 or values.max() > 1):
            raise DataError(
                f"float image {path} has values outside [0, 1]; only float images in [0, 1] are "
                "scaled to 8 bits: rescale it or save it as an 8-bit image"
            )
        return np.rint(values.astype(np.float64) * 255).astype(np.uint8)
    wide = values.astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise DataError(
            f"integer image {path} has values outside 0..65535; only 8- and 16-bit images are "
            "read: save it as an 8- or 16-bit image"
        )
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _decode(path: Path) -> tuple[np.ndarray, bool]:
    """``(pixels (H, W, 3) or (H, W, 1) uint8, is_grey)`` of one image file: a regular file of at
    most ``_MAX_FILE_BYTES`` and ``Image.MAX_IMAGE_PIXELS`` pixels (checked before decoding)."""
    from PIL import Image, UnidentifiedImageError

    content = read_regular_file(path, _MAX_FILE_BYTES, "image")
    try:
        with warnings.catch_warnings():  # over the limit is refused below, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(content))
        with opened as picture:
            width, height = picture.size
            limit = Image.MAX_IMAGE_PIXELS  # None: the user switched Pillow's check off
            if limit is not None and width * height > limit:
                raise DataError(
                    f"image {path} has {width}x{height} pixels, over Pillow's limit of "
                    f"{limit:,} (a decompression bomb?); shrink or remove it"
                )
            picture.load()
            mode = picture.mode
            wide = mode.startswith("I") or mode == "F"  # 16/32-bit integer or float grey
            grey = wide or mode in _GREY_MODES
            if wide:
                array = _to_8_bits(picture, path)
            else:
                array = np.asarray(picture.convert("L" if grey else "RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {path} is over Pillow's decompression-bomb limit ({exc})") from None
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read image {path} (not an image format Pillow reads); remove or replace it"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove or replace it") from None
    return (array[:, :, None] if array.ndim == 2 else array), grey


def _decode_all(paths: list[Path], resolution: int) -> torch.Tensor:
    """``(N, C, resolution, resolution)`` uint8: centre-cropped squares, resized in batches of
    one source size (flushed when the pending squares pass ``_PENDING_BYTES``, so memory stays
    bounded whatever the images' sizes). Greyscale and colour images mixed in one set are a
    :class:`DataError`."""
    out: torch.Tensor | None = None
    pending: dict[int, list[tuple[int, np.ndarray]]] = {}
    pending_bytes = 0
    grey_example: Path | None = None
    colour_example: Path | None = None

    def flush() -> None:
        for group in pending.values():
            stacked = torch.from_numpy(np.stack([square for _, square in group]))
            indices = torch.tensor([index for index, _ in group])
            out[indices] = resize(stacked.permute(0, 3, 1, 2).contiguous(), resolution)
        pending.clear()

    for index, path in enumerate(paths):
        array, grey = _decode(path)
        if grey:
            grey_example = grey_example or path
        else:
            colour_example = colour_example or path
        if grey_example is not None and colour_example is not None:
            raise DataError(
                f"mixed image modes: {grey_example} is greyscale but {colour_example} is colour; "
                "convert every image to one mode (all greyscale or all RGB)"
            )
        if out is None:
            shape = (len(paths), array.shape[2], resolution, resolution)
            out = torch.empty(shape, dtype=torch.uint8)
        height, width = array.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = np.ascontiguousarray(array[top : top + side, left : left + side])
        pending.setdefault(side, []).append((index, square))
        pending_bytes += square.nbytes
        if pending_bytes > _PENDING_BYTES:
            flush()
            pending_bytes = 0
    if out is None:  # no paths
        return torch.empty((0, 1, resolution, resolution), dtype=torch.uint8)
    flush()
    return out


def cache_folder() -> Path:
    """Where decoded image folders are cached: ``$PIKENAS_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/pikenas``, else ``~/.cache/pikenas`` (never inside the data folder)."""
    if os.environ.get("PIKENAS_CACHE_DIR"):
        return Path(os.environ["PIKENAS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pikenas"


def _cache_key(paths: list[Path], resolution: int) -> str:
    """A hash of the resolution and every file's path, size and modification time: any change
    to the files gives another key (the stale entry is simply never read again)."""
    digest = hashlib.sha256(f"imagefolder:{_CACHE_FORMAT}:{resolution}".encode())
    for path in paths:
        info = path.stat()
        digest.update(f"\0{path}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to a path
        np.save(handle, array, allow_pickle=False)


def _read_images(paths: list[Path], resolution: int) -> torch.Tensor:
    """``(N, C, resolution, resolution)`` uint8 pixels of the images at ``paths``, decoded once
    and cached as a ``.npy`` file in :func:`cache_folder` (keyed by :func:`_cache_key`)."""
    try:
        cached = cache_folder() / f"imagefolder-{_cache_key(paths, resolution)}.npy"
    except OSError as exc:
        raise DataError(f"cannot read the image folder ({exc})") from None
    if cached.is_file():
        try:
            array = np.load(cached, allow_pickle=False)
            if array.dtype == np.uint8 and array.ndim == 4 and array.shape[0] == len(paths):
                return torch.from_numpy(array)
        except (OSError, ValueError) as exc:
            logger.debug("ignoring unreadable cache %s (%s)", cached, exc)
    images = _decode_all(paths, resolution)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda temporary: _save_array(temporary, images.numpy()))
    except (OSError, PikeNASError) as exc:  # a read-only home only costs the next decode
        logger.debug("not caching decoded images at %s (%s)", cached, exc)
    return images


def _check_class_counts(
    root: Path,
    classes: list[str],
    labels: list[int],
    carved: list[str],
    fractions: tuple[float, ...],
) -> None:
    """Refuse a class too small to reach every split: each class of ``root`` needs enough
    images for the parts ``carved`` out of it with ``fractions`` (at least one each, plus one
    for training). Otherwise it would be missing from validation or test, and the accuracy
    would be over fewer classes than the model predicts."""
    needed = min_class_size(fractions)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    for class_name, count in zip(classes, counts.tolist(), strict=True):
        if count < needed:
            where = (
                f"{', '.join(carved)} ({_HELD_OUT_FRACTION:.0%} each) carved out of it"
                if carved
                else "every class must appear in every part"
            )
            raise DataError(
                f"class {class_name!r} has {count} image(s) in {root}; each class needs at least "
                f"{needed} there ({where}): add images or remove the class"
            )


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
    listed: dict[str, tuple[list[Path], list[int]]] = {}
    for part in ("val", "test"):
        part_root = data_dir / part
        if train_root is not data_dir and part_root.is_dir():
            unknown = sorted({p.name for p in part_root.iterdir() if p.is_dir()} - set(classes))
            if unknown:
                raise DataError(f"{part_root} has classes not in {train_root}: {unknown}")
            part_paths, part_labels = _list_images(part_root, classes)
            if part_paths:
                listed[part] = (part_paths, part_labels)
    # Counted before anything is decoded: a class too small for every split is refused.
    missing = [part for part in ("val", "test") if part not in listed]
    fractions = (1.0 - _HELD_OUT_FRACTION * len(missing),) + (_HELD_OUT_FRACTION,) * len(missing)
    _check_class_counts(train_root, classes, labels, missing, fractions)
    for part, (_, part_labels) in listed.items():
        _check_class_counts(data_dir / part, classes, part_labels, [], (1.0,))
    pool = Split(_read_images(paths, resolution), torch.tensor(labels, dtype=torch.int64))
    parts = {
        part: Split(_read_images(part_paths, resolution), torch.tensor(part_labels))
        for part, (part_paths, part_labels) in listed.items()
    }
    if missing:
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
