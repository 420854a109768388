"""`catsdogs download` and the Kaggle submit call, run with the real kaggle client against a
stand-in Kaggle server on 127.0.0.1 (tests/kaggle_stub.py) or on archives made here."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kaggle_stub as kaggle_server
import pytest
from kaggle_stub import assert_no_secret, kaggle_home, kaggle_stub, point_client_at  # noqa: F401
from PIL import Image

from catsdogs_batch.kaggle.download import MANIFEST, DownloadOptions, download
from catsdogs_batch.errors import UserError
from catsdogs_batch.files import exclusive_lock
from catsdogs_batch.kaggle.api import download_competition_archive

from conftest import SAMPLE_ARCHIVE, SAMPLE_ARCHIVE_MISSING, assert_one_line_error, run_cli

REDUX = "dogs-vs-cats-redux-kernels-edition"
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("info_logs")  # the stage's INFO lines (what `catsdogs` prints on stderr) are captured


# --- building archives ---------------------------------------------------------------------


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 255 - shade, 128)).save(out, "JPEG")
    return out.getvalue()


def make_zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A zip of ENTRIES (name -> content), plus symbolic-link entries LINKS (name -> target)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name exactly as given
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return out.getvalue()


def competition_zip(
    test_folder: str = "test",
    csv: str = "sample_submission.csv",
    extra_train: dict[str, bytes] | None = None,
    extra_test: dict[str, bytes] | None = None,
    extra_outer: dict[str, bytes] | None = None,
) -> bytes:
    """Kaggle's layout: train.zip (train/cat.N.jpg, train/dog.N.jpg), test.zip (test/N.jpg), csv."""
    train = {f"train/{kind}.{i}.jpg": jpeg(i * 40) for kind in ("cat", "dog") for i in range(3)}
    test = {f"{test_folder}/{i}.jpg": jpeg(i * 60) for i in range(1, 5)}
    return make_zip(
        {
            "train.zip": make_zip({"train/": b"", **train, **(extra_train or {})}),
            f"{test_folder}.zip": make_zip({f"{test_folder}/": b"", **test, **(extra_test or {})}),
            csv: b"id,label\n1,0.5\n2,0.5\n3,0.5\n4,0.5\n",
            **(extra_outer or {}),
        }
    )


def assert_nothing_unpacked(data_dir: Path, competition: str = REDUX) -> None:
    """No complete-looking folder and no half-built hidden one is left (a partial download's
    marker may stay beside it: the next run resumes it)."""
    assert not (data_dir / competition).exists()
    marker = data_dir / f".{competition}.zip.catsdogs-download"
    assert not [p for p in data_dir.glob(f".{competition}.*") if p != marker or not (data_dir / f"{competition}.zip").exists()]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


# --- downloading through the stand-in Kaggle ------------------------------------------------


def test_download_from_kaggle_unpacks_train_test_csv_and_manifest(kaggle_stub, tmp_path, capsys, caplog):
    kaggle_stub.archives[REDUX] = competition_zip()
    data = tmp_path / "data"

    code, out, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert code == 0, err
    folder = data / REDUX
    assert files_in(folder / "train") == sorted(f"{k}.{i}.jpg" for k in ("cat", "dog") for i in range(3))
    assert files_in(folder / "test") == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert (folder / "sample_submission.csv").is_file()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source"] == "kaggle"
    assert (manifest["train_files"], manifest["test_files"]) == (6, 4)
    assert manifest["competition"] == REDUX and len(manifest["archive_sha256"]) == 64
    assert sorted(p.name for p in data.iterdir()) == [REDUX]  # the archive is gone once unpacked
    assert kaggle_stub.calls == [
        "POST /api/v1/competitions.CompetitionApiService/DownloadDataFiles",
        f"GET /files/{REDUX}.zip",
    ]
    assert_no_secret(kaggle_stub, out, err, caplog.text)

    # Already there: nothing is asked of Kaggle.
    code, _, _ = run_cli(["download", "--data-dir", str(data)], capsys)
    assert code == 0 and len(kaggle_stub.calls) == 2
    assert "nothing to do" in caplog.text


def test_wrong_key_is_reported_as_rejected_credentials(kaggle_stub, tmp_path, capsys, caplog, monkeypatch):
    kaggle_stub.archives[REDUX] = competition_zip()
    monkeypatch.setenv("KAGGLE_KEY", "not-the-key-0123456789")

    code, out, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, "rejected your credentials (HTTP 401)", "kaggle.json", "KAGGLE_KEY")
    assert "not-the-key-0123456789" not in out + err + caplog.text
    assert_nothing_unpacked(tmp_path / "data")


def test_rules_not_accepted_points_to_the_rules_page(kaggle_stub, tmp_path, capsys, caplog):
    kaggle_stub.archives[REDUX] = competition_zip()
    kaggle_stub.rules_not_accepted.add(REDUX)

    code, out, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, "HTTP 403", f"https://www.kaggle.com/competitions/{REDUX}/rules")
    assert_no_secret(kaggle_stub, out, err, caplog.text)
    assert_nothing_unpacked(tmp_path / "data")


