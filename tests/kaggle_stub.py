"""A stand-in for the Kaggle API on 127.0.0.1, so tests run the real `kaggle` client offline.

With KAGGLE_API_ENVIRONMENT=LOCALHOST the client POSTs JSON to `<endpoint>/api/v1/<Service>/<Method>`;
the fixture points that endpoint at this server. It answers what the download and submit
commands use, the way Kaggle does:

    POST competitions.CompetitionApiService/DownloadDataFiles   -> 302 to GET /files/<competition>.zip
    GET  /files/<competition>.zip (Range supported)              -> the archive (`extension` sets .zip)
    POST competitions.CompetitionApiService/StartSubmissionUpload -> {"token", "createUrl"}
    PUT  /upload/<token>                                         -> 200, the file is kept (or 500)
    POST competitions.CompetitionApiService/CreateSubmission    -> {"message", "ref"}
    POST competitions.CompetitionApiService/ListSubmissions     -> {"submissions": [newest first]}
    POST security.OAuthService/IntrospectToken                  -> {"active", "username"}

Errors are JSON `{"code": N, "message": ...}` like Kaggle's: 401 for bad credentials, 403 while
the rules of a competition are not accepted, 404 for an unknown competition.

Scoring, as set when a submission is made: it is listed PENDING by its first `pending_polls`
listings, then COMPLETE with `score`, or ERROR with `rejection` when that is set;
`pending_polls=None` never scores it. A listing holds the competition's own submissions (and all
of `listed` put there by a test), newest first.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

API = "/api/v1/"
TITLES = {
    "dogs-vs-cats-redux-kernels-edition": "Dogs vs. Cats Redux: Kernels Edition",
    "dogs-vs-cats": "Dogs vs. Cats",
}


@dataclass
class KaggleStub:
    """What the server serves and what it saw; tests set the first part and read the second."""

    url: str
    username: str = "stub-user"
    key: str = field(default_factory=lambda: "key-" + secrets.token_hex(16))
    token: str = field(default_factory=lambda: "tok-" + secrets.token_hex(16))
    archives: dict[str, bytes] = field(default_factory=dict)  # competition -> whole-data zip
    extension: str = "zip"  # of the file URL the data is sent to (Kaggle's: .zip)
    rules_not_accepted: set[str] = field(default_factory=set)
    cut_short: int = 0  # this many archive answers stop halfway, despite their Content-Length
    upload_fails: bool = False  # the upload URL answers 500
    calls: list[str] = field(default_factory=list)  # "POST /api/v1/...", "GET /files/..."
    ranges: list[str] = field(default_factory=list)  # Range headers of archive requests
    uploads: dict[str, bytes] = field(default_factory=dict)  # token -> uploaded file
    submissions: list[dict] = field(default_factory=list)  # CreateSubmission requests
    returns_ref: bool = True  # CreateSubmission answers the new submission's ref
    pending_polls: int | None = 0  # listings that show a new submission PENDING; None: forever
    score: str = "0.05678"  # the public score of a scored submission
    rejection: str | None = None  # Kaggle's errorDescription: the new submission fails to score
    list_fails: int = 0  # this many ListSubmissions answers are 503s
    listed: list[dict] = field(default_factory=list)  # ApiSubmission JSON, newest first (older ones go here)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    @property
    def stub(self) -> KaggleStub:
        return self.server.stub

    # --- HTTP methods --------------------------------------------------------------------

    def do_POST(self) -> None:
        self.stub.calls.append(f"POST {self.path}")
        body = json.loads(self._read_body() or b"{}")
        method = self.path[len(API) :] if self.path.startswith(API) else ""
        if method == "security.OAuthService/IntrospectToken":
            active = body.get("token") == self.stub.token
            return self._json(200, {"active": active, "username": self.stub.username if active else ""})
        if not self._authorized():
            return self._error(401, "Unauthenticated")
        competition = body.get("competitionName", "")
        if competition not in TITLES:
            return self._error(404, f"Competition '{competition}' not found")
        if competition in self.stub.rules_not_accepted:
            return self._error(403, "You must accept this competition's rules first.")
        if method == "competitions.CompetitionApiService/DownloadDataFiles":
            if competition not in self.stub.archives:
                return self._error(404, "Competition has no data files")
            self.send_response(302)
            self.send_header("Location", f"{self.stub.url}/files/{competition}.{self.stub.extension}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if method == "competitions.CompetitionApiService/StartSubmissionUpload":
            token = f"blob-{len(self.stub.uploads) + 1}"
            self.server.file_names[token] = body.get("fileName", "")
            return self._json(200, {"token": token, "createUrl": f"{self.stub.url}/upload/{token}"})
        if method == "competitions.CompetitionApiService/CreateSubmission":
            token = body.get("blobFileTokens", "")
            if token not in self.stub.uploads:
                return self._error(400, "Submission file was not uploaded")
            self.stub.submissions.append(body)
            ref = 4240 + len(self.stub.submissions)
            self.stub.listed.insert(0, {
                "ref": ref,
                "date": f"2026-12-02T14:{len(self.stub.submissions):02d}:00.000Z",
                "description": body.get("submissionDescription", ""),
                "fileName": self.server.file_names.get(token, ""),
                "status": "PENDING",
            })
            self.server.polls[ref] = 0
            self.server.scoring[ref] = (competition, self.stub.pending_polls, self.stub.rejection, self.stub.score)
            message = f"Successfully submitted to {TITLES[competition]}"
            return self._json(200, {"message": message, **({"ref": ref} if self.stub.returns_ref else {})})
        if method == "competitions.CompetitionApiService/ListSubmissions":
            if self.stub.list_fails > 0:
                self.stub.list_fails -= 1
                return self._error(503, "Service Unavailable")
            made_for = {ref: scoring[0] for ref, scoring in self.server.scoring.items()}
            listed = [s for s in self.stub.listed if made_for.get(s["ref"], competition) == competition]
            for submission in listed:
                self._score(submission)
            size = body.get("pageSize") or 20
            return self._json(200, {"submissions": listed[:size], "nextPageToken": ""})
        return self._error(404, f"No such method: {method}")

    def do_PUT(self) -> None:
        self.stub.calls.append(f"PUT {self.path}")
        token = self.path.removeprefix("/upload/")
        body = self._read_body()
        if self.stub.upload_fails:
            return self._error(500, "Upload failed")
        self.stub.uploads[token] = body
        self._json(200, {})

    def do_GET(self) -> None:
        self.stub.calls.append(f"GET {self.path}")
        competition = self.path.removeprefix("/files/").removesuffix(f".{self.stub.extension}")
        data = self.stub.archives.get(competition)
        if data is None:
            return self._error(404, "Not found")
        start, status = 0, 200
        range_header = self.headers.get("Range")
        if range_header:
            self.stub.ranges.append(range_header)
            start, status = int(range_header.removeprefix("bytes=").split("-")[0]), 206
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()[:16]}"')
        self.send_header("Last-Modified", formatdate(self.server.started, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.stub.cut_short > 0:
            self.stub.cut_short -= 1
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    # --- helpers -------------------------------------------------------------------------

    def _score(self, submission: dict) -> None:
        """Count one more listing of a submission made here, and score it when its time has come."""
        ref = submission["ref"]
        if ref not in self.server.scoring or submission["status"] != "PENDING":
            return
        _, pending_polls, rejection, score = self.server.scoring[ref]
        self.server.polls[ref] += 1
        if pending_polls is None or self.server.polls[ref] <= pending_polls:
            return
        if rejection is not None:
            submission.update(status="ERROR", errorDescription=rejection)
        else:
            submission.update(status="COMPLETE", publicScore=score)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        basic = base64.b64encode(f"{self.stub.username}:{self.stub.key}".encode()).decode()
        return auth in (f"Basic {basic}", f"Bearer {self.stub.token}")

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"code": status, "message": message})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: KaggleStub
    started: float
    file_names: dict[str, str]  # upload token -> the file name StartSubmissionUpload was given
    polls: dict[int, int]  # ref of a submission made here -> how often it has been listed
    scoring: dict[int, tuple]  # ref -> (competition, pending_polls, rejection, score) when it was made


def import_kaggle_api() -> type:
    """The client's KaggleApi class; `import kaggle` prints a help text when it has no credentials."""
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    return KaggleApi


