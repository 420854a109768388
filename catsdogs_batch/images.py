"""Finding, labelling and decoding images: the one decode-and-resize function that training and
prediction share, so the two can never disagree."""

from __future__ import annotations

import os
import re
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
CLASS_NAMES = ("cat", "dog")  # index = label: 0 = cat, 1 = dog
_FOLDER_LABELS = {"cat": 0, "cats": 0, "dog": 1, "dogs": 1}
_EXIF_ORIENTATION = 0x0112
_KAGGLE_NAME = re.compile(r"^(cat|dog)\.", re.IGNORECASE)

# Photos far larger than the model input are decoded at a reduced scale; a decompression bomb
# (more pixels than any camera makes) is an error row rather than a memory blow-up.
Image.MAX_IMAGE_PIXELS = 200_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)
cv2.setNumThreads(1)  # images are decoded in parallel already, one per thread


class ImageError(Exception):
    """A file that cannot be read as an image; its message becomes the row's `error`."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, (size, size, 3), RGB
    width: int  # of the upright original
    height: int


def load_image(path: str | os.PathLike, size: int) -> DecodedImage:
    """Decode any common image file into upright RGB uint8 pixels of `size` x `size`.

    Handles JPEG/PNG/BMP/GIF/WebP/TIFF, grayscale, palette, CMYK, alpha and 16-bit images and
    EXIF rotation; JPEGs far larger than `size` are decoded at a reduced scale (DCT scaling).
    Raises ImageError with a one-line reason for anything unreadable.
    """
    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of an animated GIF/WebP/TIFF
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # DCT scaling: decode at 1/2, 1/4 or 1/8
            img.load()
            factor = min(img.size) // (2 * size)
            if factor >= 2:  # other formats: a fast box reduction to within 2x of the target
                img = img.reduce(factor)
            if orientation != 1:
                img = ImageOps.exif_transpose(img)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            pixels = np.asarray(_to_rgb(img), dtype=np.uint8)
        # Bilinear from at most ~2x the target size: cheap and alias-free enough.
        pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)
        return DecodedImage(pixels, width, height)
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except Image.UnidentifiedImageError:
        reason = "empty file" if Path(path).stat().st_size == 0 else "not an image file"
        raise ImageError(reason) from None
    except Image.DecompressionBombWarning as e:
        raise ImageError(f"too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"unreadable image: {e}".splitlines()[0]) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent areas become white, 16-bit is scaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def label_from_path(path: str | os.PathLike) -> int | None:
    """0 for a cat, 1 for a dog, from a Kaggle name (`cat.12.jpg`) or a class folder (`Dogs/x.jpg`).

    Pass the path relative to the labelled folder, so folders above it never count."""
    path = Path(path)
    match = _KAGGLE_NAME.match(path.name)
    if match:
        return CLASS_NAMES.index(match.group(1).lower())
    for parent in path.parents:
        label = _FOLDER_LABELS.get(parent.name.lower())
        if label is not None:
            return label
    return None


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def iter_image_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield image files under `folder` recursively, in a stable order, without listing it all first.

    Each directory is read and sorted on its own, so memory grows with the largest directory,
    not with the tree. Hidden files and folders are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    stack = [folder]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            entries = sorted(entries, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                subdirs.append(Path(entry.path))
            elif is_image_file(entry.name):
                yield Path(entry.path)
        stack.extend(reversed(subdirs))


def decode_many(
    paths: Iterable[Path], size: int, workers: int, window: int = 256
) -> Iterator[tuple[Path, DecodedImage | ImageError]]:
    """Decode `paths` in order on `workers` threads (Pillow releases the GIL while decoding),
    at most `window` images ahead of the consumer, so memory stays bounded for any number of
    files. Unreadable files yield their ImageError instead of raising."""

    def load(path: Path) -> DecodedImage | ImageError:
        try:
            return load_image(path, size)
        except ImageError as e:
            return e

    if workers <= 1:
        for path in paths:
            yield path, load(path)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[Path, Future]] = deque()
        for path in paths:
            pending.append((path, pool.submit(load, path)))
            if len(pending) >= window:
                path, future = pending.popleft()
                yield path, future.result()
        while pending:
            path, future = pending.popleft()
            yield path, future.result()