def test_unreachable_kaggle_is_a_network_error(kaggle_home, tmp_path, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_client_at(f"http://127.0.0.1:{port}", monkeypatch)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret-key-for-network-test")

    code, out, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, f"cannot reach 127.0.0.1:{port}", "network")
    assert "secret-key-for-network-test" not in out + err
    assert "--archive ZIP_OR_FOLDER" in err  # what would serve instead (issue 31, item 10)

    mounted = tmp_path / "input" / REDUX  # as a Kaggle notebook mounts the competition
    mounted.mkdir(parents=True)
    monkeypatch.setenv("CATSDOGS_KAGGLE_INPUT", str(tmp_path / "input"))
    code, out, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)
    assert_one_line_error(code, err, f"cannot reach 127.0.0.1:{port}", f"mounted at {mounted}", f"--archive {mounted}")


def test_truncated_archive_is_refused_and_deleted(kaggle_stub, tmp_path, capsys):
    whole = competition_zip()
    kaggle_stub.archives[REDUX] = whole[: len(whole) * 2 // 3]  # a complete answer, a cut zip
    data = tmp_path / "data"

    code, _, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert_one_line_error(code, err, "not a zip file, or it was cut short")
    assert_nothing_unpacked(data)
    assert not (data / f"{REDUX}.zip").exists()  # a re-run downloads it afresh


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's waits between retries (2 s, 4 s, ... plus jitter), recorded instead of waited."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def padded_zip() -> bytes:
    """Over 2 MB, as the client writes what it received in 1 MB chunks."""
    return competition_zip(extra_outer={"padding.bin": random.randbytes(2_500_000)})


def test_connection_cut_short_is_resumed_by_the_clients_retry(kaggle_stub, backoffs, tmp_path, capsys, caplog):
    whole = padded_zip()
    kaggle_stub.archives[REDUX] = whole
    kaggle_stub.cut_short = 1  # the server closes the connection halfway through the file
    data = tmp_path / "data"

    code, out, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert code == 0, err
    assert len(backoffs) == 1 and len(kaggle_stub.ranges) == 1  # one retry, a Range request
    start = int(kaggle_stub.ranges[0].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start < len(whole)
    assert f"Retry 1/5: Resuming from {start} bytes" in caplog.text
    assert json.loads((data / REDUX / MANIFEST).read_text())["train_files"] == 6
    assert_no_secret(kaggle_stub, out, err, caplog.text)


def test_connection_cut_short_every_try_is_reported_then_resumed(kaggle_stub, backoffs, tmp_path, capsys, caplog):
    whole = padded_zip()
    kaggle_stub.archives[REDUX] = whole
    kaggle_stub.cut_short = 6  # the first answer and the client's 5 retries all stop halfway
    data = tmp_path / "data"

    with pytest.raises(UserError, match="was cut short .*run the command again"):
        download_competition_archive(REDUX, data)
    assert len(backoffs) == 5
    partial = (data / f"{REDUX}.zip").stat().st_size
    assert 0 < partial < len(whole)
    assert_nothing_unpacked(data)

    # The next run resumes where the first stopped (a Range request) and unpacks.
    code, out, err = run_cli(["download", "--data-dir", str(data)], capsys)
    assert code == 0, err
    assert kaggle_stub.ranges[-1] == f"bytes={partial}-"
    assert json.loads((data / REDUX / MANIFEST).read_text())["train_files"] == 6
    assert sorted(p.name for p in data.iterdir()) == [REDUX]  # neither the zip nor the client's marker stays
    assert_no_secret(kaggle_stub, out, err, caplog.text)


def test_data_served_in_another_format_is_one_clear_error(kaggle_stub, tmp_path, capsys):
    kaggle_stub.archives[REDUX] = competition_zip()
    kaggle_stub.extension = "7z"  # the client names the file after the URL it is sent to
    data = tmp_path / "data"

    code, _, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert_one_line_error(code, err, "not serve", f"{REDUX}.7z", "--archive")
    assert (data / f"{REDUX}.7z").read_bytes() == kaggle_stub.archives[REDUX]  # kept, not deleted
    assert_nothing_unpacked(data)


def test_archive_left_by_an_interrupted_unpack_is_reused(kaggle_stub, tmp_path, capsys, caplog):
    kaggle_stub.archives[REDUX] = competition_zip()
    data = tmp_path / "data"
    data.mkdir()
    (data / f"{REDUX}.zip").write_bytes(kaggle_stub.archives[REDUX])  # newer than Kaggle's

    code, _, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert code == 0, err
    assert "Using the archive already downloaded" in caplog.text
    assert json.loads((data / REDUX / MANIFEST).read_text())["test_files"] == 4
    # not downloaded by this run: the user's (or an earlier run's) archive is kept (issue 31, item 1)
    assert (data / f"{REDUX}.zip").read_bytes() == kaggle_stub.archives[REDUX]


def test_an_archive_a_cut_short_run_of_this_tool_left_is_removed_once_unpacked(kaggle_stub, tmp_path, capsys):
    from catsdogs_batch.kaggle.api import download_marker

    kaggle_stub.archives[REDUX] = competition_zip()
    data = tmp_path / "data"
    data.mkdir()
    (data / f"{REDUX}.zip").write_bytes(kaggle_stub.archives[REDUX])
    download_marker(data / f"{REDUX}.zip").touch()  # as a run of this tool leaves it

    code, _, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert code == 0, err
    assert sorted(p.name for p in data.iterdir()) == [REDUX]


def test_a_file_of_the_archives_name_that_was_there_is_never_deleted(kaggle_stub, tmp_path, capsys, caplog):
    """Not a zip, and not written by this run: refused as an archive, and kept."""
    kaggle_stub.archives[REDUX] = competition_zip()
    data = tmp_path / "data"
    data.mkdir()
    (data / f"{REDUX}.zip").write_bytes(b"my notes, not a zip" * 100)

    code, _, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert_one_line_error(code, err, "is not a zip this tool downloaded", "move it away")
    assert (data / f"{REDUX}.zip").read_bytes() == b"my notes, not a zip" * 100
    assert_nothing_unpacked(data)


# --- importing archives ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_ARCHIVE.is_file(), reason=SAMPLE_ARCHIVE_MISSING)
def test_import_sample_archive_then_noop_then_force(tmp_path, capsys, caplog):
    data = tmp_path / "data"
    argv = ["download", "--archive", str(SAMPLE_ARCHIVE), "--data-dir", str(data)]

    code, _, err = run_cli(argv, capsys)

    assert code == 0, err
    folder = data / REDUX
    train = files_in(folder / "train")
    assert len(train) == 5000 and {name.split(".")[0] for name in train} == {"cat", "dog"}
    assert len(files_in(folder / "test")) == 1000 and "1.jpg" in files_in(folder / "test")
    assert (folder / "sample_submission.csv").is_file()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert (manifest["train_files"], manifest["test_files"]) == (5000, 1000)
    assert manifest["source"] == str(SAMPLE_ARCHIVE.resolve())
    assert SAMPLE_ARCHIVE.is_file()  # an imported archive is never deleted

    before = {p: p.stat().st_mtime_ns for p in (folder, folder / MANIFEST, folder / "train" / train[0])}
    caplog.clear()
    code, _, _ = run_cli(argv, capsys)
    assert code == 0
    assert "nothing to do" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in before} == before

    code, _, err = run_cli([*argv, "--force"], capsys)
    assert code == 0, err
    assert len(files_in(folder / "train")) == 5000  # rebuilt from the archive
    assert json.loads((folder / MANIFEST).read_text())["archive_sha256"] == manifest["archive_sha256"]
    assert sorted(p.name for p in data.iterdir()) == [REDUX]  # no hidden work folders left


def test_2013_competition_test1_becomes_test(tmp_path, capsys):
    archive = tmp_path / "dogs-vs-cats.zip"
    archive.write_bytes(competition_zip(test_folder="test1", csv="sampleSubmission.csv"))
    data = tmp_path / "data"

    code, _, err = run_cli(
        ["download", "--competition", "dogs-vs-cats", "--archive", str(archive), "--data-dir", str(data)],
        capsys,
    )

    assert code == 0, err
    folder = data / "dogs-vs-cats"
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "sampleSubmission.csv", "test", "train"]
    assert files_in(folder / "test") == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert len(files_in(folder / "train")) == 6


