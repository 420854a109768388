"""The command line as a user meets it: one-line errors for every bad input (never a
traceback, never TensorFlow's start-up log), names printed escaped, exit statuses."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catsdogs_batch.cli import main
from catsdogs_batch.options import (
    AuditOptions, Augmentation, DownloadOptions, EngineOptions, EvaluateOptions, ExportOptions, FoldTraining,
    LabelOptions, Labelling, PredictOptions, ReviewOptions, SubmissionOptions, SubmitOptions, TrainOptions,
)  # fmt: skip

from conftest import write_image


def one_error_line(capsys) -> str:
    """stderr of the last command: exactly one line, which it returns."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    write_image(tmp_path / "photos" / "cat.1.jpg", 0)
    write_image(tmp_path / "photos" / "dog.1.jpg", 1)
    return tmp_path / "photos"


def test_bad_numbers_are_refused_by_the_parser(tiny_model, photos, tmp_path, capsys):
    predict = ["predict", str(tiny_model), str(photos), "--out", str(tmp_path / "r.csv")]
    for option, value in [("--batch-size", "0"), ("--shard-size", "-5"), ("--workers", "0"),
                          ("--runtime-threads", "-1"), ("--batch-size", "many")]:  # fmt: skip
        assert main(predict + [option, value]) == 2
        err = capsys.readouterr().err
        assert f"argument {option}:" in err and "Traceback" not in err
    for option, value in [("--epochs", "-1"), ("--image-size", "4"), ("--val-split", "1.5"), ("--dropout", "-0.1")]:
        assert main(["train", "--out", str(tmp_path / "run"), option, value]) == 2
        assert f"argument {option}:" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "run").exists()


def test_outputs_that_cannot_be_written_are_one_line(tiny_model, photos, tmp_path, capsys, monkeypatch):
    predict = ["predict", str(tiny_model), str(photos), "--no-progress", "--out"]
    (tmp_path / "folder.csv").mkdir()
    assert main(predict + [str(tmp_path / "folder.csv")]) == 1
    assert "is a folder" in one_error_line(capsys)

    (tmp_path / "notes.txt").write_text("mine")
    assert main(predict + [str(tmp_path / "notes.txt" / "r.csv")]) == 1  # a file where a folder must be
    line = one_error_line(capsys)
    assert line == f"catsdogs predict: error: cannot write {tmp_path / 'notes.txt' / 'r.csv'}: {tmp_path / 'notes.txt'} is a file, not a folder"
    assert (tmp_path / "notes.txt").read_text() == "mine"

    import catsdogs_batch.inference.shards as shards

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r.csv.parts"))

    monkeypatch.setattr(shards.PartsFolder, "finish", disk_full)
    assert main(predict + [str(tmp_path / "r.csv")]) == 1
    assert "No space left on device" in one_error_line(capsys)
    monkeypatch.undo()

    (tmp_path / "a-file").write_text("mine")
    assert main(["evaluate", str(tiny_model), str(photos), "--out", str(tmp_path / "a-file")]) == 1
    assert "is a file" in one_error_line(capsys) and (tmp_path / "a-file").read_text() == "mine"


def test_broken_models_are_one_line(tiny_model, photos, tmp_path, capsys):
    def model_folder(name: str, run: dict, files: dict[str, bytes]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps(run))
        for file, content in files.items():
            (folder / file).write_bytes(content)
        return folder

    run = json.loads((tiny_model / "run.json").read_text())
    cases = [
        (model_folder("random", run, {"model.keras": os.urandom(4096)}), "not a Keras model file"),
        (model_folder("size", run | {"image_size": "big"}, {"model.keras": b""}), "image_size must be"),
        (model_folder("openvino", run | {"export": {}}, {"model.xml": b"<net/>"}), "model.bin is missing"),
    ]
    for folder, message in cases:
        assert main(["predict", str(folder), str(photos), "--out", str(tmp_path / "r.csv")]) == 1
        assert message in one_error_line(capsys)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catsdogs_batch.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, errors="surrogateescape")  # fmt: skip