@pytest.fixture
def kaggle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder and environment without any Kaggle credentials; the real ~/.kaggle is never read.

    The kaggle client talks to http://localhost (KAGGLE_API_ENVIRONMENT=LOCALHOST) and never
    through a proxy.
    """
    home = tmp_path / "home"
    config_dir = home / ".kaggle"
    config_dir.mkdir(parents=True)
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name.lower().endswith("_proxy") or name.startswith("VERBOSE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("CATSDOGS_KAGGLE_INPUT", str(tmp_path / "no-kaggle-input"))  # not a notebook's /kaggle/input
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # KaggleApi reads its config path and --local from the environment once, when first imported.
    api_class = import_kaggle_api()
    monkeypatch.setattr(api_class, "config_dir", str(config_dir))
    monkeypatch.setattr(api_class, "config", str(config_dir / "kaggle.json"))
    monkeypatch.setattr(api_class, "args", ["--local"])
    return home


def point_client_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the kaggle client's LOCALHOST environment mean URL."""
    from kagglesdk.kaggle_env import KaggleEnv, _env_to_endpoint

    monkeypatch.setitem(_env_to_endpoint, KaggleEnv.LOCAL, url)


@pytest.fixture
def kaggle_stub(kaggle_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStub]:
    """A running stand-in Kaggle server, with the client's credentials (env vars) set to match it."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.started = 1_700_000_000.0
    server.file_names, server.polls, server.scoring = {}, {}, {}
    server.stub = stub = KaggleStub(url=f"http://127.0.0.1:{server.server_port}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    point_client_at(stub.url, monkeypatch)
    monkeypatch.setenv("KAGGLE_USERNAME", stub.username)
    monkeypatch.setenv("KAGGLE_KEY", stub.key)
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_no_secret(stub: KaggleStub, *texts: str) -> None:
    """None of `texts` (output, logs) holds the stand-in's key, its basic-auth form or its token."""
    basic = base64.b64encode(f"{stub.username}:{stub.key}".encode()).decode()
    for text in texts:
        assert stub.key not in text and basic not in text and stub.token not in text