HOSTILE = {  # where: the entry; {tmp} is the test's own folder, so a wrong write stays in it
    "zip-slip in the outer zip": ("extra_outer", "../evil.txt"),
    "absolute path in the outer zip": ("extra_outer", "{tmp}/abs/evil.txt"),
    "zip-slip in train.zip": ("extra_train", "train/../../evil.txt"),
    "absolute path in test.zip": ("extra_test", "{tmp}/abs/evil.txt"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused_and_writes_nothing(case, tmp_path, capsys):
    where, entry = HOSTILE[case]
    entry = entry.format(tmp=tmp_path)
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip(**{where: {entry: b"x"}}))
    data = tmp_path / "deep" / "data"

    code, _, err = run_cli(["download", "--archive", str(archive), "--data-dir", str(data)], capsys)

    assert_one_line_error(code, err, "refusing", repr(entry))
    assert_nothing_unpacked(data)
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize("where", ["outer", "train.zip"])
def test_symlink_entry_is_refused(where, tmp_path, capsys):
    link = {"train/cat.99.jpg": "/etc/passwd"}
    if where == "outer":
        outer = zipfile.ZipFile(io.BytesIO(competition_zip()))
        entries = {i.filename: outer.read(i) for i in outer.infolist()}
        content = make_zip(entries, links=link)
    else:
        content = make_zip(
            {
                "train.zip": make_zip({"train/cat.0.jpg": jpeg(1)}, links=link),
                "test.zip": make_zip({"test/1.jpg": jpeg(2)}),
            }
        )
    archive = tmp_path / "archive.zip"
    archive.write_bytes(content)
    data = tmp_path / "data"

    code, _, err = run_cli(["download", "--archive", str(archive), "--data-dir", str(data)], capsys)

    assert_one_line_error(code, err, "refusing", "'train/cat.99.jpg' is a symbolic link")
    assert_nothing_unpacked(data)


def corrupt_crc(content: bytes) -> bytes:
    """Flip one byte inside the stored sample csv, so only its CRC check can notice."""
    at = content.index(b"id,label") + 3
    return content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1 :]


