"""The Keras callbacks of a training run that trains epochs: the best-only checkpoint (written
atomically), the head phase's hand-over to fine-tuning, history.csv, the state that lets a
resumed run behave as if it never stopped, and the one-line progress of the whole run."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import keras
import numpy as np

from ..files import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

PHASE_FILE = "phase.json"  # in BACKUP_DIR: {"phase": "fine-tune"} once the head is trained
HEAD_WEIGHTS = "head.weights.h5"  # in BACKUP_DIR: the best head, where fine-tuning starts


def save_atomically(save, path: Path, suffix: str) -> None:
    """`save(file)` into a temporary file renamed onto `path`: a kill never leaves half a model.
    Keras insists on the file's suffix (`.keras`, `.weights.h5`)."""
    with atomic_path(path) as tmp:
        saved = tmp.with_name(tmp.name + suffix)
        try:
            save(saved)
            saved.replace(tmp)
        finally:
            saved.unlink(missing_ok=True)


class BestCheckpoint(keras.callbacks.Callback):
    """The model of the epoch with the lowest val_loss so far, replacing `path` atomically
    (Keras's ModelCheckpoint writes over the file in place)."""

    def __init__(self, path: Path, best: float = np.inf):
        super().__init__()
        self.path, self.best = path, best

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if loss is not None and loss < self.best:
            self.best = float(loss)
            save_atomically(self.model.save, self.path, ".keras")


class HeadDone(keras.callbacks.Callback):
    """When the head phase ends, before its backup is removed: the best head so far (the
    checkpoint) saved where fine-tuning starts, and the phase marked done."""

    def __init__(self, backup: Path, best_model: Path):
        super().__init__()
        self.backup, self.best_model = backup, best_model

    def on_train_end(self, logs=None):
        self.model.load_weights(self.best_model)
        save_atomically(self.model.save_weights, self.backup / HEAD_WEIGHTS, ".weights.h5")
        atomic_write_json(self.backup / PHASE_FILE, {"phase": "fine-tune"})


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras's CSVLogger (a header, then a row per epoch; appended to by a later phase or a
    resumed run) with "\\n" line ends, like every other table here, where it writes "\\r\\n"."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.csv_file = _LineFeeds(self.csv_file)


class _LineFeeds:
    """A text file whose writes have their "\\r\\n" (csv's excel dialect, CSVLogger's) turned into "\\n"."""

    def __init__(self, file):
        self._file = file

    def write(self, text: str) -> int:
        return self._file.write(text.replace("\r\n", "\n"))

    def __getattr__(self, name):
        return getattr(self._file, name)


class CallbackState(keras.callbacks.Callback):
    """Saves what BackupAndRestore does not: the best val_loss and patience counters of
    EarlyStopping, the checkpoint and ReduceLROnPlateau, so a resumed run behaves as if it had
    never stopped. A new phase keeps only the best val_loss: its patience starts afresh."""

    def __init__(self, path: Path, phase: str, early_stopping, checkpoint, plateau):
        super().__init__()
        self.path, self.phase = path, phase
        self.early_stopping, self.checkpoint, self.plateau = early_stopping, checkpoint, plateau

    def on_train_begin(self, logs=None):
        if not self.path.exists():
            return
        state = json.loads(self.path.read_text())
        self.early_stopping.best = self.checkpoint.best = self.plateau.best = state["best"]
        if state.get("phase", self.phase) != self.phase:
            return
        self.early_stopping.wait = state["early_stopping_wait"]
        self.early_stopping.best_epoch = state["best_epoch"]
        self.plateau.wait = state["plateau_wait"]
        self.plateau.cooldown_counter = state["plateau_cooldown"]

    def on_epoch_end(self, epoch, logs=None):
        atomic_write_json(
            self.path,
            {
                "phase": self.phase,
                "best": float(self.checkpoint.best),
                "best_epoch": self.early_stopping.best_epoch,
                "early_stopping_wait": self.early_stopping.wait,
                "plateau_wait": self.plateau.wait,
                "plateau_cooldown": self.plateau.cooldown_counter,
            },
        )


class RunProgress(keras.callbacks.Callback):
    """After each epoch, one line on the whole run (every phase; Keras's bar shows only the epoch):
    time elapsed and, at the mean time per epoch so far, how long the remaining epochs take."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.started, self.done = epochs, time.monotonic(), 0

    def on_epoch_end(self, epoch, logs=None):
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = self.epochs - (epoch + 1)
        log.info(
            "epoch %d/%d: %s elapsed, at most %s left for the %d epochs to go (early stopping may end sooner)",
            epoch + 1, self.epochs, _duration(elapsed), _duration(elapsed / self.done * left), left,
        )


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
