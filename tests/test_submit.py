"""`catsdogs submit` reads the score back: it waits (bounded) until Kaggle has scored the upload,
and `catsdogs submit --status` lists the latest submissions. Run with the real kaggle client
against the stand-in Kaggle server on 127.0.0.1 (tests/kaggle_stub.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from kaggle_stub import assert_no_secret, kaggle_home, kaggle_stub  # noqa: F401


LIST = "POST /api/v1/competitions.CompetitionApiService/ListSubmissions"
CREATE = "POST /api/v1/competitions.CompetitionApiService/CreateSubmission"
REDUX = "dogs-vs-cats-redux-kernels-edition"
FAST = ["--poll-interval", "0.01"]  # the waits between polls, kept tiny


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "submission.csv"
    path.write_text("id,label\n1,0.9\n2,0.1\n")
    return path


def older(ref: int, score: str, description: str = "first try", file_name: str = "submission.csv") -> dict:
    """A submission made before the test's, already scored (the stand-in's JSON of it)."""
    return {
        "ref": ref, "date": "2026-12-01T09:00:00.000Z", "description": description,
        "fileName": file_name, "status": "COMPLETE", "publicScore": score,
    }  # fmt: skip


def test_submit_waits_for_the_score_and_prints_it(kaggle_stub, csv, capsys):
    kaggle_stub.pending_polls = 2
    kaggle_stub.listed = [older(4000, "0.91000")]

    code, out, err = run_cli(["submit", str(csv), "-m", "first try", *FAST], capsys)

    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "Successfully submitted to Dogs vs. Cats Redux: Kernels Edition"
    assert lines[-1] == "submission 4241 scored: public score 0.05678 (log loss, lower is better)"
    assert "0.91000" not in out  # the older submission's score is not this one's
    progress = [line for line in err.splitlines() if "waiting for Kaggle to score submission 4241" in line]
    assert len(progress) == 2 and all("pending" in line and " s " in line for line in progress), err
    assert kaggle_stub.calls[0] == LIST  # the submissions before the upload: none of them is the new one
    assert kaggle_stub.calls[3:] == [CREATE, LIST, LIST, LIST]  # looked until the third listing showed it scored
    assert_no_secret(kaggle_stub, out, err)


def test_a_submission_never_scored_gives_up_after_the_wait(kaggle_stub, csv, capsys):
    kaggle_stub.pending_polls = None

    started = time.monotonic()
    code, out, err = run_cli(["submit", str(csv), "-m", "x", "--wait", "0.3", *FAST], capsys)

    assert code == 0, err  # the upload worked; the score is for later
    assert time.monotonic() - started < 5
    assert out.strip().splitlines()[-1] == (
        "submission 4241 is still being scored after 0.3 s; look later with: catsdogs submit --status"
    )
    assert kaggle_stub.calls.count(LIST) >= 3  # polled, with growing intervals, until the wait ran out
    assert "waiting for Kaggle to score submission 4241: pending" in err


def test_a_rejected_submission_is_one_line_with_kaggles_message(kaggle_stub, csv, capsys):
    kaggle_stub.rejection = "Submission must have 12500 rows.\nFound 2 rows."

    code, out, err = run_cli(
        ["submit", str(csv), "-m", "x", "--competition", "dogs-vs-cats", *FAST], capsys
    )

    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "catsdogs submit: error: Kaggle could not score submission 4241: "
        "Submission must have 12500 rows. Found 2 rows."
    )
    assert out.strip() == "Successfully submitted to Dogs vs. Cats"
    assert_no_secret(kaggle_stub, out, err)


def test_wait_0_uploads_and_does_not_wait(kaggle_stub, csv, capsys):
    code, out, err = run_cli(["submit", str(csv), "-m", "x", "--wait", "0", "--competition", "dogs-vs-cats"], capsys)

    assert code == 0, err
    assert out.strip().splitlines()[-1] == (
        "submission 4241 uploaded; see its score later with: catsdogs submit --status --competition dogs-vs-cats"
    )
    assert LIST not in kaggle_stub.calls


def test_kaggle_briefly_unavailable_while_waiting(kaggle_stub, csv, capsys):
    kaggle_stub.list_fails = 2  # the listing before the upload retries too

    code, out, err = run_cli(["submit", str(csv), "-m", "x", *FAST], capsys)

    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("submission 4241 scored: public score 0.05678")


def test_without_a_ref_the_new_submission_is_found_by_name_and_description(kaggle_stub, csv, capsys):
    """An older submission of the same file with the same description is never taken for this one."""
    kaggle_stub.returns_ref = False
    kaggle_stub.pending_polls = 1
    kaggle_stub.listed = [older(4000, "0.91000")]

    code, out, err = run_cli(["submit", str(csv), "-m", "first try", *FAST], capsys)

    assert code == 0, err
    assert out.strip().splitlines()[-1] == "submission 4241 scored: public score 0.05678 (log loss, lower is better)"


def test_without_a_ref_a_pending_submission_is_not_reported_with_an_older_score(kaggle_stub, csv, capsys):
    kaggle_stub.returns_ref = False
    kaggle_stub.pending_polls = None
    kaggle_stub.listed = [older(4000, "0.91000")]

    code, out, err = run_cli(["submit", str(csv), "-m", "first try", "--wait", "0.1", *FAST], capsys)

    assert code == 0, err
    assert "0.91000" not in out + err
    assert out.strip().splitlines()[-1] == (
        "submission 4241 is still being scored after 0.1 s; look later with: catsdogs submit --status"
    )


def test_status_lists_the_latest_submissions_without_uploading(kaggle_stub, capsys):
    kaggle_stub.listed = [
        {"ref": 4003, "date": "2026-12-02T14:05:00.000Z", "description": "lite2", "fileName": "submission.csv",
         "status": "PENDING"},
        {"ref": 4002, "date": "2026-12-02T13:00:00.000Z", "description": "bad file", "fileName": "bad.csv",
         "status": "ERROR", "errorDescription": "Submission must have 12500 rows."},
        older(4001, "0.05678"),
    ]  # fmt: skip

    code, out, err = run_cli(["submit", "--status"], capsys)

    assert code == 0, err
    assert kaggle_stub.calls == [LIST]
    lines = out.strip().splitlines()
    assert lines[0] == f"latest submissions to {REDUX} (log loss, lower is better), newest first:"
    assert lines[1].split() == ["ref", "submitted", "(UTC)", "status", "public", "score", "file", "description"]
    assert lines[2].split() == ["4003", "2026-12-02", "14:05", "pending", "-", "submission.csv", "lite2"]
    assert lines[3].split()[:6] == ["4002", "2026-12-02", "13:00", "error", "-", "bad.csv"]
    assert lines[3].endswith("bad file (rejected: Submission must have 12500 rows.)")
    assert lines[4].split() == ["4001", "2026-12-01", "09:00", "complete", "0.05678", "submission.csv", "first", "try"]
    assert_no_secret(kaggle_stub, out, err)


def test_status_with_no_submissions(kaggle_stub, capsys):
    code, out, err = run_cli(["submit", "--status", "--competition", "dogs-vs-cats"], capsys)

    assert code == 0, err
    assert out.strip() == "no submissions to dogs-vs-cats yet"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["submit", "--status", "submission.csv"], "--status uploads nothing"),
        (["submit", "submission.csv"], "-m MESSAGE"),
        (["submit", "-m", "x"], "the submission FILE"),
    ],
)
def test_submit_usage_mistakes(kaggle_stub, args, fragment, capsys):
    code, _, err = run_cli(args, capsys)

    assert code == 1 and err.startswith("catsdogs submit: error: ") and fragment in err, err
    assert kaggle_stub.calls == []


def test_submit_without_credentials_says_where_to_put_them(kaggle_home, csv, capsys):
    code, out, err = run_cli(["submit", str(csv), "-m", "first try", *FAST], capsys)

    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("catsdogs submit: error: no Kaggle credentials") and "KAGGLE_USERNAME" in err
    assert "--archive" not in err  # download's way round it, not submit's


def test_submit_uploads_the_file_and_prints_kaggles_status(kaggle_stub, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    csv = tmp_path / "submission.csv"
    csv.write_text("id,label\n1,0.9\n2,0.1\n")

    code, out, err = run_cli(["submit", str(csv), "-m", "first try", "--wait", "0"], capsys)

    assert code == 0, err
    assert out.strip().splitlines()[0] == "Successfully submitted to Dogs vs. Cats Redux: Kernels Edition"
    assert kaggle_stub.calls == [
        "POST /api/v1/competitions.CompetitionApiService/StartSubmissionUpload",
        "PUT /upload/blob-1",
        "POST /api/v1/competitions.CompetitionApiService/CreateSubmission",
    ]
    assert kaggle_stub.uploads["blob-1"] == csv.read_bytes()
    assert kaggle_stub.submissions == [
        {"competitionName": REDUX, "blobFileTokens": "blob-1", "submissionDescription": "first try"}
    ]
    assert "Submission ref: 4241" in caplog.text
    assert_no_secret(kaggle_stub, out, err, caplog.text)


def test_submit_with_an_api_token(kaggle_stub, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", kaggle_stub.token)
    csv = tmp_path / "submission.csv"
    csv.write_text("id,label\n1,0.9\n")

    code, out, err = run_cli(["submit", str(csv), "-m", "with a token", "--competition", "dogs-vs-cats", "--wait", "0"], capsys)

    assert code == 0 and out.splitlines()[0] == "Successfully submitted to Dogs vs. Cats", err
    assert kaggle_stub.calls[0] == "POST /api/v1/security.OAuthService/IntrospectToken"


def test_submit_before_accepting_the_rules(kaggle_stub, tmp_path, capsys, caplog):
    kaggle_stub.rules_not_accepted.add("dogs-vs-cats")
    csv = tmp_path / "submission.csv"
    csv.write_text("id,label\n1,0.9\n")

    code, out, err = run_cli(["submit", str(csv), "-m", "x", "--competition", "dogs-vs-cats"], capsys)

    assert_one_line_error(code, err, "https://www.kaggle.com/competitions/dogs-vs-cats/rules", command="submit")
    assert kaggle_stub.uploads == {}
    assert_no_secret(kaggle_stub, out, err, caplog.text)


def test_failed_upload_is_an_error_not_a_status(kaggle_stub, tmp_path, capsys):
    kaggle_stub.upload_fails = True  # the client reports this in the message, without raising
    csv = tmp_path / "submission.csv"
    csv.write_text("id,label\n1,0.9\n")

    code, _, err = run_cli(["submit", str(csv), "-m", "x"], capsys)

    assert_one_line_error(code, err, "uploading", "failed", command="submit")
    assert kaggle_stub.submissions == []


def test_submit_missing_file(kaggle_stub, tmp_path, capsys):
    code, _, err = run_cli(["submit", str(tmp_path / "none.csv"), "-m", "x"], capsys)
    assert_one_line_error(code, err, "submission file not found", command="submit")
    assert kaggle_stub.calls == []
