"""`catsdogs review`: a local web page on which a person decides the images a results table is
unsure of, each decision saved at once to `corrections.csv` beside the table. What it shows is
review_queue.py's; here are the session and server, which send pages of a few items and small
thumbnails, so a table of 100,000 rows costs the browser no more than one of ten.

Safety (docs/commands.md): 127.0.0.1 only; nothing answered without the URL's random token (403;
never a cookie, which browsers share between ports); images served by table row, never by a path
from the request, and only files that resolve inside the images folder; one server per
corrections file, whatever link names it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import webbrowser
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


from ..data.corrections import CORRECTIONS_FILE, DECISIONS, Corrections, corrections_file, refuse_another_folder
from ..errors import UserError
from ..files import exclusive_lock, remove_unfinished_writes, shown
from ..options import DEFAULT_BAND, ReviewOptions, check_options
from ..side_files import corrections_record, lock_file
from ..inference.tables import check_band, read_table
from .review_queue import (
    NotServed, Queue, find_table, moved_to, open_inside, recorded_job, recorded_settings, review_queue, thumbnail,
)  # fmt: skip

log = logging.getLogger(__name__)

THUMBNAILS_CACHED = 512  # about 30 KB each
DECODING_AT_ONCE = 2  # the server's threads would otherwise decode up to 40 images at once
HOST = "127.0.0.1"
PAGE_FILES = {"review.js": "text/javascript", "review.css": "text/css"}  # served by these names only


class Session:
    """What one review server works on: the queue, the images folder and the corrections; safe
    to call from the server's threads."""

    def __init__(
        self, queue: Queue, images: Path, corrections: Corrections, page_size: int, table: Path,
        sorted_into: Path | None = None,
    ) -> None:  # fmt: skip
        """`sorted_into`: where `label --mode move` put the images (`<it>/<label>/<path>`)."""
        self.queue, self.corrections, self.page_size, self.table = queue, corrections, page_size, table
        self.images = Path(os.path.realpath(images))
        self.sorted_into = Path(os.path.realpath(sorted_into)) if sorted_into else None
        self._decoding = threading.BoundedSemaphore(DECODING_AT_ONCE)
        self._lock = threading.Lock()
        self._undo: dict[str, list[tuple[int, str | None]]] = {}  # per page load: (queue position, the decision before)
        self._thumbnails: OrderedDict[tuple, bytes] = OrderedDict()  # the most recently used last
        self._thumbnails_lock = threading.Lock()  # not the decisions' one: a decision's fsync holds that
        queued = set(queue.paths[queue.order])
        self._reviewed = sum(path in queued for path in corrections.labels)  # kept up to date below

    def reviewed(self) -> int:
        """Queue positions with a decision."""
        return self._reviewed

    def summary(self) -> dict:
        with self._lock:
            reviewed = self._reviewed
            decided = self.corrections.labels
            order = self.queue.order if reviewed < len(self.queue) else []  # all decided: no scan of the queue
            start = next((n for n, row in enumerate(order) if self.queue.paths[row] not in decided), 0)
        return {
            "table": shown(self.table.name),
            "corrections": shown(self.corrections.path),
            "total": len(self.queue),
            "uncertain": self.queue.uncertain,
            "disagreements": len(self.queue) - self.queue.uncertain,
            "reviewed": reviewed,
            "page_size": self.page_size,
            "start": start,
        }

    def page(self, number: int) -> list[dict] | None:
        """The items of page `number` (None past the end; page 0 of an empty queue is empty)."""
        first = number * self.page_size
        if number < 0 or (first >= len(self.queue) and number > 0):
            return None
        q = self.queue
        with self._lock:
            return [
                {
                    "position": position,
                    "row": int(row),
                    "name": shown(q.paths[row]),
                    "p_dog": float(q.p_dog[row]),
                    "label": q.model_label[row],  # the model's own, even where a correction was applied
                    "corrected": shown(q.corrected[row]) or None,  # the person's label the table holds instead
                    "true_label": shown(q.true_label[row]) or None if q.true_label is not None else None,
                    "section": q.section(position),
                    "decision": self.corrections.labels.get(q.paths[row]),
                }
                for position, row in enumerate(q.order[first : first + self.page_size], start=first)
            ]

    def decide(self, position: int, label: str, client: str) -> dict:
        """Record a decision (`accept`: the model's label) for a queue position, undoable by
        `client` (the page load that took it)."""
        row = self.queue.order[position]
        if label == "accept":
            label = self.queue.model_label[row]
        with self._lock:
            previous = self.corrections.set(self.queue.paths[row], label)
            self._reviewed += previous is None
            self._undo.setdefault(client, []).append((position, previous))
            return {"position": position, "decision": label, "reviewed": self._reviewed}

    def undo(self, client: str) -> dict:
        """Take back `client`'s last decision: the one before it, or none, is restored. Another
        page's decisions are not this page's to take back."""
        with self._lock:
            taken = self._undo.get(client)
            if not taken:
                return {"position": None, "decision": None, "reviewed": self._reviewed}
            position, previous = taken[-1]
            self.corrections.set(self.queue.paths[self.queue.order[position]], previous)
            taken.pop()  # only once written: a failed write leaves it to undo again
            self._reviewed -= previous is None
            return {"position": position, "decision": previous, "reviewed": self._reviewed}

    def _open(self, row: int) -> io.BufferedReader:
        """Row `row`'s file: in the images folder or, once `label --mode move` took it from
        there, in the folder of its label under `sorted_into`."""
        path = self.queue.paths[row]
        if self.sorted_into is not None and not os.path.lexists(self.images / path):
            return open_inside(self.sorted_into, f"{self.queue.label[row]}/{path}")
        return open_inside(self.images, path)

    def image(self, row: int) -> bytes:
        """The thumbnail of table row `row`; NotServed for rows outside the table or unreadable.
        The file is checked on every request; the cache only saves decoding the same file again."""
        if not 0 <= row < len(self.queue.paths) or not self.queue.ok[row]:
            raise NotServed("no such row")
        with self._open(row) as f:
            info = os.fstat(f.fileno())
            key = (row, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            with self._thumbnails_lock:
                if key in self._thumbnails:
                    self._thumbnails.move_to_end(key)
                    return self._thumbnails[key]
            with self._decoding:
                jpeg = thumbnail(f)
        with self._thumbnails_lock:
            self._thumbnails[key] = jpeg
            if len(self._thumbnails) > THUMBNAILS_CACHED:
                self._thumbnails.popitem(last=False)
        return jpeg


@contextlib.contextmanager
def open_session(options: ReviewOptions) -> Iterator[Session]:
    """Read the table, settle the images folder, band and corrections file, and order the queue;
    the session is used while the corrections' lock (`<corrections>.lock`) is held, taken before
    the file is read so that no other writer changes it underneath."""
    check_options(options)
    table = find_table(options.table, options.images)
    job = recorded_job(table)
    images = options.images
    if images is None:
        recorded = Path(job["folder"]) if job else None
        if recorded is None or not recorded.is_dir():
            where = f" (it records {shown(recorded)}, which is not a folder here)" if recorded else ""
            raise UserError(f"pass --images DIR, the folder the paths of {table} are relative to{where}")
        images = recorded
    if not images.is_dir():
        raise UserError(f"--images {images} is not a folder")
    images = Path(os.path.realpath(images))
    recorded_band, threshold = recorded_settings(job)
    band = options.uncertain or recorded_band or DEFAULT_BAND
    check_band(band)
    path = corrections_file(options.corrections or table.with_name(CORRECTIONS_FILE))
    names = os.stat(path).st_nlink if path.exists() else 1
    if names > 1:  # its lock is per name, and each save puts a new file in place: the names would part
        raise UserError(
            f"{shown(path)} has {names} names (hard links): each save replaces it under this name only; "
            "review a copy (cp), or remove the other names"
        )
    queue = review_queue(read_table(table, true_label=True), band, threshold)
    with exclusive_lock(lock_file(path), shown(path)):
        remove_unfinished_writes([path, corrections_record(path)])
        corrections = Corrections(path, {"folder": str(images), "table": str(table.resolve())})
        if options.corrections is None:
            refuse_another_folder(corrections.path, images, "pass --corrections FILE to keep this review's apart")
        yield Session(queue, images, corrections, options.page_size, table, moved_to(table))


def create_app(session: Session, token: str):
    """The Starlette app: the page, its JSON API and the thumbnails, all behind `token`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    page = resources.files(__package__).joinpath("review_page")
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }

    def index(request: Request) -> Response:
        html = page.joinpath("index.html").read_text(encoding="utf-8").replace("{{token}}", token)
        return HTMLResponse(html, headers=headers)

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PAGE_FILES:
            return PlainTextResponse("not found", 404)
        return Response(page.joinpath(name).read_bytes(), media_type=PAGE_FILES[name], headers=headers)

    def summary(request: Request) -> Response:
        return JSONResponse(session.summary(), headers=headers)

    def page_items(request: Request) -> Response:
        try:
            items = session.page(int(request.query_params.get("page", "0")))
        except ValueError:
            items = None
        if items is None:
            return JSONResponse({"error": "no such page"}, 404)
        return JSONResponse({"items": items}, headers=headers)

    async def change(request: Request, function: Any, *args: Any) -> Response:
        """Run a change of the page load that `X-Review-Client` names (its undo is its own) in a
        thread; a write that fails is answered with the system's reason."""
        client = request.headers.get("x-review-client", "")
        if not 0 < len(client) <= 64:
            return JSONResponse({"error": "changes need the page's X-Review-Client id"}, 400)
        try:
            return JSONResponse(await run_in_threadpool(function, *args, client), headers=headers)
        except OSError as e:
            return JSONResponse({"error": f"not saved: {e.strerror or e}"}, 500, headers=headers)

    async def decide(request: Request) -> Response:
        try:
            body = await request.json()
            position, label = body["position"], body["label"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {position, label}"}, 400)
        if label not in (*DECISIONS, "accept"):
            return JSONResponse({"error": f"label: {', '.join(DECISIONS)} or accept"}, 400)
        if type(position) is not int or not 0 <= position < len(session.queue):
            return JSONResponse({"error": "no such position"}, 404)
        return await change(request, session.decide, position, label)

    async def undo(request: Request) -> Response:
        return await change(request, session.undo)

    def image(request: Request) -> Response:
        try:
            jpeg = session.image(request.path_params["row"])
        except NotServed:
            return PlainTextResponse("not found", 404)
        return Response(jpeg, media_type="image/jpeg", headers={**headers, "Cache-Control": "no-cache"})  # a replaced file shows anew

    routes = [
        Route("/", index),
        Route("/static/{name}", asset),
        Route("/api/summary", summary),
        Route("/api/page", page_items),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/image/{row:int}", image),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"]),  # no DNS rebinding
        Middleware(TokenGuard, token=token),
    ]
    return Starlette(routes=routes, middleware=middleware)


