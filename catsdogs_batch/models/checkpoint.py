"""The checkpoint format every stage reads, without Keras: a run folder `models/<run-name>/`
holds `model.keras` and `run.json` (or, for an export, `model.onnx` / `model.xml`), and
`run.json` says what the model expects (image size, preprocessing, class mapping) so that
prediction never has to guess. Importing this costs nothing: an export runs without TensorFlow.
Given a run folder, a command runs its fastest checked export (`export/<format>[-int8]/`, see
`fastest_export`) unless told `--runtime keras`."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ..cpu import has_vnni
from ..errors import UserError
from ..files import sha256, shown

MODEL_FILE = "model.keras"
# What a folder may hold: a trained checkpoint, or an export of one (`catsdogs export`).
MODEL_FILES = (MODEL_FILE, "model.onnx", "model.xml")
RUN_FILE = "run.json"
RUN_KIND = "catsdogs-batch model"
EXPORT_DIR = "export"  # a run folder's exports: EXPORT_DIR/<format>[-int8]/
# Those a command runs in place of a run folder's model.keras, fastest first, with the module
# that runs each (ONNX Runtime is an extra)
FAST_EXPORTS = {"openvino-int8": "openvino", "onnx-int8": "onnxruntime", "openvino": "openvino", "onnx": "onnxruntime"}
# What every predicting command takes as its model: one run folder or model file, or several
# (an ensemble: their p_dog averaged, see predictor.Predictor).
Models = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]
PREPROCESSING = (
    "catsdogs_batch.data.images.load_image: upright RGB, JPEG DCT scaling or box reduction to within "
    "2x of the target, then bilinear resize to image_size x image_size "
    "(aspect ratio not kept); uint8 0-255 pixels in, normalized inside the model"
)


@dataclass(frozen=True)
class Checkpoint:
    """A trained model on disk: where it is and what its run.json says."""

    model_path: Path
    run: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.model_path.parent

    @property
    def image_size(self) -> int:
        return int(self.run["image_size"])

    @property
    def is_export(self) -> bool:
        """True for an ONNX or OpenVINO export (run.json then has an `export` block)."""
        return self.model_path.suffix in (".onnx", ".xml")


def find_checkpoint(path: str | os.PathLike, runtime: str = "auto") -> Checkpoint:
    """Resolve a run folder or a model file of this project; refuse anything else clearly. Of a
    run folder, its `fastest_export` for `runtime` where it has one, unless `runtime` is keras."""
    path = Path(path)
    if path.is_dir():
        if runtime != "keras" and (path / MODEL_FILE).is_file():
            fast = fastest_export(path, runtime)
            if fast is not None:
                return fast
        model_path = next((path / f for f in MODEL_FILES if (path / f).exists()), path / MODEL_FILE)
    else:
        model_path = path
    if not model_path.exists():
        raise UserError(f"no model at {path} (expected a run folder with {MODEL_FILE} and {RUN_FILE})")
    run_path = model_path.parent / RUN_FILE
    try:
        run = json.loads(run_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{model_path} is not a catsdogs-batch model: no {RUN_FILE} beside it") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{run_path} is not valid JSON") from None
    if not isinstance(run, dict) or run.get("kind") != RUN_KIND or "image_size" not in run:
        raise UserError(f"{run_path} does not describe a catsdogs-batch model")
    size = run["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"{run_path}: image_size must be a positive whole number of pixels, not {size!r}")
    weights = model_path.with_suffix(".bin")
    if model_path.suffix == ".xml" and not weights.is_file():
        raise UserError(f"{model_path} is an OpenVINO model without its weights: {weights.name} is missing beside it")
    return Checkpoint(model_path, run)


def fastest_export(run: Path, runtime: str = "auto") -> Checkpoint | None:
    """The first of the run folder's FAST_EXPORTS (of `runtime` unless auto) that passed its
    check (not forced), was made from the run's model.keras as it is now, and this machine can
    run (its runtime installed; an int8 OpenVINO export quantized for VNNI, on a CPU with it);
    None where there is none. An export folder reached through a symbolic link is not used."""
    model_sha256 = None
    for name, module in FAST_EXPORTS.items():
        folder = run / EXPORT_DIR / name
        if runtime not in ("auto", name.split("-")[0]) or not folder.is_dir():
            continue
        if (run / EXPORT_DIR).is_symlink() or folder.is_symlink() or importlib.util.find_spec(module) is None:
            continue
        try:
            export = find_checkpoint(folder)
        except UserError:
            continue
        record = export.run.get("export")
        check = record.get("check") if isinstance(record, dict) else None
        if not (isinstance(check, dict) and check.get("passed") is True):
            continue
        if record.get("needs_vnni") and not has_vnni():
            continue
        model_sha256 = model_sha256 or sha256(run / MODEL_FILE)
        if record.get("source_sha256") == model_sha256:
            return export
    return None


def training_folder(checkpoint: Checkpoint) -> Path | None:
    """The labelled folder the run trained on, as its run.json records it (relative to the
    folder `train` ran in, if it was given so); None where it records none."""
    config = checkpoint.run.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    return Path(data) if isinstance(data, str) and data else None


def ensemble_name(models: Models) -> str:
    """A short name for default output folders: the run's (the folder's name; of a model file, its
    parent's), or the first run's and how many more."""
    paths = model_paths(models)
    run = paths[0] if paths[0].is_dir() else paths[0].parent
    return run.name + (f"+{len(paths) - 1}more" if len(paths) > 1 else "")


def model_paths(models: Models) -> list[Path]:
    return [Path(models)] if isinstance(models, (str, os.PathLike)) else [Path(m) for m in models]


def find_checkpoints(models: Models, runtime: str = "auto") -> list[Checkpoint]:
    """`find_checkpoint` of each model: one, or the different members of an ensemble (each
    takes its own image size, see predictor.Predictor)."""
    checkpoints = [find_checkpoint(path, runtime) for path in model_paths(models)]
    if not checkpoints:
        raise UserError("no model given")
    files = [c.model_path.resolve() for c in checkpoints]
    twice = next((c.model_path for c, f in zip(checkpoints, files) if files.count(f) > 1), None)
    if twice is not None:
        raise UserError(f"{twice} is given twice: an ensemble averages different models")
    if len(checkpoints) > 1:
        refuse_the_same_model(checkpoints)
    return checkpoints


def trained_model(checkpoint: Checkpoint) -> str | None:
    """The SHA-256 of the trained model behind a checkpoint: of its model.keras, or for an export
    the one its run.json records of the file it came from (None where none is recorded)."""
    if not checkpoint.is_export:
        try:
            return sha256(checkpoint.model_path)
        except OSError as e:
            raise UserError(f"cannot read {shown(checkpoint.model_path)}: {e.strerror or e}") from None
    export = checkpoint.run.get("export")
    source = export.get("source_sha256") if isinstance(export, dict) else None
    return source if isinstance(source, str) and source else None


def refuse_the_same_model(checkpoints: list[Checkpoint]) -> None:
    """An ensemble of a model and its own export, two exports of one model (fp32 and int8) or two
    copies of one file would average a model with itself: a one-line error naming both."""
    seen: dict[str, Checkpoint] = {}
    for checkpoint in checkpoints:
        model = trained_model(checkpoint)
        first = seen.setdefault(model, checkpoint) if model else checkpoint
        if first is checkpoint:
            continue
        a, b = shown(first.model_path), shown(checkpoint.model_path)
        if first.is_export and checkpoint.is_export:
            source = first.run["export"].get("source")
            how = f"{a} and {b} are exports of the same model" + (f" ({shown(source)})" if isinstance(source, str) else "")
        elif first.is_export or checkpoint.is_export:
            export, source = (a, b) if first.is_export else (b, a)
            how = f"{export} is an export of {source}, the same model"
        else:
            how = f"{a} and {b} are the same model (identical files)"
        raise UserError(f"{how}: an ensemble averages different models")


def latest_checkpoint(models_dir: Path = Path("models")) -> Path:
    """The most recently finished run under `models_dir`: the default model of every command."""
    finished = []
    for run_path in models_dir.glob(f"*/{RUN_FILE}"):
        try:
            run = json.loads(run_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(run, dict) and run.get("kind") == RUN_KIND and run.get("status") == "finished":
            finished.append(run_path)
    if not finished:
        raise UserError(f"no finished training run in {models_dir}/: run `catsdogs train` or pass --model")
    return max(finished, key=lambda p: p.stat().st_mtime).parent
