"""After the upload: `catsdogs submit` waits, bounded, for Kaggle's public score of its submission,
and `catsdogs submit --status` lists the latest submissions with theirs. The submission is found by
the ref Kaggle returns, else by being new (not listed before the upload) with this file name and
description: an older submission's score is never reported as this one's."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from .api import KaggleSubmissions, KaggleUnavailable, Submission, Submitted
from ..options import COMPETITIONS, SUBMISSIONS_LISTED, SubmitOptions, check_options

log = logging.getLogger(__name__)

METRICS = {  # how each competition scores a submission
    "dogs-vs-cats-redux-kernels-edition": "log loss, lower is better",
    "dogs-vs-cats": "accuracy, higher is better",
}
MAX_INTERVAL_FACTOR = 6  # the waits between looks grow 1.5 times each, up to 6 times the first


@dataclass(frozen=True)
class Outcome:
    """What became of an upload: the submission as last seen (None: never listed) after WAITED s."""

    submitted: Submitted
    submission: Submission | None
    waited: float
    options: SubmitOptions

    def describe(self) -> str:
        """The line for people; a rejected file is an error (UserError), not an outcome."""
        ref = self.submitted.ref or (self.submission.ref if self.submission else None)
        name = f"submission {ref}" if ref else "the submission"
        later = look_later(self.options.competition)
        if self.options.wait <= 0:
            return f"{name} uploaded; see its score later with: {later}"
        if self.submission is None:
            return f"Kaggle does not list {name} yet after {self.options.wait:g} s; look later with: {later}"
        if self.submission.status == "complete":
            if self.submission.public_score is None:
                return f"{name} scored; Kaggle shows no public score for it (see {later})"
            metric = METRICS.get(self.options.competition)
            return f"{name} scored: public score {self.submission.public_score}" + (f" ({metric})" if metric else "")
        return f"{name} is still being scored after {self.options.wait:g} s; look later with: {later}"


def submit_and_score(options: SubmitOptions, report: Callable[[str], None]) -> Outcome:
    """Upload OPTIONS.file, REPORT Kaggle's answer, then wait up to OPTIONS.wait seconds for its
    score; a file Kaggle could not score is a UserError with Kaggle's message."""
    check_options(options)
    if not options.file.is_file():
        raise UserError(f"submission file not found: {options.file}")
    kaggle = KaggleSubmissions(options.competition)
    known = _refs_now(kaggle) if options.wait > 0 else None
    submitted = kaggle.upload(options.file, options.message)
    report(submitted.message)
    if options.wait <= 0:
        return Outcome(submitted, None, 0.0, options)
    outcome = wait_for_score(kaggle, submitted, options, known)
    if outcome.submission is not None and outcome.submission.status == "error":
        reason = outcome.submission.error or "Kaggle gave no reason"
        raise UserError(f"Kaggle could not score submission {outcome.submission.ref}: {reason}")
    return outcome


def wait_for_score(
    kaggle: KaggleSubmissions,
    submitted: Submitted,
    options: SubmitOptions,
    known: set[int] | None,
) -> Outcome:
    """Look at the competition's latest submissions until this one is scored or rejected, or
    OPTIONS.wait seconds have passed; a line on stderr shows how long it has been."""
    progress = _Progress()
    start = time.monotonic()
    interval = options.poll_interval
    seen: Submission | None = None
    try:
        while True:
            try:
                seen = _find(kaggle.latest(), submitted, options, known) or seen
                state = seen.status if seen else "not listed yet"
            except KaggleUnavailable as e:
                log.debug("Looking for the score failed, trying again: %s", e)
                state = "Kaggle did not answer"
            elapsed = time.monotonic() - start
            if seen is not None and seen.status != "pending":
                progress.done()
                return Outcome(submitted, seen, elapsed, options)
            name = f"submission {submitted.ref or (seen.ref if seen else '')}".rstrip()
            progress.show(f"waiting for Kaggle to score {name}: {state}, {elapsed:.0f} s of at most {options.wait:g} s")
            if elapsed >= options.wait:
                progress.done()
                return Outcome(submitted, seen, elapsed, options)
            time.sleep(max(0.0, min(interval, options.wait - elapsed)))
            interval = min(interval * 1.5, options.poll_interval * MAX_INTERVAL_FACTOR)
    except KeyboardInterrupt:
        progress.done()
        log.info("stopped waiting; the submission was uploaded: see its score with %s", look_later(options.competition))
        raise


def status_report(competition: str) -> str:
    """The competition's latest submissions, newest first: status, public score, file, description."""
    submissions = KaggleSubmissions(competition).latest(SUBMISSIONS_LISTED)
    if not submissions:
        return f"no submissions to {competition} yet"
    rows = [("ref", "submitted (UTC)", "status", "public score", "file", "description")]
    for s in submissions:
        description = s.description + (f" (rejected: {s.error})" if s.status == "error" and s.error else "")
        date = s.date.strftime("%Y-%m-%d %H:%M") if s.date else "-"
        rows.append((str(s.ref), date, s.status, s.public_score or "-", s.file_name, description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    metric = METRICS.get(competition)
    title = f"latest submissions to {competition}" + (f" ({metric})" if metric else "") + ", newest first:"
    return "\n".join([title, *(line.rstrip() for line in lines)])


def look_later(competition: str) -> str:
    """The command that shows the score later."""
    other = f" --competition {competition}" if competition != COMPETITIONS[0] else ""
    return f"catsdogs submit --status{other}"


def _refs_now(kaggle: KaggleSubmissions) -> set[int] | None:
    """The refs listed before the upload, so that without a ref from Kaggle an older submission of
    the same file and description is never taken for the new one. None: Kaggle did not answer."""
    try:
        return {s.ref for s in kaggle.latest()}
    except KaggleUnavailable as e:
        log.debug("Listing the submissions before the upload failed: %s", e)
        return None


def _find(
    submissions: list[Submission], submitted: Submitted, options: SubmitOptions, known: set[int] | None
) -> Submission | None:
    """This upload's submission among SUBMISSIONS (newest first), or None where it is not there or
    cannot be told apart from older ones."""
    if submitted.ref:
        return next((s for s in submissions if s.ref == submitted.ref), None)
    if known is None:
        return None
    wanted = (options.file.name, options.message or "")
    return next((s for s in submissions if s.ref not in known and (s.file_name, s.description) == wanted), None)


class _Progress:
    """One progress line on stderr: rewritten in place on a terminal, a line per look elsewhere."""

    def __init__(self) -> None:
        self._open = False

    def show(self, text: str) -> None:
        stream = sys.stderr
        if getattr(stream, "isatty", lambda: False)():
            stream.write(f"\r{text}\033[K")
            self._open = True
        else:
            stream.write(text + "\n")
        stream.flush()

    def done(self) -> None:
        if self._open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._open = False