def train_and_test(train: dict[str, bytes], test: dict[str, bytes]) -> bytes:
    return make_zip({"train.zip": make_zip(train), "test.zip": make_zip(test)})


NOT_THE_COMPETITION = {  # a sound zip with train and test parts, but other files in them
    "train has no cat/dog names": (
        train_and_test({"train/img1.jpg": jpeg(0)}, {"test/1.jpg": jpeg(1)}),
        "no cat.N.jpg and dog.N.jpg images",
    ),
    "train has cats only": (
        train_and_test({"train/cat.1.jpg": jpeg(0)}, {"test/1.jpg": jpeg(1)}),
        "no dog.N.jpg images",
    ),
    "test images are not numbered": (
        competition_zip(extra_test={"test/holiday.jpg": jpeg(9)}),
        "'test/holiday.jpg' is not named by a number",
    ),
    "test holds no images": (
        make_zip({"train/cat.1.jpg": jpeg(0), "train/dog.1.jpg": jpeg(1), "test/notes.txt": b"x"}),
        "no numbered test images",
    ),
}


BROKEN = {
    "not a zip": (b"<html>not a zip</html>", "not a zip file, or it was cut short"),
    "cut short": (competition_zip()[:-200], "not a zip file, or it was cut short"),
    "bad CRC": (corrupt_crc(competition_zip()), "'sample_submission.csv' fails its CRC check"),
    "no test": (
        make_zip({"train.zip": make_zip({"train/cat.0.jpg": jpeg(0)})}),
        "has no test.zip or test1.zip",
    ),
    "empty train": (
        make_zip({"train.zip": make_zip({}), "test.zip": make_zip({"test/1.jpg": jpeg(0)})}),
        "no train files",
    ),
}


@pytest.mark.parametrize("case", [*BROKEN, *NOT_THE_COMPETITION])
def test_broken_or_foreign_archive_is_one_clear_error(case, tmp_path, capsys):
    content, message = (BROKEN | NOT_THE_COMPETITION)[case]
    archive = tmp_path / "archive.zip"
    archive.write_bytes(content)
    data = tmp_path / "data"

    for _ in range(2):  # nothing left behind that a later run takes as ready
        code, _, err = run_cli(["download", "--archive", str(archive), "--data-dir", str(data)], capsys)
        assert_one_line_error(code, err, "archive.zip", message)
        assert_nothing_unpacked(data)


def test_missing_archive_file(tmp_path, capsys):
    args = ["download", "--archive", str(tmp_path / "nope.zip"), "--data-dir", str(tmp_path / "data")]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "archive not found", "nope.zip")


def test_a_folder_without_the_competition_is_one_clear_error(tmp_path, capsys):
    folder = tmp_path / "unpacked"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    args = ["download", "--archive", str(folder), "--data-dir", str(tmp_path / "data")]

    code, _, err = run_cli(args, capsys)

    assert_one_line_error(code, err, "unpacked has no train.zip or train/ (it holds: notes.txt)")
    assert_nothing_unpacked(tmp_path / "data")


def test_archive_that_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "archive.zip"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    for archive in (Path("/dev/null"), fifo):
        args = ["download", "--archive", str(archive), "--data-dir", str(tmp_path / "data")]
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err, str(archive))
        assert re.search(r"archive \S+ is not a regular file", err) and "not found" not in err, err
        assert_nothing_unpacked(tmp_path / "data")


def test_files_beside_the_test_images_are_tolerated(tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip(extra_test={"test/.DS_Store": b"", "test/Thumbs.db": b""}))
    data = tmp_path / "data"

    code, _, err = run_cli(["download", "--archive", str(archive), "--data-dir", str(data)], capsys)

    assert code == 0, err
    assert {"1.jpg", "2.jpg", "3.jpg", "4.jpg"} <= set(files_in(data / REDUX / "test"))


