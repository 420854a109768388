"""The shared decoder on every kind of file a real photo folder holds."""

from __future__ import annotations

import errno
import io
import logging
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs_batch.errors import UserError
from catsdogs_batch.data.images import (
    HiddenEntries,
    ImageError,
    decode_many,
    iter_image_files,
    label_from_path,
    load_image,
)

from conftest import bound_by_permissions, write_image


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


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_every_exif_orientation_is_turned_upright_as_pillow_does(tmp_path, orientation, suffix):
    """Quadrants of four colours stored 64 wide x 32 high; the reference is Pillow's own
    ImageOps.exif_transpose of the decoded file, resized as load_image resizes."""
    import cv2
    from PIL import ImageOps

    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:16, :32], pixels[:16, 32:] = (255, 0, 0), (0, 255, 0)
    pixels[16:, :32], pixels[16:, 32:] = (0, 0, 255), (255, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned{suffix}"
    Image.fromarray(pixels).save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    with Image.open(path) as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    image = load_image(path, 24)  # under half the stored size: no DCT scaling
    assert (image.width, image.height) == (upright.shape[1], upright.shape[0])
    expected = cv2.resize(upright, (24, 24), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(image.pixels, expected)


@pytest.mark.parametrize(
    ("stored", "size"), [((200, 150), 128), ((1000, 800), 128), ((1000, 800), 64), ((800, 800), 16), ((1000, 1030), 16)]
)
def test_colour_jpegs_give_pillows_pixels_at_its_dct_scale(tmp_path, stored, size):
    """The fast JPEG decoder must not change what a model sees: the pixels are Pillow's, at the
    scale Pillow's draft picks (none, 1/4 and 1/8 here), then resized as load_image does."""
    import cv2

    noise = np.random.default_rng(0).integers(0, 256, (stored[1], stored[0], 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(noise).save(path, quality=90)
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        factor = min(img.size) // (2 * size)  # past 1/8, Pillow's box reduction (the last two)
        reference = np.asarray((img.reduce(factor) if factor >= 2 else img).convert("RGB"))
    expected = cv2.resize(reference, (size, size), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(load_image(path, size).pixels, expected)


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """`jpeg` with an APP1 segment holding `payload` right after its start marker."""
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


@pytest.mark.parametrize("block", ["big-endian EXIF", "XMP"])
def test_orientations_pillow_reads_from_other_blocks_are_followed(tmp_path, block):
    """EXIF in Motorola byte order, and XMP's tiff:Orientation (which Pillow reads when there is
    no EXIF): both turned as Pillow's exif_transpose turns them (here 6: 90 degrees clockwise)."""
    import cv2
    from PIL import ImageOps

    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (255, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    if block == "XMP":
        payload = b"http://ns.adobe.com/xap/1.0/\0" + b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    else:  # a TIFF header, one IFD entry: orientation (0x0112), SHORT, count 1, value 6
        payload = b"Exif\0\0MM\0*" + (8).to_bytes(4, "big") + b"\0\x01" + b"\x01\x12\0\x03\0\0\0\x01\0\x06\0\0" + bytes(4)
    path = tmp_path / "turned.jpg"
    path.write_bytes(_with_app1(buffer.getvalue(), payload))
    with Image.open(path) as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert upright.shape[:2] == (64, 32)  # Pillow itself sees the orientation
    image = load_image(path, 24)
    assert (image.width, image.height) == (32, 64)
    assert np.array_equal(image.pixels, cv2.resize(upright, (24, 24), interpolation=cv2.INTER_LINEAR))
    from catsdogs_batch.data.images import _decode_plain_jpeg

    with open(path, "rb") as f:  # read by the fast decoder itself, not left to Pillow
        assert _decode_plain_jpeg(f, 24)[1:] == (64, 32, 6)


def _exif_orientation_block(orientation: int) -> bytes:
    """An APP1 EXIF payload: a big-endian TIFF header and one IFD entry, orientation (0x0112),
    SHORT, count 1."""
    entry = b"\x01\x12\0\x03\0\0\0\x01" + orientation.to_bytes(2, "big") + b"\0\0"
    return b"Exif\0\0MM\0*" + (8).to_bytes(4, "big") + b"\0\x01" + entry + bytes(4)


def test_the_first_exif_block_counts_wherever_the_header_holds_it(tmp_path):
    """As Pillow: of two EXIF blocks the first (6: 90 degrees clockwise) counts, and an EXIF
    block after the frame header counts too."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 20, 20)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    two = _with_app1(_with_app1(jpeg, _exif_orientation_block(3)), _exif_orientation_block(6))
    frame = jpeg.index(b"\xff\xc0")
    after = frame + 2 + int.from_bytes(jpeg[frame + 2 : frame + 4], "big")
    late = _with_app1(jpeg[after - 2 :], _exif_orientation_block(6))  # a "file" from the frame's end
    late = jpeg[:after] + late[2:]
    for name, data in (("two.jpg", two), ("late.jpg", late)):
        (tmp_path / name).write_bytes(data)
        with Image.open(tmp_path / name) as img:
            assert img.getexif().get(0x0112) == 6  # what Pillow reads
        assert (load_image(tmp_path / name, 16).width, load_image(tmp_path / name, 16).height) == (32, 64), name


def test_an_exif_orientation_wins_over_xmp_as_in_pillow(tmp_path):
    """Phones write both: Pillow reads XMP's tiff:Orientation only where EXIF has none."""
    from catsdogs_batch.data.images import _decode_plain_jpeg

    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 20, 20)).save(buffer, "JPEG")
    xmp = b"http://ns.adobe.com/xap/1.0/\0" + b'<x:xmpmeta><rdf:Description tiff:Orientation="3"/></x:xmpmeta>'
    path = tmp_path / "phone.jpg"
    path.write_bytes(_with_app1(_with_app1(buffer.getvalue(), xmp), _exif_orientation_block(6)))
    with Image.open(path) as img:
        assert img.getexif().get(0x0112) == 6
    image = load_image(path, 16)
    assert (image.width, image.height) == (32, 64)
    with open(path, "rb") as f:
        assert _decode_plain_jpeg(f, 16)[1:] == (64, 32, 6)  # the fast decoder's own reading


def jpeg_and_its_frame() -> tuple[bytes, int, int]:
    """A 64 x 48 baseline JPEG, and where its frame segment (SOF0, marker included) starts and ends."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(buffer, "JPEG")
    data = buffer.getvalue()
    start = data.index(b"\xff\xc0")
    return data, start, start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")


def frame_of_size(frame: bytes, width: int, height: int) -> bytes:
    """The frame segment `frame` claiming another size (its height and width fields rewritten)."""
    return frame[:5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + frame[9:]


def test_a_huge_frame_hidden_behind_a_marker_without_length_is_still_a_bomb(tmp_path):
    """FFD0 (a restart marker) has no length: a reader that takes the next two bytes for one
    would skip the real 20000 x 10000 frame and see a small one; Pillow refuses the file."""
    data, start, end = jpeg_and_its_frame()
    small = data[start:end]
    huge = frame_of_size(small, 20000, 10000)
    hidden = huge + b"\xff\xe5" + (2 + len(small)).to_bytes(2, "big")  # the small frame inside an APP5
    path = tmp_path / "bomb.jpg"
    path.write_bytes(data[:start] + b"\xff\xd0" + (2 + len(hidden)).to_bytes(2, "big") + hidden + small + data[end:])
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(path, 32)


def test_a_huge_frame_before_the_one_pillow_reads_is_never_decoded(tmp_path):
    """Pillow's header keeps the last of two frames (here 64 x 48), libjpeg the first (30000 x
    20000, then it stops at the second): neither decoder makes the huge image."""
    from catsdogs_batch.data.images import _decode_plain_jpeg

    data, start, end = jpeg_and_its_frame()
    small = data[start:end]
    huge = frame_of_size(small, 30000, 20000)
    path = tmp_path / "two.jpg"
    path.write_bytes(data[:start] + huge + small + data[end:])
    with Image.open(path) as img:
        assert img.size == (64, 48)  # what the header check sees
    with open(path, "rb") as f:
        assert _decode_plain_jpeg(f, 32) is None
    with pytest.raises(ImageError, match="unreadable image"):
        load_image(path, 32)


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_jpegs_that_are_not_three_components_give_pillows_pixels(tmp_path, mode):
    import cv2

    noise = np.random.default_rng(1).integers(0, 256, (40, 60, 4 if mode == "CMYK" else 1), dtype=np.uint8)
    path = tmp_path / "other.jpg"
    Image.fromarray(noise.squeeze(), mode).save(path, quality=90)
    with Image.open(path) as img:
        expected = cv2.resize(np.asarray(img.convert("RGB")), (24, 24), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(load_image(path, 24).pixels, expected)


def test_a_jpeg_over_the_fast_path_size_is_read_by_pillow_without_being_held_whole(tmp_path):
    """A JPEG file over FAST_JPEG_BYTES (here a small photo padded with zeros) is left to
    Pillow, which reads only what it decodes; the image is the same."""
    from catsdogs_batch.data.images import FAST_JPEG_BYTES, _decode_plain_jpeg

    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (10, 200, 10)).save(buffer, "JPEG")
    path = tmp_path / "padded.jpg"
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
        f.truncate(FAST_JPEG_BYTES + 1)
    with open(path, "rb") as f:
        assert _decode_plain_jpeg(f, 32) is None
    image = load_image(path, 32)
    assert (image.width, image.height) == (60, 40) and image.pixels[..., 1].min() > 150


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("xmp", [False, True])
def test_a_phones_mpo_is_decoded_at_the_dct_scale_of_its_first_picture(tmp_path, xmp, mode):
    """MPO (a JPEG with more pictures after it, as phones write) is drafted like a JPEG,
    whichever decoder reads it (OpenCV a colour one, Pillow a grayscale one): the first
    picture's pixels at Pillow's DCT scale."""
    import cv2

    noise = np.random.default_rng(2).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    path = tmp_path / "phone.jpg"
    first, second = Image.fromarray(noise).convert(mode), Image.new(mode, (600, 400))
    first.save(path, "MPO", save_all=True, append_images=[second])
    if xmp:
        path.write_bytes(_with_app1(path.read_bytes(), b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>"))
    with Image.open(path) as img:
        assert img.format == "MPO"
        img.draft("RGB", (64, 64))
        expected = cv2.resize(np.asarray(img.convert("RGB")), (64, 64), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(load_image(path, 64).pixels, expected)


def test_a_jpeg_followed_by_other_data_still_decodes(tmp_path):
    """Some cameras append data after the end-of-image marker: Pillow decodes such files."""
    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (200, 10, 10)).save(buffer, "JPEG")
    path = tmp_path / "tail.jpg"
    path.write_bytes(buffer.getvalue() + b"camera maker's data" * 10)
    image = load_image(path, 32)
    assert (image.width, image.height) == (60, 40) and image.pixels[..., 0].min() > 150


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


def test_the_walk_counts_the_hidden_files_and_folders_it_leaves_out(tmp_path, monkeypatch, caplog):
    """Hidden names are still left out, but counted as the walk goes (each folder listed once,
    no second walk of a huge folder), so that a command can say how many it skipped."""
    import catsdogs_batch.data.images as images_module

    for rel in ["a.jpg", ".hidden.jpg", ".DS_Store", "sub/.cat.1.jpg", "sub/b.png", ".git/x.jpg", ".git/y.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listed = []
    scandir = os.scandir
    monkeypatch.setattr(images_module.os, "scandir", lambda path: listed.append(path) or scandir(path))
    hidden = HiddenEntries()
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path, hidden)]
    assert found == ["a.jpg", "sub/b.png"]
    assert (hidden.files, hidden.folders) == (3, 1) and len(listed) == 2  # .git/ is neither listed nor counted into
    with caplog.at_level(logging.INFO):
        hidden.log(tmp_path)
        HiddenEntries().log(tmp_path)  # none: nothing said
    assert [r.getMessage() for r in caplog.records] == [
        f"skipped 3 hidden files and 1 hidden folder in {tmp_path} (names starting with '.')"
    ]


def test_finding_images_in_a_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        list(iter_image_files(tmp_path / "nope"))


def test_links_out_are_followed_links_in_are_skipped_and_each_folder_is_walked_once(tmp_path):
    root = tmp_path / "photos"
    for rel in ["a/1.jpg", "b/2.jpg"]:
        write_image(root / rel, 0)
    write_image(tmp_path / "elsewhere" / "3.jpg", 1)
    (root / "a" / "loop").symlink_to("..")  # back up to photos/
    (root / "b" / "to_a").symlink_to("../a")  # a folder already walked
    (root / "c").symlink_to("b")  # a second name for b/
    (root / "more").symlink_to(tmp_path / "elsewhere")  # a folder outside the tree
    (root / "linked.jpg").symlink_to("a/1.jpg")  # listed as a/1.jpg
    (root / "0-first").symlink_to("b")  # sorts before b/, which must still be listed as b/
    (tmp_path / "elsewhere" / "again").symlink_to(root / "a")  # back in through the outside folder
    found = [p.relative_to(root).as_posix() for p in iter_image_files(root)]
    assert found == ["a/1.jpg", "b/2.jpg", "more/3.jpg"]


def test_broken_and_looping_links_do_not_stop_the_walk(tmp_path):
    write_image(tmp_path / "real.jpg", 0)
    (tmp_path / "self.jpg").symlink_to("self.jpg")
    (tmp_path / "gone.jpg").symlink_to("missing.jpg")
    (tmp_path / "gone").symlink_to("missing")
    (tmp_path / "d").symlink_to("e")
    (tmp_path / "e").symlink_to("d")
    rows = {p.name: result for p, result in decode_many(iter_image_files(tmp_path), 16, workers=1)}
    assert list(rows) == ["gone.jpg", "real.jpg", "self.jpg"]
    assert str(rows["gone.jpg"]) == "file not found"
    assert "symbolic links" in str(rows["self.jpg"])
    assert rows["real.jpg"].pixels.shape == (16, 16, 3)


def _refuse_to_list(monkeypatch, blocked: Path) -> None:
    """Make os.scandir fail on `blocked` as it does on a chmod 000 folder for a normal user."""
    scandir = os.scandir

    def fake_scandir(path):
        if os.fspath(path) == os.fspath(blocked):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)


def test_a_subfolder_that_cannot_be_listed_becomes_an_error_row(tmp_path, monkeypatch):
    write_image(tmp_path / "a.jpg", 0)
    write_image(tmp_path / "locked" / "b.jpg", 0)
    write_image(tmp_path / "z" / "c.jpg", 1)
    _refuse_to_list(monkeypatch, tmp_path / "locked")
    decoded = decode_many(iter_image_files(tmp_path), 16, workers=1)
    rows = {path.relative_to(tmp_path).as_posix(): result for path, result in decoded}
    assert list(rows) == ["a.jpg", "locked", "z/c.jpg"]
    assert str(rows["locked"]) == "cannot list this folder: Permission denied"


def test_a_folder_without_read_permission_becomes_an_error_row(tmp_path):
    write_image(tmp_path / "locked" / "b.jpg", 0)
    (tmp_path / "locked").chmod(0)
    try:
        bound_by_permissions(f"""
import pytest
from pathlib import Path
from catsdogs_batch.data.images import ImageError, iter_image_files, load_image
folder = Path({str(tmp_path)!r})
assert list(iter_image_files(folder)) == [folder / "locked"]
with pytest.raises(ImageError, match="^cannot list this folder: Permission denied$"):
    load_image(folder / "locked", 16)
""")  # fmt: skip
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_a_top_folder_that_cannot_be_listed_is_a_user_error(tmp_path, monkeypatch):
    _refuse_to_list(monkeypatch, tmp_path)
    with pytest.raises(UserError, match="cannot list .*: Permission denied"):
        list(iter_image_files(tmp_path))


def _load_or_fail_if_blocked(path: Path) -> None:
    """load_image(path) in a thread, so a call that blocks fails the test instead of hanging it."""
    errors: list[Exception] = []

    def load() -> None:
        try:
            load_image(path, 16)
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # a writer releases the blocked reader
        pytest.fail(f"load_image blocked on {path.name}")
    if errors:
        raise errors[0]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "not a regular file (a FIFO)"),
        ("socket", "not a regular file (a socket)"),
        ("device", "not a regular file (a device)"),
        ("folder", "is a folder"),
    ],
)
def test_special_files_named_like_images_are_errors_not_hangs(tmp_path, kind, message):
    path = tmp_path / "x.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "device":
        path.symlink_to("/dev/null")
    else:
        path.mkdir()
    with pytest.raises(ImageError) as raised:
        _load_or_fail_if_blocked(path)
    assert str(raised.value) == message


def test_a_file_without_read_permission_is_permission_denied(tmp_path):
    path = write_image(tmp_path / "private.jpg", 0)
    path.chmod(0)
    bound_by_permissions(f"""
import pytest
from catsdogs_batch.data.images import ImageError, load_image
with pytest.raises(ImageError, match="^permission denied$"):
    load_image({str(path)!r}, 16)
""")  # fmt: skip


def test_large_1_bit_png_is_reduced_correctly(tmp_path):
    pixels = np.zeros((256, 256), dtype=bool)
    pixels[:, :128] = True  # white left half
    path = tmp_path / "bw.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode == "1"
    image = load_image(path, 32)
    assert image.pixels[:, :15].min() >= 250 and image.pixels[:, 17:].max() <= 5


def test_large_16_bit_grayscale_png_is_reduced_correctly(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((256, 256), 32768, dtype=np.uint16)).save(path)  # half of 65535
    assert Image.open(path).mode == "I;16"
    assert np.all(np.abs(load_image(path, 32).pixels.astype(int) - 128) <= 1)


def test_large_palette_gif_is_reduced_correctly(tmp_path):
    img = Image.new("P", (256, 256), 0)
    img.putpalette([255, 0, 0, 0, 0, 255])  # 0 = red, 1 = blue
    img.paste(1, (128, 0, 256, 256))
    path = tmp_path / "two.gif"
    img.save(path)
    assert Image.open(path).mode == "P"
    pixels = load_image(path, 32).pixels.astype(int)
    assert np.abs(pixels[:, :15] - (255, 0, 0)).max() <= 5
    assert np.abs(pixels[:, 17:] - (0, 0, 255)).max() <= 5


def test_importing_the_decoder_changes_no_process_setting():
    import subprocess
    import sys

    code = (
        "import warnings, cv2; from PIL import Image\n"
        "before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters), cv2.getNumThreads())\n"
        "import catsdogs_batch.data.images, catsdogs_batch.inference.engine, catsdogs_batch.cli\n"
        "assert before == (Image.MAX_IMAGE_PIXELS, list(warnings.filters), cv2.getNumThreads()), 'changed'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_decompression_bomb_is_an_error_not_a_blow_up(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 10_000)).save(bomb)  # 200 megapixels in a few kilobytes
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(bomb, 32)
