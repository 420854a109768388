"""training/callbacks.py: the Keras callbacks of a run (its best checkpoint, the state a resumed or next phase starts from)."""

from __future__ import annotations

import json

import keras


def test_a_new_phase_keeps_the_best_loss_but_not_the_patience_spent(tmp_path):
    from catsdogs_batch.training.callbacks import BestCheckpoint, CallbackState

    state = tmp_path / "callbacks.json"
    state.write_text(json.dumps({"phase": "head", "best": 0.3, "best_epoch": 1, "early_stopping_wait": 8,
                                 "plateau_wait": 3, "plateau_cooldown": 0}))  # fmt: skip
    for phase, waits in (("head", (8, 3)), ("fine-tune", (0, 0))):
        early_stopping = keras.callbacks.EarlyStopping(patience=8)
        plateau = keras.callbacks.ReduceLROnPlateau(patience=3)
        checkpoint = BestCheckpoint(tmp_path / "model.keras")
        callbacks = [early_stopping, plateau, CallbackState(state, phase, early_stopping, checkpoint, plateau)]
        for callback in callbacks:
            callback.on_train_begin()
        assert early_stopping.best == checkpoint.best == plateau.best == 0.3
        assert (early_stopping.wait, plateau.wait) == waits, phase