def test_failed_force_keeps_the_complete_folder(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(competition_zip())
    bad = tmp_path / "bad.zip"
    bad.write_bytes(competition_zip(extra_train={"train/../../evil.txt": b"x"}))
    data = tmp_path / "data"
    download(DownloadOptions(data_dir=data, archive=good))

    with pytest.raises(UserError, match="refusing"):
        download(DownloadOptions(data_dir=data, archive=bad, force=True))

    assert json.loads((data / REDUX / MANIFEST).read_text())["source"] == str(good)
    assert sorted(p.name for p in data.iterdir()) == [REDUX]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry below FOLDER: a file's bytes, None for a folder."""
    return {
        p.relative_to(folder).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_this_tool_did_not_write_is_refused_not_deleted(force, tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    notes = tmp_path / "data" / REDUX / "notes"
    notes.mkdir(parents=True)
    (notes / "important.txt").write_text("x")
    argv = ["download", "--archive", str(archive), "--data-dir", str(tmp_path / "data")]

    code, _, err = run_cli(argv + ["--force"] * force, capsys)

    assert_one_line_error(code, err, "cannot tell that it wrote it", "move it away")
    assert (notes / "important.txt").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [REDUX]


def test_force_keeps_what_the_user_added_to_a_downloaded_folder(tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    data = tmp_path / "data"
    argv = ["download", "--archive", str(archive), "--data-dir", str(data), "--force"]
    assert run_cli(argv, capsys)[0] == 0
    folder = data / REDUX
    (folder / "notes").mkdir()  # an empty folder of the user's is theirs too
    (folder / "train" / "cat.0.jpg.txt").write_text("my note")
    before = tree(folder)

    code, _, err = run_cli(argv, capsys)

    assert_one_line_error(code, err, "holds files this tool did not write (notes and 1 more)")
    assert tree(folder) == before
    shutil.rmtree(folder / "notes")
    (folder / "train" / "cat.0.jpg.txt").unlink()
    (folder / "train" / "cat.0.jpg").write_bytes(b"edited by hand")  # still a file the tool wrote
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert (folder / "train" / "cat.0.jpg").read_bytes() != b"edited by hand"


def test_a_link_in_place_of_the_folder_or_a_file_is_refused(tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    data = tmp_path / "data"
    argv = ["download", "--archive", str(archive), "--data-dir", str(data), "--force"]
    assert run_cli(argv, capsys)[0] == 0
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"mine")
    (data / REDUX / "test" / "1.jpg").unlink()
    (data / REDUX / "test" / "1.jpg").symlink_to(outside)

    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "did not write (test/1.jpg)")

    elsewhere = tmp_path / "elsewhere"
    (data / REDUX).rename(elsewhere)
    (data / REDUX).symlink_to(elsewhere)
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "is a link")
    assert outside.read_bytes() == b"mine" and (elsewhere / MANIFEST).is_file()


def test_an_empty_folder_is_filled(tmp_path):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    (tmp_path / "data" / REDUX).mkdir(parents=True)

    folder = download(DownloadOptions(data_dir=tmp_path / "data", archive=archive))

    assert (folder / MANIFEST).is_file() and len(files_in(folder / "train")) == 6
    assert "train/cat.0.jpg" in json.loads((folder / MANIFEST).read_text())["files"]


# --- importing competition folders (as Kaggle mounts them under /kaggle/input/<competition>/) ---

LAYOUTS = {  # competition -> (test folder, sample submission) as Kaggle ships them
    REDUX: ("test", "sample_submission.csv"),
    "dogs-vs-cats": ("test1", "sampleSubmission.csv"),
}


def competition_folder(folder: Path, competition: str = REDUX, unpacked: bool = False) -> Path:
    """FOLDER laid out as Kaggle mounts COMPETITION: its inner zips and csv, or (UNPACKED) the
    same with train/ and test/ (test1/) folders of images in place of the zips."""
    test_folder, csv = LAYOUTS[competition]
    outer = zipfile.ZipFile(io.BytesIO(competition_zip(test_folder=test_folder, csv=csv)))
    folder.mkdir(parents=True)
    for info in outer.infolist():
        if unpacked and info.filename.endswith(".zip"):
            zipfile.ZipFile(io.BytesIO(outer.read(info))).extractall(folder)
        else:
            (folder / info.filename).write_bytes(outer.read(info))
    return folder


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """FOLDER and all below it without write permission; on leaving, the tree is asserted
    unchanged byte for byte (root ignores the permissions) and made writable again."""
    before = tree(folder)
    paths = [folder, *folder.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        yield
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)
    assert tree(folder) == before


@pytest.mark.parametrize("unpacked", [False, True], ids=["zipped", "unpacked"])
@pytest.mark.parametrize("competition", list(LAYOUTS))
def test_import_a_read_only_competition_folder_then_noop(competition, unpacked, tmp_path, capsys, caplog):
    source = competition_folder(tmp_path / competition, competition, unpacked)
    data = tmp_path / "data"
    argv = ["download", "--competition", competition, "--archive", str(source), "--data-dir", str(data)]

    with read_only(source):
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
        folder = data / competition
        _, csv = LAYOUTS[competition]
        assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST, csv, "test", "train"])
        assert files_in(folder / "test") == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
        assert len(files_in(folder / "train")) == 6
        manifest = json.loads((folder / MANIFEST).read_text())
        assert manifest["source"] == str(source.resolve())
        assert (manifest["train_files"], manifest["test_files"]) == (6, 4)

        before = tree(data)
        caplog.clear()
        code, _, err = run_cli(argv, capsys)  # the same folder again: nothing to do
        assert code == 0, err
        assert "nothing to do" in caplog.text
        assert tree(data) == before


