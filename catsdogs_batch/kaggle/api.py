"""Everything that talks to Kaggle, through the official `kaggle` client, imported inside the
functions (it authenticates, and prints a help text, at import time). Every failure becomes a
one-line UserError; no message, log line or output of ours ever contains the API key or token."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import UserError

if TYPE_CHECKING:
    import requests
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission

log = logging.getLogger(__name__)

RULES_URL = "https://www.kaggle.com/competitions/{competition}/rules"
TOKEN_URL = "https://www.kaggle.com/settings/api"


def download_competition_archive(competition: str, dest_dir: Path) -> tuple[Path, bool]:
    """Download the competition's zip to DEST_DIR/<competition>.zip (the caller holds the folder's
    lock); return it and whether this tool wrote it (False: one already there, reused). A
    `download_marker` marks a partial archive as this tool's, to resume; a non-zip of that name
    that is not ours is refused, never written over. The client itself reuses a complete archive,
    resumes a partial one and retries 5 times."""
    api = _authenticated_api()
    dest_dir.mkdir(parents=True, exist_ok=True)
    outfile = dest_dir / f"{competition}.zip"  # the client's name for a zip it was served
    marker = download_marker(outfile)
    ours = marker.exists()
    if outfile.exists() and not ours and not zipfile.is_zipfile(outfile):
        raise UserError(
            f"{outfile} is there and is not a zip this tool downloaded: move it away (the download would "
            "write over it), or import your own archive with --archive"
        )
    marker.touch()
    before = _stat(outfile)
    log.info("Asking Kaggle for the %s data (to %s)", competition, outfile)
    try:
        with contextlib.redirect_stdout(_PrintsToLog(api)):  # its progress bar (stderr) stays, its messages are logged
            api.competition_download_files(competition, path=str(dest_dir), quiet=False)
    except Exception as e:  # noqa: BLE001 - every failure is translated below
        partial = _stat(outfile) not in (None, before)
        if not (partial or ours):  # nothing of this tool's to resume
            marker.unlink(missing_ok=True)
        raise _translate(e, api, competition, partial_download=partial) from None
    if not outfile.is_file():
        marker.unlink(missing_ok=True)
        written = sorted(p.name for p in dest_dir.glob(f"{competition}.*"))
        raise UserError(
            f"Kaggle did not serve the {competition} data as a zip (the client wrote "
            f"{', '.join(written) or 'nothing'} in {dest_dir}): unpack it and import the folder with --archive"
        )
    if _stat(outfile) == before:
        log.info("Using the archive already downloaded: %s", outfile)
        return outfile, ours
    return outfile, True


def download_marker(archive: Path) -> Path:
    """`.<archive>.catsdogs-download` beside the archive: this tool is downloading it (left by a
    run cut short, it says the partial archive is this tool's); removed with the archive."""
    return archive.with_name(f".{archive.name}.catsdogs-download")


@dataclass(frozen=True)
class Submitted:
    """Kaggle's answer to an upload: its own message, and the new submission's ref where it sends one."""

    message: str
    ref: int | None


@dataclass(frozen=True)
class Submission:
    """One submission as Kaggle lists it; `status` is "pending", "complete" or "error"."""

    ref: int
    status: str
    public_score: str | None
    error: str  # Kaggle's message for a file it could not score, on one line ("" if none)
    description: str
    file_name: str
    date: datetime | None  # UTC


class NoCredentials(UserError):
    """No Kaggle credentials anywhere the client looks (download then tries /kaggle/input)."""


class Unreachable(UserError):
    """Kaggle cannot be reached (download then says what else would serve)."""


class KaggleUnavailable(UserError):
    """Kaggle did not answer this time (unreachable, a server error, rate-limited): worth asking again."""


class KaggleSubmissions:
    """The submissions of one competition, through one authenticated client: a wait for the score
    asks again and again, and an API token is checked once, not at every look."""

    def __init__(self, competition: str) -> None:
        self.competition = competition
        self._api = _authenticated_api()

    def upload(self, file: Path, message: str) -> Submitted:
        """Upload a file (checked by the caller) with the client's `competition_submit` (upload URL,
        PUT, CreateSubmission); the message is Kaggle's own ("Successfully submitted to ...")."""
        api = self._api
        try:
            with contextlib.redirect_stdout(_PrintsToLog(api)) as printed:
                result = api.competition_submit(str(file), message, self.competition, quiet=False)
        except Exception as e:  # noqa: BLE001 - every failure is translated below
            raise _translate(e, api, self.competition) from None
        if result.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
            detail = " ".join(printed.getvalue().split())  # the client prints the upload's error
            detail = f" ({detail})" if detail else ""
            raise UserError(f"uploading {file} to Kaggle failed{detail}; try again later")
        if result.ref:
            log.info("Submission ref: %s", result.ref)
        return Submitted(_redact(result.message, api), result.ref or None)

    def latest(self, count: int = 20) -> list[Submission]:
        """The competition's latest COUNT submissions (the client's `competition_submissions`),
        newest first. Raises KaggleUnavailable where asking again later may work."""
        api = self._api
        try:
            with contextlib.redirect_stdout(_PrintsToLog(api)):
                found = api.competition_submissions(self.competition, page_size=count) or []
        except Exception as e:  # noqa: BLE001 - every failure is translated below
            error = _translate(e, api, self.competition)
            if _transient(e):
                raise KaggleUnavailable(str(error)) from None
            raise error from None
        return [self._record(s) for s in found if s is not None][:count]

    def _record(self, s: ApiSubmission) -> Submission:
        return Submission(
            ref=s.ref,
            status=s.status.name.lower() if s.status is not None else "pending",
            public_score=s.public_score or None,
            error=_redact(" ".join((s.error_description or "").split()), self._api),
            description=s.description or "",
            file_name=s.file_name or "",
            date=s.date,
        )


class _PrintsToLog(io.StringIO):
    """The client's stdout: each line a log line (redacted), INFO for its retry notices, DEBUG for the
    rest (our own messages repeat them); the text stays readable afterwards."""

    NOTICES = ("Retry", "Connection error", "Rate limited", "Resuming", "Upload of")

    def __init__(self, api: KaggleApi) -> None:
        super().__init__()
        self._api = api
        self._line = ""

    def write(self, text: str) -> int:
        super().write(text)
        *lines, self._line = (self._line + text).split("\n")
        for line in filter(str.strip, lines):
            level = logging.INFO if line.lstrip().startswith(self.NOTICES) else logging.DEBUG
            log.log(level, "kaggle: %s", _redact(line.strip(), self._api))
        return len(text)


def _authenticated_api() -> KaggleApi:
    """A fresh KaggleApi with credentials loaded the way the kaggle CLI finds them."""
    with contextlib.redirect_stdout(io.StringIO()):  # the help text `import kaggle` prints without credentials
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except ImportError as e:
            raise UserError(f"the kaggle client is not installed ({e}): pip install kaggle") from None
    api = KaggleApi()
    # The client's verbose mode (env VERBOSE) prints request headers, i.e. the Authorization.
    api.args = [a for a in api.args if a not in ("--verbose", "-v")]
    config_file = Path(api.config)
    config = _read_kaggle_json(config_file)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            api.authenticate()
    except SystemExit:  # the client prints a help text and calls exit(1)
        from kagglesdk.kaggle_env import get_access_token_from_env

        token, source = get_access_token_from_env()
        if token:  # an API token that Kaggle's introspection does not accept
            where = "KAGGLE_API_TOKEN" if source == "KAGGLE_API_TOKEN" else "~/.kaggle/access_token"
            raise UserError(
                f"Kaggle does not accept the API token in {where} (expired or revoked?): "
                f"create a new one at {TOKEN_URL}"
            ) from None
        missing = [f'"{name}"' for name in ("username", "key") if name not in (config or {})]
        if config is not None and missing:  # e.g. a kaggle.json that holds settings only
            raise UserError(
                f"{_home_relative(config_file)} has no {' and no '.join(missing)}: download a new "
                f"kaggle.json from {TOKEN_URL}, or set KAGGLE_USERNAME and KAGGLE_KEY"
            ) from None
        raise NoCredentials(
            f"no Kaggle credentials found: save kaggle.json from {TOKEN_URL} as "
            f"{_config_file(api)} (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, or put an API "
            "token in KAGGLE_API_TOKEN or ~/.kaggle/access_token"
        ) from None
    except Exception as e:  # noqa: BLE001 - e.g. the network call that checks an API token
        raise _translate(e, api, competition=None) from None
    for line in printed.getvalue().splitlines():  # e.g. "your Kaggle API key is readable by ..."
        if line.strip():
            log.warning("kaggle: %s", _redact(line, api))
    return api


def _read_kaggle_json(path: Path) -> dict | None:
    """The settings in kaggle.json, or None where there is none. A file the client would skip
    silently (or trip over) is an error that names it and says what is wrong, never its content."""
    where = _home_relative(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"cannot read {where}: {e.strerror}") from None
    fix = f"download a new kaggle.json from {TOKEN_URL}"
    try:
        config = json.loads(content)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e}): {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{where} is not valid JSON (not UTF-8 text): {fix}") from None
    if not isinstance(config, dict):
        raise UserError(f'{where} is not a JSON object like {{"username": ..., "key": ...}}: {fix}')
    return config


def _config_file(api: KaggleApi) -> str:
    """Where kaggle.json goes: KAGGLE_CONFIG_DIR if set, else ~/.kaggle (which the client reads
    first; it falls back to ~/.config/kaggle only while ~/.kaggle does not exist)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return _home_relative(Path(api.config))
    return "~/.kaggle/kaggle.json"


def _translate(
    e: Exception, api: KaggleApi, competition: str | None, partial_download: bool = False
) -> UserError:
    """One clear line for a failure of the kaggle client (never the key, never a signed URL)."""
    import requests
    from urllib3 import exceptions as urllib3_exceptions

    what = f"competition {competition}" if competition else "Kaggle"
    if isinstance(e, requests.HTTPError) and e.response is not None:
        status = e.response.status_code
        if status == 401:
            return UserError(
                f"Kaggle rejected your credentials (HTTP 401): check the username and key in "
                f"{_config_file(api)} or KAGGLE_USERNAME/KAGGLE_KEY, or create a "
                f"new API token at {TOKEN_URL}"
            )
        if status == 403:
            url = RULES_URL.format(competition=competition or "<competition>")
            return UserError(
                f"Kaggle refused access to {what} (HTTP 403): sign in and accept the "
                f"competition rules at {url}, then run this again"
            )
        if status == 404:
            return UserError(f"Kaggle does not know {what} (HTTP 404): check its name")
        if status == 429:
            return UserError("Kaggle is rate-limiting you (HTTP 429): wait a few minutes and retry")
        if status >= 500:
            return UserError(f"Kaggle had a server error (HTTP {status}): try again later")
        return UserError(f"Kaggle answered HTTP {status}: {_server_message(e.response, api)}")
    if isinstance(e, requests.exceptions.ConnectTimeout) or (
        isinstance(e, requests.ConnectionError) and not partial_download
    ):
        url = e.request.url if e.request is not None else None
        host = (urlsplit(url).netloc or url) if url else "Kaggle"
        return Unreachable(f"cannot reach {host}: check your network connection or proxy settings")
    cut_short = (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.Timeout,
        urllib3_exceptions.ProtocolError,
        urllib3_exceptions.ReadTimeoutError,
    )
    if isinstance(e, cut_short):
        return UserError(
            f"the download of {what} was cut short ({type(e).__name__}); run the command "
            "again to resume it"
        )
    if isinstance(e, ValueError) and "does not match expected size" in str(e):
        return UserError(f"the download of {what} was cut short ({e}); run the command again")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return UserError(f"no space left on device while downloading {what}: free some space")
    if isinstance(e, OSError):
        return UserError(f"{what}: {_redact(str(e), api)}")
    return UserError(f"the kaggle client failed: {type(e).__name__}: {_redact(str(e), api)}")


def _transient(e: Exception) -> bool:
    """A failure that asking again later may not meet: no answer, a server error, rate-limiting."""
    import requests

    if isinstance(e, requests.HTTPError) and e.response is not None:
        return e.response.status_code == 429 or e.response.status_code >= 500
    return isinstance(e, (requests.ConnectionError, requests.Timeout))


def _server_message(response: requests.Response, api: KaggleApi) -> str:
    try:
        text = str(response.json().get("message") or response.reason)
    except Exception:  # noqa: BLE001 - not JSON
        text = str(response.reason)
    return _redact(" ".join(text.split()), api)


def _redact(text: str, api: KaggleApi) -> str:
    """TEXT without the key, the token and URL queries (signed download URLs): belt and braces."""
    for name in (api.CONFIG_NAME_KEY, api.CONFIG_NAME_TOKEN):
        secret = api.config_values.get(name)
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\"]*", r"\1?...", text)


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a file, to tell whether a failed download wrote to it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _home_relative(path: Path) -> str:
    home = Path(os.path.expanduser("~"))
    try:
        return "~/" + path.relative_to(home).as_posix()
    except ValueError:
        return str(path)
