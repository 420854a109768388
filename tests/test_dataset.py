"""data/dataset.py: the split of a labelled folder with its corrections, and decoding it for training."""

from __future__ import annotations

import logging

import pytest

from conftest import write_image


def test_corrections_leave_the_validation_split_where_it_was(kaggle_train_folder, tmp_path):
    """The split is drawn before the corrections apply: a skip or a changed label moves no
    other image between training and validation."""
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.data.dataset import corrected_split

    plain_train, plain_val, _ = corrected_split(TrainOptions(data=kaggle_train_folder))
    corrections = tmp_path / "corrections.csv"
    skipped, changed = plain_val[0].path, plain_train[0].path
    corrections.write_text(f"path,label\n{skipped},skip\n{changed},{'cat' if plain_train[0].label else 'dog'}\n")
    train, val, record = corrected_split(TrainOptions(data=kaggle_train_folder, corrections=corrections))
    assert [i.path for i in val] == [i.path for i in plain_val if i.path != skipped]
    assert [i.path for i in train] == [i.path for i in plain_train]
    assert train[0].label != plain_train[0].label and (record["changed"], record["skipped"]) == (1, 1)


def test_corrections_that_skip_the_validation_cats_are_refused(kaggle_train_folder, tmp_path):
    from catsdogs_batch.errors import UserError
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.data.dataset import corrected_split

    _, plain_val, _ = corrected_split(TrainOptions(data=kaggle_train_folder))
    cats = [item.path for item in plain_val if item.path.startswith("cat.")]
    assert cats  # a stratified split holds some of each class out
    corrections = tmp_path / "corrections.csv"
    corrections.write_text("path,label\n" + "".join(f"{path},skip\n" for path in cats))
    with pytest.raises(UserError, match=r"leave no cat image in the validation split \(0 cats, \d+ dogs\)"):
        corrected_split(TrainOptions(data=kaggle_train_folder, corrections=corrections))


def _sysconf_without(missing: str, pages: int | None = None):
    """os.sysconf as on a system without the name `missing` (macOS has no SC_AVPHYS_PAGES:
    ValueError), or, with `pages`, as on one where only that many pages are free."""
    import os

    sysconf = os.sysconf

    def fake(name):
        if name == missing:
            if pages is None:
                raise ValueError("unrecognized configuration name")
            return pages
        return sysconf(name)

    return fake


def test_decoding_for_training_works_where_free_memory_is_unknown(tmp_path, monkeypatch, caplog):
    from catsdogs_batch.data.dataset import LabelledImage, decode_images
    from catsdogs_batch.errors import UserError

    items = [LabelledImage(f"{name}.1.jpg", label) for name, label in (("cat", 0), ("dog", 1))]
    for item in items:
        write_image(tmp_path / item.path, item.label)
    monkeypatch.setattr("os.sysconf", _sysconf_without("SC_AVPHYS_PAGES"))
    with caplog.at_level(logging.DEBUG, logger="catsdogs_batch.data.dataset"):
        images, labels, skipped = decode_images(tmp_path, items, 32, 1, "train")
    assert images.shape == (2, 32, 32, 3) and labels.ravel().tolist() == [0, 1] and skipped == []
    assert "does not say how much memory is free" in caplog.text
    monkeypatch.setattr("os.sysconf", _sysconf_without("SC_AVPHYS_PAGES", pages=1))  # 4 KiB free
    with pytest.raises(UserError, match=r"^2 train images at 32px need 0\.0 GiB, more than the 0\.0 GiB free"):
        decode_images(tmp_path, items, 32, 1, "train")


def test_the_split_has_its_own_seed(kaggle_train_folder):
    """Runs with other --seed values hold out the same images (to compare or ensemble them);
    --split-seed picks others."""
    from catsdogs_batch.data.dataset import corrected_split
    from catsdogs_batch.options import TrainOptions

    def held_out(**seeds: int) -> list[str]:
        return [item.path for item in corrected_split(TrainOptions(data=kaggle_train_folder, **seeds))[1]]

    assert held_out(seed=7) == held_out(seed=8) != held_out(seed=7, split_seed=3)
