"""What the tool writes: permissions the umask gives, one writer per table and one move per folder."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from catsdogs_batch.cli import main
from catsdogs_batch.errors import UserError
from catsdogs_batch.files import exclusive_lock

from conftest import write_image


@pytest.fixture
def umask():
    """Set a umask for the test; the old one comes back afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_results_follow_the_umask(tiny_model, tmp_path, umask, mask, mode):
    write_image(tmp_path / "photos" / "cat.1.jpg", 0)
    umask(mask)
    out = tmp_path / "shared" / "r.csv"
    assert main(["predict", str(tiny_model), str(tmp_path / "photos"), "--out", str(out), "--no-progress"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_a_lock_is_held_by_one_run_and_dies_with_it(tmp_path):
    lock = tmp_path / "t.csv.lock"
    with exclusive_lock(lock, "t.csv"):
        with pytest.raises(UserError, match="another catsdogs run is writing t.csv"):
            with exclusive_lock(lock, "t.csv"):
                pass
    assert not lock.exists()

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from catsdogs_batch.files import exclusive_lock
        with exclusive_lock({str(lock)!r}, "t.csv"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(UserError):
        with exclusive_lock(lock, "t.csv"):
            pass
    holder.kill()  # kill -9: the lock file stays, but no one holds it
    holder.wait()
    assert lock.exists()
    with exclusive_lock(lock, "t.csv"):
        pass


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_link_planted_at_the_lock_path_is_refused_not_followed(tmp_path, target_exists):
    """Someone who can write the table's folder puts `t.csv.lock` -> a file of yours elsewhere:
    following it would create that file or lock it, so the run stops in one line and touches
    neither the file nor the link."""
    elsewhere = tmp_path / "elsewhere" / "precious.txt"
    elsewhere.parent.mkdir()
    if target_exists:
        elsewhere.write_text("keep me")
        os.utime(elsewhere, (1_000_000_000, 1_000_000_000))
    lock = tmp_path / "t.csv.lock"
    lock.symlink_to(elsewhere)
    with pytest.raises(UserError) as raised:
        with exclusive_lock(lock, "t.csv"):
            pass
    assert "\n" not in str(raised.value) and "is a link" in str(raised.value)
    assert lock.is_symlink()
    if target_exists:
        assert elsewhere.read_text() == "keep me" and elsewhere.stat().st_mtime == 1_000_000_000
    else:
        assert not elsewhere.exists()


def test_a_folder_lock_is_shared_or_held_alone_and_writes_nothing(tmp_path, monkeypatch, caplog):
    from catsdogs_batch import files
    from catsdogs_batch.files import folder_lock

    with folder_lock(tmp_path, "busy", shared=True), folder_lock(tmp_path, "busy", shared=True):
        with pytest.raises(UserError, match="^busy$"):
            with folder_lock(tmp_path, "busy"):
                pass
    with folder_lock(tmp_path, "busy"):
        with pytest.raises(UserError, match="^busy$"):
            with folder_lock(tmp_path, "busy", shared=True):
                pass
    assert os.listdir(tmp_path) == []

    def no_locks_here(fd, operation):  # NFS: flock on a folder opened for reading
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(files.fcntl, "flock", no_locks_here)
    with folder_lock(tmp_path, "busy"):  # goes on, as it did before there was a lock
        pass
    assert "cannot lock the folder" in caplog.text


def test_names_that_differ_never_print_alike(tmp_path, capsys):
    """Issue 31, item 11: a file named backslash-x-f-f and one named by the byte 0xFF printed
    alike. A name's backslashes are doubled once, however many times its line is made safe."""
    from catsdogs_batch.cli import say, say_error
    from catsdogs_batch.files import printable, shown

    literal, byte = "\\xff.jpg", os.fsdecode(b"\xff.jpg")
    assert (shown(literal), shown(byte)) == ("\\\\xff.jpg", "\\xff.jpg")
    assert shown("a\\b\nc") == "a\\\\b\\nc"  # the backslash doubled, the newline escaped
    say(f"sorted {shown(literal)} and {shown(byte)}")
    say_error("label", f"cannot place {shown(literal)}")
    printed = capsys.readouterr()
    assert printed.out == "sorted \\\\xff.jpg and \\xff.jpg\n"
    assert printed.err == "catsdogs label: error: cannot place \\\\xff.jpg\n"
    assert printable(shown(literal)) == shown(literal)