@pytest.mark.slow
@pytest.mark.parametrize("unpacked", [False, True], ids=["zipped", "unpacked"])
def test_import_the_sample_as_a_kaggle_folder(unpacked, sample_dir, tmp_path, capsys):
    if unpacked:
        source = sample_dir  # train/, test/ and sample_submission.csv
    else:
        source = tmp_path / REDUX
        with zipfile.ZipFile(SAMPLE_ARCHIVE) as outer:
            outer.extractall(source)  # train.zip, test.zip, sample_submission.csv
    data = tmp_path / "data"

    with read_only(source):
        code, _, err = run_cli(["download", "--archive", str(source), "--data-dir", str(data)], capsys)

    assert code == 0, err
    manifest = json.loads((data / REDUX / MANIFEST).read_text())
    assert (manifest["train_files"], manifest["test_files"]) == (5000, 1000)
    assert len(files_in(data / REDUX / "train")) == 5000


def test_kaggle_input_is_used_without_credentials(kaggle_home, tmp_path, capsys, caplog, monkeypatch):
    kaggle_input = tmp_path / "kaggle" / "input"
    competition_folder(kaggle_input / REDUX)
    monkeypatch.setenv("CATSDOGS_KAGGLE_INPUT", str(kaggle_input))
    data = tmp_path / "data"

    with read_only(kaggle_input):
        code, _, err = run_cli(["download", "--data-dir", str(data)], capsys)

    assert code == 0, err
    assert f"using {kaggle_input / REDUX}" in caplog.text and "CATSDOGS_KAGGLE_INPUT" in caplog.text
    assert json.loads((data / REDUX / MANIFEST).read_text())["source"] == str((kaggle_input / REDUX).resolve())
    assert len(files_in(data / REDUX / "train")) == 6


def test_without_credentials_or_kaggle_input_the_error_stays(kaggle_home, tmp_path, capsys, monkeypatch):
    (tmp_path / "kaggle" / "input" / "dogs-vs-cats").mkdir(parents=True)  # another competition only
    monkeypatch.setenv("CATSDOGS_KAGGLE_INPUT", str(tmp_path / "kaggle" / "input"))

    code, _, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, "no Kaggle credentials", "--archive ZIP_OR_FOLDER")


LINKS_OUT = {  # what is replaced by a link to a file outside the source folder
    "an image": (True, "test/1.jpg"),
    "an inner zip": (False, "train.zip"),
    "the test folder": (True, "test"),
}


@pytest.mark.parametrize("case", list(LINKS_OUT))
def test_a_link_out_of_the_source_folder_is_refused(case, tmp_path, capsys):
    unpacked, name = LINKS_OUT[case]
    source = competition_folder(tmp_path / "source", unpacked=unpacked)
    outside = tmp_path / "outside"
    (source / name).rename(outside)
    (source / name).symlink_to(outside)
    data = tmp_path / "data"

    code, _, err = run_cli(["download", "--archive", str(source), "--data-dir", str(data)], capsys)

    assert_one_line_error(code, err, f"refusing source: {name!r} is a link that leads out of it")
    assert_nothing_unpacked(data)


def test_a_link_that_stays_inside_is_followed(tmp_path, capsys):
    source = competition_folder(tmp_path / "source", unpacked=True)
    (source / "test").rename(source / "images")
    (source / "test").symlink_to("images")

    code, _, err = run_cli(["download", "--archive", str(source), "--data-dir", str(tmp_path / "data")], capsys)

    assert code == 0, err
    assert files_in(tmp_path / "data" / REDUX / "test") == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]


def test_hostile_or_broken_inner_zips_of_a_folder_are_refused(tmp_path, capsys):
    source = competition_folder(tmp_path / "source")
    data = tmp_path / "data"
    argv = ["download", "--archive", str(source), "--data-dir", str(data)]
    good_train = (source / "train.zip").read_bytes()
    (source / "train.zip").write_bytes(make_zip({"train/cat.0.jpg": jpeg(0), "train/../../evil.txt": b"x"}))

    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "refusing source/train.zip", "'train/../../evil.txt'")

    (source / "train.zip").write_bytes(good_train)
    (source / "test.zip").write_bytes((source / "test.zip").read_bytes()[:-100])
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "source/test.zip is not a zip file, or it was cut short")
    assert_nothing_unpacked(data)
    assert not list(tmp_path.rglob("evil.txt"))


