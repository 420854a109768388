"""`catsdogs submission`: the results table of the competition's test images, and the
`submission.csv` Kaggle accepts, checked against the competition's sample submission."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..models.checkpoint import find_checkpoints
from .engine import check_engine_options, predict_folder, table_lock
from ..errors import UserError
from ..files import atomic_path, atomic_write_json, made_folder, sha256
from ..data.images import HiddenEntries
from .shards import files_fingerprint, job_description
from ..side_files import RESULTS_FILE, job_file, read_record
from ..options import SAMPLE_SUBMISSIONS, THRESHOLD, Labelling, PredictOptions, SubmissionOptions, check_options
from .tables import read_table

log = logging.getLogger(__name__)

SUBMISSION_FILE = "submission.csv"
# results.csv's job record (side_files.job_file) here adds the test files' fingerprint (with
# --checksum, of their bytes too) and the table's sha256: results.csv is reused only if all match.
UNREADABLE_P_DOG = 0.5  # what an unreadable test image is submitted as: no opinion


def resolve_options(options: SubmissionOptions) -> SubmissionOptions:
    """Check every option and fill in the defaults: the newest finished run in models/, the
    competition's test folder under data/, and submissions/<run name>."""
    from ..models.checkpoint import ensemble_name, latest_checkpoint

    check_options(options)
    model = options.model or latest_checkpoint()
    test_dir = options.test_dir or Path("data") / options.competition / "test"
    if not test_dir.is_dir():
        raise UserError(f"no test folder at {test_dir} (run `catsdogs download` first?)")
    options = replace(options, model=model, test_dir=test_dir, out=options.out or Path("submissions") / ensemble_name(model))
    if options.sample_submission is not None and not options.sample_submission.is_file():
        raise UserError(f"--sample-submission {options.sample_submission} is not a file")
    if options.out.exists() and not options.out.is_dir():
        raise UserError(f"--out {options.out} is a file: it names the output folder")
    return options


def make_submission(options: SubmissionOptions) -> Path:
    """Predict every test image, then write submission.csv; returns its path. A results.csv
    left by an earlier run is reused only if it was computed with the same model, settings and
    test files."""
    options = resolve_options(options)
    out = options.out
    submission_path, results_path = out / SUBMISSION_FILE, out / RESULTS_FILE
    # One probability per test image: the content check would not change it (moving its neither
    # photos toward 0.5 raised the validation log loss: docs/benchmarks.md), so it is not run
    predict = PredictOptions(
        options.model, options.test_dir, results_path, options.overwrite, options.engine,
        labelling=Labelling(content_check=False),
    )  # fmt: skip
    check_engine_options(predict)
    if submission_path.exists() and not options.overwrite:
        raise UserError(f"{submission_path} already exists: pass --overwrite to replace it")
    sample_path = options.sample_submission or find_sample_submission(options.test_dir)
    sample = read_sample_submission(sample_path) if sample_path else None  # a bad one: refused before predicting
    with made_folder(out), table_lock(results_path, submission_path):  # refused: no --out folder left that it made
        hidden = HiddenEntries()
        job = {
            **job_description(predict, find_checkpoints(options.model, options.engine.runtime)),
            **files_fingerprint(options.test_dir, hidden, options.engine.checksum),
        }
        if results_path.exists() and not options.overwrite:
            _check_reusable(job_file(results_path), job, results_path)
            log.info("reusing %s, computed with the same model, settings and test files", results_path)
            hidden.log(options.test_dir)  # else predicting says it, from its own walk
        else:
            predict_folder(predict, locked=True)
            atomic_write_json(job_file(results_path), job | {"results_sha256": sha256(results_path)})
        submission = submission_frame(read_table(results_path), options.competition, options.clip)
        if sample is None:
            log.warning("no sample submission beside %s: ids not checked against it", options.test_dir)
        else:
            check_against_sample(submission, sample, sample_path)
        with atomic_path(submission_path) as tmp:
            submission.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    log.info("wrote %s (%d rows) for %s", submission_path, len(submission), options.competition)
    return submission_path


def _check_reusable(job_file: Path, job: dict, results: Path) -> None:
    """Refuse a results.csv computed from anything else than `job` describes, or changed since.
    The test photos' checksums (`contents`) are compared only when this run takes them."""
    previous = read_record(job_file)
    if previous is not None and "contents" not in job:
        previous.pop("contents", None)
    if previous is not None and previous.pop("results_sha256", None) != sha256(results):
        why = "it changed since it was computed"
    elif previous == job:
        return
    elif previous is None:
        why = f"nothing records what it was computed with ({job_file.name} is missing)"
    elif changed := [key for key in job if key != "contents" and previous.get(key) != job[key]]:
        why = "it was computed with another " + ", ".join(
            "set of test files" if key == "files" else key.replace("_", " ") for key in changed
        )
    elif "contents" in previous:
        why = "it was computed from test photos that held other bytes"
    else:
        why = "it was computed without --checksum"
    raise UserError(f"{results} exists but {why}: pass --overwrite to predict again, or another --out")


def submission_frame(results: pd.DataFrame, competition: str, clip: float) -> pd.DataFrame:
    """`id,label` in numeric id order: the clipped probability of dog (redux, scored by log
    loss) or 1 for dog / 0 for cat (the 2013 competition, scored by accuracy)."""
    unnamed = results.loc[results["id"].isna(), "path"]
    if len(unnamed):
        raise UserError(
            f"{len(unnamed)} test files are not named by a numeric id (e.g. {unnamed.iloc[0]}): "
            "is this the competition's test folder?"
        )
    errors = results[results["status"] == "error"]
    if len(errors):
        listed = "; ".join(f"{r.path}: {r.error}" for r in errors.head(10).itertuples())
        log.warning(
            "WARNING: %d test images could not be read and are submitted as p_dog=%.1f: %s",
            len(errors), UNREADABLE_P_DOG, listed,
        )
    p_dog = results["p_dog"].fillna(UNREADABLE_P_DOG)
    if competition == "dogs-vs-cats":
        label = (p_dog >= THRESHOLD).astype(int)
    else:
        label = p_dog.clip(clip, 1 - clip)
    frame = pd.DataFrame({"id": results["id"].astype(int), "label": label})
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def find_sample_submission(test_dir: Path) -> Path | None:
    return next((test_dir.parent / name for name in SAMPLE_SUBMISSIONS if (test_dir.parent / name).is_file()), None)


def read_sample_submission(path: Path) -> pd.DataFrame:
    """The competition's sample submission (id,label), or a one-line error for a broken one."""
    try:
        sample = pd.read_csv(path)
    except (OSError, ValueError, UnicodeError) as e:  # pandas' parse errors are ValueErrors
        raise UserError(f"cannot read the sample submission {path}: {str(e).splitlines()[0]}") from None
    if "id" not in sample.columns or not pd.api.types.is_integer_dtype(sample["id"]):
        raise UserError(f"{path} is not a sample submission: it has no column of integer ids")
    return sample


def check_against_sample(submission: pd.DataFrame, sample: pd.DataFrame, sample_path: Path) -> None:
    """Same columns, same ids, same count as the competition's sample submission."""
    if list(sample.columns) != list(submission.columns):
        raise UserError(f"{sample_path} has columns {list(sample.columns)}, not {list(submission.columns)}")
    expected, got = set(sample["id"]), set(submission["id"])
    if len(submission) != len(sample) or expected != got:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise UserError(
            f"the submission has {len(submission)} rows but {sample_path.name} has {len(sample)}: "
            f"{len(missing)} ids missing (e.g. {missing[:5]}), {len(extra)} unexpected (e.g. {extra[:5]})"
        )

