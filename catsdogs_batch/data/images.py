"""Finding, labelling and decoding images: the one decode-and-resize function (`load_image`,
what run.json's `preprocessing` names) that training and prediction share. One exception: in
an ensemble of models of different input sizes, the smaller members get the largest member's
decode reduced with area interpolation (`resize_batch`), close to but not exactly their own."""

from __future__ import annotations

import logging
import os
import re
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from ..errors import UserError
from ..files import resolves_inside, shown

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
CLASS_NAMES = ("cat", "dog")  # index = label: 0 = cat, 1 = dog
_FOLDER_LABELS = {"cat": 0, "cats": 0, "dog": 1, "dogs": 1}
_EXIF_ORIENTATION = 0x0112
log = logging.getLogger(__name__)
_KAGGLE_NAME = re.compile(r"^(cat|dog)\.", re.IGNORECASE)
FAST_JPEG_BYTES = 64 * 2**20  # larger JPEGs go to Pillow, which reads them as it decodes
_JPEG_SCALES = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# EXIF orientation -> what turns the stored pixels upright (as Pillow's ImageOps.exif_transpose)
_UPRIGHT = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored upside down
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # mirrored along the other diagonal
    8: lambda a: np.rot90(a),  # turned 90 degrees counter-clockwise
}
# Image.reduce rejects these modes (and would average palette indices in "PA"): convert first.
_UNREDUCIBLE_MODES = frozenset({"1", "P", "PA", "I;16", "I;16B", "I;16L", "I;16N"})


class ImageError(Exception):
    """A file that cannot be read as an image; its message becomes the row's `error`."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, (size, size, 3), RGB
    width: int  # of the upright original
    height: int


def load_image(path: str | os.PathLike, size: int) -> DecodedImage:
    """Decode any common image (any mode, EXIF rotation; large JPEGs at a reduced DCT scale) into
    upright RGB uint8 pixels of `size` x `size`. Anything unreadable is an ImageError with a
    one-line reason: never a block on a FIFO or device named like an image, nor a memory blow-up
    on a decompression bomb (over twice Pillow's `Image.MAX_IMAGE_PIXELS`)."""
    try:
        with _open_regular_file(path) as file:
            decoded = _decode_plain_jpeg(file, size)
            if decoded is None:
                file.seek(0)
                decoded = _decode_with_pillow(file, size)
        pixels, width, height, orientation = decoded
        if orientation in _UPRIGHT:
            pixels = np.ascontiguousarray(_UPRIGHT[orientation](pixels))
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        # Bilinear from at most ~2x the target size: cheap and alias-free enough.
        pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)
        return DecodedImage(pixels, width, height)
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"too many pixels ({e})".splitlines()[0]) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"unreadable image: {e}".splitlines()[0]) from None


