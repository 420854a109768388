"""The shared decoder on every kind of file a real photo folder holds."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from catsdogs_batch.errors import UserError
from catsdogs_batch.images import ImageError, iter_image_files, label_from_path, load_image

from conftest import write_image


@pytest.mark.parametrize("name", ["a.jpg", "a.png", "a.bmp", "a.gif", "a.webp", "a.tiff"])
def test_common_formats_decode_to_rgb_uint8(tmp_path, name):
    path = write_image(tmp_path / name, label=0, size=40)
    image = load_image(path, 32)
    assert image.pixels.shape == (32, 32, 3) and image.pixels.dtype == np.uint8
    assert (image.width, image.height) == (40, 40)
    red, _, blue = image.pixels.reshape(-1, 3).mean(axis=0)
    assert red > blue + 80  # a "cat" of write_image is reddish in every format


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1"])
def test_other_colour_modes_become_rgb(tmp_path, mode):
    path = tmp_path / "m.png" if mode != "CMYK" else tmp_path / "m.jpg"
    Image.new("RGB", (20, 10), (200, 30, 30)).convert(mode).save(path)
    assert load_image(path, 16).pixels.shape == (16, 16, 3)


def test_transparent_areas_become_white(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(path)
    assert (load_image(path, 8).pixels == 255).all()


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((10, 10), 32896, dtype=np.uint16)).save(path)  # half of 65535
    assert np.all(np.abs(load_image(path, 8).pixels.astype(int) - 128) <= 1)


def test_exif_rotated_photo_is_classified_upright(tmp_path):
    # Stored 40 wide x 20 high, left half red; EXIF orientation 6 = display rotated 90 deg clockwise,
    # so upright the image is 20 wide x 40 high with red on top.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = load_image(path, 16)
    assert (image.width, image.height) == (20, 40)
    top, bottom = image.pixels[:4].mean(axis=(0, 1)), image.pixels[-4:].mean(axis=(0, 1))
    assert top[0] > 200 and bottom[2] > 200


def test_very_large_photo_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (10, 200, 10)).save(path, quality=80)
    image = load_image(path, 64)
    assert (image.width, image.height) == (6000, 4000)
    assert image.pixels.shape == (64, 64, 3) and image.pixels[..., 1].min() > 180
    with Image.open(path) as img:  # what load_image relies on: JPEG DCT scaling, here by 1/8
        img.draft("RGB", (64, 64))
        assert img.size == (750, 500)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is a text file, not a photo", "not an image file"),
    ],
)
def test_non_images_with_an_image_extension_raise_image_error(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_image(path, 32)


def test_truncated_jpeg_raises_image_error(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (1, 2, 3)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(ImageError, match="unreadable image"):
        load_image(path, 32)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("cat.12.jpg", 0),
        ("dog.4.jpg", 1),
        ("Dog.4.JPG", 1),
        ("Cats/x.png", 0),
        ("photos/DOGS/2019/x.png", 1),
        ("dog/cat.1.jpg", 0),  # the file name is more specific than its folder
        ("12.jpg", None),
        ("catalog/x.jpg", None),
    ],
)
def test_labels_from_kaggle_names_and_class_folders(path, label):
    assert label_from_path(path) == label


def test_image_files_are_found_recursively_in_a_stable_order(tmp_path):
    for rel in ["b/2.jpg", "b/1.png", "a.jpg", "c/d/e.webp", ".hidden.jpg", ".git/x.jpg", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == ["a.jpg", "b/1.png", "b/2.jpg", "c/d/e.webp"]


def test_finding_images_in_a_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        list(iter_image_files(tmp_path / "nope"))