def test_an_unpacked_folder_is_checked_like_an_archive(tmp_path, capsys):
    source = competition_folder(tmp_path / "source", unpacked=True)
    (source / "test" / "holiday.jpg").write_bytes(jpeg(9))

    code, _, err = run_cli(["download", "--archive", str(source), "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, "source is not the competition's data", "'test/holiday.jpg' is not named by a number")
    assert_nothing_unpacked(tmp_path / "data")


def test_a_source_folder_overlapping_the_data_folder_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    source = competition_folder(data / REDUX, unpacked=True)  # unpacked by hand where download puts it
    before = tree(source)

    code, _, err = run_cli(["download", "--archive", str(source), "--data-dir", str(data)], capsys)

    assert_one_line_error(code, err, "is where download unpacks to")
    assert tree(source) == before


# --- one run at a time in a competition folder ---------------------------------------------------


def test_a_second_download_is_refused_while_the_first_downloads(kaggle_stub, monkeypatch, tmp_path, capsys):
    kaggle_stub.archives[REDUX] = competition_zip()
    data = tmp_path / "data"
    reached, release = threading.Event(), threading.Event()
    answer = kaggle_server._Handler.do_GET

    def held_answer(handler: kaggle_server._Handler) -> None:
        """The first archive answer waits until the test lets it go."""
        if not reached.is_set():
            reached.set()
            release.wait(60)
        answer(handler)

    monkeypatch.setattr(kaggle_server._Handler, "do_GET", held_answer)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(download, DownloadOptions(data_dir=data))
        try:
            assert reached.wait(60)  # the first run is downloading
            code, _, err = run_cli(["download", "--data-dir", str(data)], capsys)
        finally:
            release.set()
        folder = first.result(timeout=60)

    assert_one_line_error(code, err, f"another catsdogs run is writing {data / REDUX} ", "wait for it")
    assert kaggle_stub.calls == [  # the first run's: the second asked Kaggle for nothing
        "POST /api/v1/competitions.CompetitionApiService/DownloadDataFiles",
        f"GET /files/{REDUX}.zip",
    ]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert (manifest["train_files"], manifest["test_files"]) == (6, 4)
    assert sorted(p.name for p in data.iterdir()) == [REDUX]  # the download was unpacked, then deleted


def test_a_work_folder_is_removed_only_when_no_live_run_holds_the_folder(tmp_path, capsys, caplog):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    data = tmp_path / "data"
    work = data / f".{REDUX}.partial-live"  # a live run's work folder, half unpacked
    (work / "train").mkdir(parents=True)
    (work / "train" / "cat.0.jpg").write_bytes(jpeg(0))
    before = tree(work)
    argv = ["download", "--archive", str(archive), "--data-dir", str(data)]

    with exclusive_lock(data / f".{REDUX}.lock", REDUX):  # held the way a live run holds it
        code, _, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, f"another catsdogs run is writing {data / REDUX} ")
        assert tree(work) == before and not (data / REDUX).exists()

    # That run has ended without clearing up (the kernel drops a dead run's lock): a leftover now.
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"Removing {work}, left by an interrupted run" in caplog.text
    assert sorted(p.name for p in data.iterdir()) == [REDUX]


HELD_RUN = """
import sys, time
from pathlib import Path
from catsdogs_batch.cli import main
from catsdogs_batch.kaggle import archives

reached, release = Path(sys.argv[1]), Path(sys.argv[2])
extract = archives.extract

def held_extract(members, dest, label, part):
    if part == "test":  # train/ is unpacked in the work folder by now
        reached.touch()
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return extract(members, dest, label, part)

archives.extract = held_extract
sys.exit(main(sys.argv[3:]))
"""


class HeldRun:
    """`catsdogs ARGV` in a process of its own that waits where it starts unpacking test/ (its
    train/ unpacked in its work folder) until `go_on`, which returns its exit status and stderr."""

    def __init__(self, argv: list[str], folder: Path) -> None:
        folder.mkdir()
        self.reached, self.release = folder / "reached", folder / "release"
        self.process = subprocess.Popen(
            [sys.executable, "-c", HELD_RUN, str(self.reached), str(self.release), *argv],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip

    def wait_until_held(self) -> None:
        deadline = time.monotonic() + 60
        while not self.reached.exists():
            assert self.process.poll() is None, self.process.communicate()[1]
            assert time.monotonic() < deadline, "the run never got to test/"
            time.sleep(0.02)

    def go_on(self) -> tuple[int, str]:
        self.release.touch()
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


@pytest.fixture
def held_run(tmp_path: Path) -> Iterator[Callable[[list[str]], HeldRun]]:
    """Start a HeldRun and wait until it is held; any still running at the end is killed."""
    runs: list[HeldRun] = []

    def start(argv: list[str]) -> HeldRun:
        runs.append(HeldRun(argv, tmp_path / f"held-{len(runs)}"))
        runs[-1].wait_until_held()
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


def catsdogs(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "catsdogs_batch.cli", *argv], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_two_imports_into_one_folder_at_once_the_second_is_refused(held_run, tmp_path):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    source = competition_folder(tmp_path / "source", unpacked=True)  # another import, into the same --data-dir
    data = tmp_path / "data"
    first = held_run(["download", "--archive", str(archive), "--data-dir", str(data)])
    (work,) = data.glob(f".{REDUX}.partial-*")  # the first run's work folder
    before = tree(work)

    second = catsdogs(["download", "--archive", str(source), "--data-dir", str(data)])

    assert_one_line_error(second.returncode, second.stderr, f"another catsdogs run is writing {data / REDUX} ")
    assert tree(work) == before and not (data / REDUX).exists()
    code, err = first.go_on()
    assert code == 0, err
    assert f"{data / REDUX} is ready: 6 train and 4 test files" in err
    manifest = json.loads((data / REDUX / MANIFEST).read_text())
    assert manifest["source"] == str(archive.resolve())
    assert (manifest["train_files"], manifest["test_files"]) == (6, 4)
    assert (len(files_in(data / REDUX / "train")), len(files_in(data / REDUX / "test"))) == (6, 4)
    assert sorted(p.name for p in data.iterdir()) == [REDUX]


@pytest.mark.slow
def test_ready_is_said_of_the_files_that_are_there(held_run, tmp_path):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    data = tmp_path / "data"
    first = held_run(["download", "--archive", str(archive), "--data-dir", str(data)])
    (work,) = data.glob(f".{REDUX}.partial-*")
    (work / "train" / "cat.1.jpg").unlink()  # another program removes a file while it unpacks

    code, err = first.go_on()

    assert code == 1 and "is ready" not in err and "Traceback" not in err
    error = err.strip().splitlines()[-1]  # after the lines of its progress
    assert error.startswith("catsdogs download: error: 1 of the 11 files unpacked into ")
    assert "are gone (train/cat.1.jpg)" in error and "run the command again" in error
    assert_nothing_unpacked(data)


@pytest.mark.slow
def test_a_run_killed_midway_leaves_a_work_folder_the_next_run_removes(held_run, tmp_path, capsys, caplog):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    data = tmp_path / "data"
    argv = ["download", "--archive", str(archive), "--data-dir", str(data)]
    first = held_run(argv)
    (work,) = data.glob(f".{REDUX}.partial-*")
    first.process.kill()  # kill -9: nothing is cleared up, the kernel drops its lock
    first.process.communicate()

    code, _, err = run_cli(argv, capsys)

    assert code == 0, err
    assert f"Removing {work}, left by an interrupted run" in caplog.text
    assert json.loads((data / REDUX / MANIFEST).read_text())["train_files"] == 6
    assert sorted(p.name for p in data.iterdir()) == [REDUX]


def test_a_data_dir_written_with_dot_dot_is_unpacked_into(tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    (tmp_path / "elsewhere").mkdir()

    code, _, err = run_cli(["download", "--archive", str(archive), "--data-dir", str(tmp_path / "elsewhere" / ".." / "data")], capsys)

    assert code == 0, err
    assert len(files_in(tmp_path / "data" / REDUX / "train")) == 6


# --- scripts/quickstart.sh ----------------------------------------------------------------------


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of scripts/quickstart.sh in a repository root of its own, whose .venv is this
    Python: the script installs nothing, and a path it resolves against its root stays in tmp."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("quickstart.sh", "_venv.sh"):
        shutil.copy(REPO / "scripts" / name, root / "scripts" / name)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    catsdogs = bin_dir / "catsdogs"
    catsdogs.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m catsdogs_batch.cli "$@"\n')
    catsdogs.chmod(0o755)
    (root / ".venv" / ".catsdogs-installed-").touch()  # with no setup.cfg, never out of date
    return root / "scripts" / "quickstart.sh"


@pytest.mark.parametrize(
    "args",
    [
        ["--archive", "relative/missing.zip", "--data-dir=relative/data"],
        ["--archive=relative/missing.zip", "--data-dir", "relative/data"],
    ],
)
def test_quickstart_resolves_relative_paths_from_where_it_is_run(args, quickstart, tmp_path):
    caller = tmp_path / "caller"
    caller.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    result = subprocess.run(
        ["bash", str(quickstart), *args], cwd=caller, env=env, capture_output=True, text=True, timeout=60
    )

    missing = caller / "relative" / "missing.zip"
    assert_one_line_error(result.returncode, result.stderr, f"archive not found: {missing}")
    assert (caller / "relative" / "data").is_dir()  # --data-dir too, not below the repository
    assert not (quickstart.parents[1] / "relative").exists()


def test_unpacked_data_follows_the_umask(tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(competition_zip())
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(["download", "--archive", str(archive), "--data-dir", str(tmp_path / "data")], capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    folder = tmp_path / "data" / REDUX
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # readable by the team, as mkdir would make it
    assert stat.S_IMODE((folder / "manifest.json").stat().st_mode) == 0o644