@pytest.mark.slow
def test_no_tensorflow_log_and_one_summary(tiny_model, photos, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((tiny_model / "run.json").read_text())
    (broken / "model.keras").write_bytes(os.urandom(4096))
    failed = run_cli("predict", str(broken), str(photos), "--out", str(tmp_path / "r.csv"))
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [f"catsdogs predict: error: cannot load {broken / 'model.keras'}: "
                                          "not a Keras model file (a .keras file is a zip archive)"]  # fmt: skip

    done = run_cli("predict", str(tiny_model), str(photos), "--out", str(tmp_path / "r.csv"), "--no-progress")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.count("2 images (") == 1
    assert b"\r" not in (tmp_path / "r.csv").read_bytes()  # one line ending for header and rows


@pytest.mark.slow
def test_file_names_are_printed_escaped(tiny_model, tmp_path):
    folder = tmp_path / "photos"
    write_image(folder / "cat.1.jpg", 0)
    (folder / "\x1b[2J\x1b]0;owned\x07.jpg").write_text("not an image")  # clears the screen, sets the title
    (folder / "line\nbreak.jpg").write_text("not an image")
    done = run_cli("label", str(tiny_model), str(folder), "--out", str(tmp_path / "t.csv"), "--no-progress")
    assert done.returncode == 0
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "\\x1b[2J\\x1b]0;owned\\x07.jpg: not an image file" in done.stdout
    assert "line\\nbreak.jpg: not an image file" in done.stdout


def test_label_exit_status_says_when_photos_were_left_unsorted(tiny_model, photos, tmp_path, capsys):
    sort = ["label", str(tiny_model), str(photos), "--sort-into", str(tmp_path / "s"), "--no-progress", "--out"]
    assert main(sort + [str(tmp_path / "a.csv")]) == 0
    capsys.readouterr()
    assert main(sort + [str(tmp_path / "b.csv")]) == 0  # the same copies: already there
    for placed in (tmp_path / "s").glob("*/*.jpg"):
        placed.write_bytes(b"another photo")
    assert main(sort + [str(tmp_path / "c.csv")]) == 3
    assert "2 readable images were not sorted" in capsys.readouterr().err


# Each command's options dataclasses (catsdogs_batch/options.py), where its defaults are kept;
# a field left at None falls back to the next class listed (audit's from-scratch FoldTraining).
OPTIONS_OF = {
    "download": (DownloadOptions,),
    "train": (TrainOptions, Augmentation),
    "predict": (PredictOptions, Labelling, EngineOptions),
    "submission": (SubmissionOptions, EngineOptions),
    "label": (LabelOptions, Labelling, EngineOptions),
    "evaluate": (EvaluateOptions, Labelling, EngineOptions),
    "export": (ExportOptions,),
    "review": (ReviewOptions,),
    "audit": (AuditOptions, FoldTraining, Labelling),
    "submit": (SubmitOptions,),
}


def help_of_options(text: str) -> dict[str, str]:
    """--long-option -> its help text, from `--help` printed on one line per option (wide COLUMNS)."""
    helps, option = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            invocation, _, help_text = line.strip().partition("  ")
            option = re.findall(r"--[\w-]+", invocation)[-1]
            helps[option] = help_text.strip()
        elif option and re.match(r" {3,}\S", line):
            helps[option] = (helps[option] + " " + line.strip()).strip()
        else:
            option = None
    return helps


def dataclass_default(classes: tuple[type, ...], name: str) -> object:
    """The first default of field `name` among `classes` that is a value (not None, not nested
    options such as PredictOptions.engine); None if none has one."""
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name == name and f.default is not dataclasses.MISSING:
                value = f.default
            elif f.name == name and f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                continue
            if value is not None and not dataclasses.is_dataclass(value):
                return value
    return None


# Options a command line does not set, each with why; every other field of a command's options
# has its flag (the field's name, or the --no- flag of a yes/no option on by default).
NOT_FLAGS = {
    "PredictOptions.files": "a training run's validation images: review's and the Python API's",
    "PredictOptions.made_from": "what label and evaluate add to the job",
    "Labelling.threshold": "predict, evaluate and audit keep 0.5: only label labels by another",
    "Labelling.uncertain": "only label labels images uncertain",
    "Labelling.both_above": "the audit checks no both (its out-of-fold classifiers are no cat-or-dog model)",
    "ExportOptions.seed": "the calibration sample's seed, fixed",
    "ExportOptions.min_agreement": "the export's check: what users see, fixed",
    "ExportOptions.max_log_loss_increase": "the export's check",
    "ExportOptions.max_accuracy_drop": "the export's check",
}
FLAG_NAMES = {
    "TrainOptions.calibrate": "--no-calibration", "ReviewOptions.open_browser": "--no-browser",
    "TrainOptions.fast_model": "--no-fast-model", "Labelling.content_check": "--no-content-check",
    "EvaluateOptions.folder": "labelled_folder",
}  # fmt: skip


@pytest.mark.parametrize("command", OPTIONS_OF)
def test_every_option_has_its_flag(command, capsys, monkeypatch):
    """A field added to an options dataclass reaches the command line (the engine's checksum was
    settable from Python only), unless NOT_FLAGS says why not."""
    monkeypatch.setenv("COLUMNS", "1000")
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    usage, flags = text.split("\n\n")[0], set(re.findall(r"--[\w-]+", text))
    for cls in OPTIONS_OF[command]:
        for f in dataclasses.fields(cls):
            name = f"{cls.__name__}.{f.name}"
            if dataclasses.is_dataclass(f.default_factory) or name in NOT_FLAGS:
                continue
            spelled = FLAG_NAMES.get(name, "--" + f.name.replace("_", "-"))
            positional = re.search(rf"\b{spelled if spelled.isidentifier() else f.name}\b", usage)
            assert spelled in flags or positional, f"{name} has no flag in catsdogs {command}"


@pytest.mark.parametrize("command", OPTIONS_OF)
def test_help_shows_each_default_once(command, capsys, monkeypatch):
    """Every option whose dataclass field has a default (a number, a word, a path) shows that value,
    once, in `catsdogs <command> --help`; none shows "default: None" or two defaults."""
    monkeypatch.setenv("COLUMNS", "1000")  # argparse's width: one line per option's help
    assert main([command, "--help"]) == 0
    helps = help_of_options(capsys.readouterr().out)
    checked = 0
    for option, text in helps.items():
        assert text.count("default:") <= 1 and "default: None" not in text, (option, text)
        value = dataclass_default(OPTIONS_OF[command], option.removeprefix("--").replace("-", "_"))
        if value is None or isinstance(value, bool):
            continue  # no default to show, or a flag (--tta, --overwrite)
        shown = re.search(r"default: ([^)]*)", text)
        assert shown and re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", shown[1]), (option, value, text)
        checked += 1
    assert checked, f"catsdogs {command} --help: no option with a default found in {sorted(helps)}"


def test_usage_errors_are_printed_escaped(capsys):
    assert main(["predict", "m", "f", "--out", "x.csv", "\x1b[31mred"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[31mred" in err


# What a command runs inside `download` here: matplotlib building its font cache on a first run,
# a library's warning and its logger's notice, beside a line of the command's own.
OTHER_LIBRARIES_TALK = """
import logging, sys, warnings
from catsdogs_batch import cli
from catsdogs_batch.kaggle import download

def talkative(options):
    import matplotlib.figure  # a first run: "generated new fontManager"
    warnings.warn("Skipping nested container: no matching group found in the saved file")
    logging.getLogger("tensorflow").warning("5 out of the last 5 calls triggered tf.function retracing")
    logging.getLogger("catsdogs_batch.kaggle.download").info("the command's own line")
    raise download.UserError("the command's own error")

download.download = talkative
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_command_prints_its_own_lines_only_unless_verbose(tmp_path):
    def run(*options: str) -> subprocess.CompletedProcess:
        (tmp_path / "matplotlib").mkdir(exist_ok=True)
        shutil.rmtree(tmp_path / "matplotlib")  # its font cache is built again: a first run
        return subprocess.run(
            [sys.executable, "-c", OTHER_LIBRARIES_TALK, *options, "download", "--archive", "a.zip"],
            capture_output=True, text=True, timeout=120, env=os.environ | {"MPLCONFIGDIR": str(tmp_path / "matplotlib")},
        )  # fmt: skip

    quiet = run()
    assert quiet.returncode == 1 and quiet.stdout == ""
    assert quiet.stderr.splitlines() == ["the command's own line", "catsdogs download: error: the command's own error"]
    verbose = run("-v")
    assert verbose.returncode == 1
    for chatter in ("generated new fontManager", "Skipping nested container", "tf.function retracing"):
        assert chatter in verbose.stderr


def command_that_imports_tensorflow_then(ending: str, imports: str = "tensorflow") -> str:
    """Python source that runs `catsdogs predict` with a command standing in for one that imports
    TensorFlow, then a native library writing straight to file descriptor 2, then ends as
    `ending` says."""
    return f"""
import os, sys, time
from catsdogs_batch import cli
from catsdogs_batch.cli import image_jobs

def run(args):
    import {imports}
    os.write(2, b"E0000 allocator: out of memory allocating 4096 MB\\n")
    {ending}

image_jobs.run_predict = run
sys.exit(cli.main(sys.argv[1:] + ["predict", "m", "photos", "--out", "r.csv"]))
"""


@pytest.mark.slow
def test_tensorflows_start_up_lines_are_kept_off_the_terminal_unless_verbose(tmp_path):
    """TensorFlow 2.21 writes its start-up lines to descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL
    says: held back during its import, and only then: a native library's words after it, the
    clue when something fails, reach the terminal."""
    source = command_that_imports_tensorflow_then("return 0")
    quiet = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "E0000 allocator: out of memory allocating 4096 MB\n"
    verbose = subprocess.run([sys.executable, "-c", source, "-v"], capture_output=True, text=True, cwd=tmp_path)
    assert verbose.returncode == 0 and verbose.stderr.endswith("4096 MB\n")
    assert len(verbose.stderr.splitlines()) > 1  # TensorFlow's own lines: what the quiet run held back


def test_a_failed_tensorflow_import_shows_what_it_wrote(tmp_path):
    """A TensorFlow that cannot start (a CPU without the instructions it was built for, a broken
    install): its words, held back during the import, are printed with the error."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\nos.write(2, b'F0000 The TensorFlow library was compiled to use AVX instructions\\n')\n"
        "raise ImportError('DLL load failed')\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", command_that_imports_tensorflow_then("return 0")], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{Path(__file__).parents[1]}"})  # fmt: skip
    assert done.returncode == 1
    assert "compiled to use AVX instructions" in done.stderr and "ImportError: DLL load failed" in done.stderr


def test_a_command_run_without_a_python_stderr_ends_as_it_would(monkeypatch):
    """sys.stderr None (a GUI or service that embeds the command): a finished command returns 0."""
    import catsdogs_batch.cli as cli
    from catsdogs_batch.cli import data_jobs

    monkeypatch.setattr(data_jobs, "run_download", lambda args: 0)
    monkeypatch.setattr(sys, "stderr", None)
    assert cli.main(["download"]) == 0


def test_sigterm_ends_a_command_at_once(tmp_path):
    """kill, timeout or a batch scheduler end a command as they end any process (status -15):
    the command installs no handler of its own."""
    started = tmp_path / "started"
    command = subprocess.Popen(
        [sys.executable, "-c", command_that_imports_tensorflow_then(f"open({str(started)!r}, 'w').close(); time.sleep(60)", imports="json")],
        cwd=tmp_path, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    command.send_signal(signal.SIGTERM)
    assert command.wait(timeout=30) == -signal.SIGTERM