class TokenGuard:
    """ASGI middleware: 403 for any request without the token, given in the URL (`?token=`: the
    page's own URL, its images and files) or the X-Review-Token header (the page's API calls;
    required for changes, so no other site can make them). No cookie: browsers do not keep
    cookies apart by port, so every other server on 127.0.0.1 would be sent it."""

    def __init__(self, app: Any, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            from starlette.responses import PlainTextResponse

            refused = PlainTextResponse("403: this page needs the token of the URL catsdogs review printed", 403)
            return await refused(scope, receive, send)
        await self.app(scope, receive, send)

    def _allowed(self, scope: dict) -> bool:
        from starlette.requests import Request

        request = Request(scope)
        given = [request.headers.get("x-review-token", "")]
        if request.method in ("GET", "HEAD"):
            given.append(request.query_params.get("token", ""))
        return any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given if g)


@dataclass
class ReviewSummary:
    corrections: Path
    reviewed: int
    total: int
    decisions: int  # rows of corrections.csv (images outside this queue included)

    def describe(self) -> str:
        return f"{self.reviewed} of {self.total} images reviewed; {self.decisions} decisions in {shown(self.corrections)}"


class ReviewServer(contextlib.AbstractContextManager):
    """The review page served on 127.0.0.1 (a free port unless one is given) while the
    corrections' lock is held: `url` (with the token), `serve()` until Ctrl-C or SIGTERM,
    `close()` (or a `with` block) to release the port and the lock."""

    def __init__(self, options: ReviewOptions):
        import uvicorn

        with contextlib.ExitStack() as held:  # all released if anything below fails
            self.session = held.enter_context(open_session(options))
            self._socket = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                self._socket.bind((HOST, options.port))
            except OSError as e:
                raise UserError(f"cannot listen on {HOST}:{options.port}: {e.strerror}") from None
            self._socket.listen()
            self.port: int = self._socket.getsockname()[1]
            token = secrets.token_urlsafe(24)
            self.url = f"http://{HOST}:{self.port}/?token={token}"
            config = uvicorn.Config(
                create_app(self.session, token), log_config=None, log_level="warning", access_log=False
            )
            self._server = uvicorn.Server(config)
            self._exit = held.pop_all()  # held until close()

    def serve(self) -> None:
        self._server.run(sockets=[self._socket])

    def summary(self) -> ReviewSummary:
        s = self.session
        return ReviewSummary(s.corrections.path, s.reviewed(), len(s.queue), len(s.corrections.labels))

    def close(self) -> None:
        self._exit.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


def review(options: ReviewOptions) -> ReviewSummary:
    """Serve the review page until Ctrl-C, printing its URL (and opening it in a browser unless
    told not to); every decision is already on disk when this returns."""
    with ReviewServer(options) as server, _sigterm_as_ctrl_c():  # before the URL is out
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C (or SIGTERM) is how this command ends
            s = server.session.summary()
            log.info(
                "%d images to review (%d uncertain, %d disagreements), %d reviewed; decisions go to %s",
                s["total"], s["uncertain"], s["disagreements"], s["reviewed"], s["corrections"],
            )  # fmt: skip
            log.info("review page: %s  (Ctrl-C stops)", server.url)
            if options.open_browser:
                _open_browser(server.url, server.port)
            server.serve()
        return server.summary()


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (kill, systemd) ends the review like Ctrl-C: uvicorn stops, then raises it again under
    this handler, so the lock file is removed and the summary printed, not the process killed at once."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _open_browser(url: str, port: int) -> None:
    """Open `url` in a graphical browser; on a Linux machine without a display (ssh) a text
    browser would take the terminal over, so say so instead."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        log.info("no display here: open the URL in a browser (on another machine: ssh -L %d:127.0.0.1:%d)", port, port)
        return
    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