def resize_batch(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, s, s, 3) images at `size` x `size`: themselves when s is already `size`, else
    each reduced with area interpolation (an ensemble's smaller members, from the largest's decode)."""
    if pixels.shape[1:3] == (size, size):
        return pixels
    return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in pixels])


Decoded = tuple[np.ndarray, int, int, int]  # RGB pixels as stored, the stored width and height, EXIF orientation


def _decode_plain_jpeg(file: BinaryIO, size: int) -> Decoded | None:
    """A colour JPEG decoded by OpenCV's libjpeg-turbo, its header (size, mode, EXIF, the pixel limit)
    read by Pillow: Pillow's pixels at the DCT scale its `draft` picks, in two thirds of the time.
    None where Pillow must decode: another format, over FAST_JPEG_BYTES, not three 8-bit components,
    no end-of-image marker at the end (truncated, or other data after it), or pixels OpenCV cannot
    decode to the size Pillow read (a header the two read differently)."""
    if os.fstat(file.fileno()).st_size > FAST_JPEG_BYTES or file.read(3) != b"\xff\xd8\xff":
        return None
    with Image.open(file, formats=("JPEG",)) as img:  # reads up to the first scan; bombs raise here
        if img.mode != "RGB":  # Pillow reads only 8-bit frames, and three components as RGB
            return None
        width, height = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)  # EXIF's first, else XMP's
    file.seek(0)
    data = file.read()
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    scale = next(s for s in (8, 4, 2, 1) if s <= min(width, height) // size or s == 1)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _JPEG_SCALES[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.shape != (-(-height // scale), -(-width // scale), 3):
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    factor = min(rgb.shape[:2]) // (2 * size)
    if factor >= 2:  # beyond 1/8: Pillow's box reduction to within 2x of the target, as below
        rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
    return rgb, width, height, orientation


def _decode_with_pillow(file: BinaryIO, size: int) -> Decoded:
    """Any image Pillow reads (the first frame of an animation): RGB pixels reduced cheaply to
    within 2x of `size`, with its stored size and EXIF orientation."""
    with Image.open(file) as img:
        img.seek(0)
        width, height = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if img.format in ("JPEG", "MPO"):  # (MPO: a phone's JPEG with more pictures after it)
            img.draft("RGB", (size, size))  # DCT scaling: decode at 1/2, 1/4 or 1/8
        img.load()
        factor = min(img.size) // (2 * size)
        if factor >= 2:  # other formats: a fast box reduction to within 2x of the target
            if img.mode in _UNREDUCIBLE_MODES:
                img = to_rgb(img)
            img = img.reduce(factor)
        return np.asarray(to_rgb(img), dtype=np.uint8), width, height, orientation


def _open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Open `path` for reading without ever blocking: a FIFO, socket, device or folder named like
    an image is an ImageError (Pillow would wait forever on a FIFO), and so is an empty file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO opens at once
    except OSError:
        # A folder without read permission or a socket cannot even be opened: say what it is.
        reason = _not_a_file_reason(path)
        if reason is None:
            raise
        raise ImageError(reason) from None
    try:
        info = os.fstat(fd)
        reason = _not_a_file_reason(path, info.st_mode)
        if reason is not None:
            raise ImageError(reason)
        if info.st_size == 0:
            raise ImageError("empty file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _not_a_file_reason(path: str | os.PathLike, mode: int | None = None) -> str | None:
    """Why `path`, of st_mode `mode` (os.stat's when None), cannot be an image file; None for a
    regular file, or when it cannot be stat'ed either."""
    if mode is None:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        try:
            with os.scandir(path):
                return "is a folder"
        except OSError as e:
            return f"cannot list this folder: {e.strerror}"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({kind})"


def to_rgb(img: Image.Image) -> Image.Image:
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
    """0 for a cat, 1 for a dog, from a Kaggle name (`cat.12.jpg`) or a class folder (`Dogs/x.jpg`);
    pass the path relative to the labelled folder, so folders above it never count."""
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


@dataclass
class HiddenEntries:
    """The hidden files and folders (names starting with '.') a walk left out, counted as it
    goes: a command says how many without walking the folder again."""

    files: int = 0
    folders: int = 0  # their content is not looked into

    def log(self, folder: str | os.PathLike) -> None:
        """One line saying what was left out, if anything."""
        if self.files or self.folders:
            counts = [f"{n} hidden {what}{'' if n == 1 else 's'}"
                      for n, what in ((self.files, "file"), (self.folders, "folder")) if n]  # fmt: skip
            log.info("skipped %s in %s (names starting with '.')", " and ".join(counts), shown(folder))


def iter_image_files(folder: str | os.PathLike, hidden: HiddenEntries | None = None) -> Iterator[Path]:
    """Yield image files under `folder` recursively, in a stable order, each directory sorted on
    its own (memory grows with the largest one, not the tree). Hidden entries are skipped (counted in
    `hidden`). Links outside `folder` are followed, each real folder walked once (link loops end);
    links inside it are skipped (listed under their own path). A subfolder that cannot be listed is
    yielded itself, so that load_image reports it as an error row."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    visited: set[tuple[int, int]] = set()  # (st_dev, st_ino) of every folder walked
    stack = [folder]
    while stack:
        directory = stack.pop()
        try:
            info = os.stat(directory)
            if (info.st_dev, info.st_ino) in visited:
                continue
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as e:
            if directory == folder:
                raise UserError(f"cannot list {folder}: {e.strerror}") from None
            yield directory
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                if hidden is not None:
                    if _is_dir(entry):
                        hidden.folders += 1
                    else:
                        hidden.files += 1
                continue
            # a link to what exists inside `folder` is listed under its own path; a broken one is an error row
            if entry.is_symlink() and os.path.exists(entry.path) and resolves_inside(folder, entry.path) is not None:
                continue
            if _is_dir(entry):
                subdirs.append(Path(entry.path))
            elif is_image_file(entry.name):
                yield Path(entry.path)
        stack.extend(reversed(subdirs))


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether `entry` is a folder or a link to one; False for a broken or looping link."""
    try:
        return entry.is_dir()
    except OSError:
        return False


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

    one_thread_each()
    if workers <= 1:
        yield from ((path, load(path)) for path in paths)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[Path, Future]] = deque()
        for path in paths:
            pending.append((path, pool.submit(load, path)))
            if len(pending) >= window:
                path, future = pending.popleft()
                yield path, future.result()
        yield from ((path, future.result()) for path, future in pending)


def one_thread_each() -> None:
    """OpenCV's own threads off: the images are decoded in parallel already, one per thread (or
    one per Ray actor, each with its CPU). Set where decoding starts, never at import."""
    cv2.setNumThreads(1)
