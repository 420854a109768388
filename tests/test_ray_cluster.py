"""The Ray engine's cluster paths, run as a user runs them (the `catsdogs` command in a
subprocess): joining a cluster of two nodes started on this machine with `ray start`
(--ray-address auto), and starting and stopping a Ray of its own (no address).

Every Ray here has its own temp dir, ports and token, so none finds, joins or stops another Ray
on the machine (`ray stop` would stop them all), and the checks for processes left behind look
only at the processes of the Ray the test started."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
import psutil  # noqa: E402  (a dev dependency)

from catsdogs_batch.inference.engine import predict_folder  # noqa: E402
from catsdogs_batch.options import Labelling, EngineOptions, PredictOptions  # noqa: E402
from catsdogs_batch.inference.tables import read_table  # noqa: E402

from conftest import write_image  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")  # the venv's `ray`: every Ray process runs this Python
POOL_ACTOR = "MapWorker(MapBatches(PredictorActor))"  # Ray Data's name for the engine's actors
MARKER = "CATSDOGS_TEST_RAY"  # inherited by every process of a Ray started here
# EXIT_SECONDS: how long stopped Ray processes may take to go. Idle, a worker sees its raylet gone
# in a second or two; on a busy 2-core machine (another job, the rest of the suite) it took over 30 s.
STARTUP_SECONDS, RUN_SECONDS, EXIT_SECONDS = 120, 300, 60


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """20 generated images: cat.0-9.jpg and dog.0-9.jpg."""
    folder = tmp_path_factory.mktemp("photos")
    for n in range(10):
        write_image(folder / f"cat.{n}.jpg", 0, seed=n)
        write_image(folder / f"dog.{n}.jpg", 1, seed=100 + n)
    return folder


@pytest.fixture(scope="module")
def local_table(tiny_model, photos, tmp_path_factory) -> pd.DataFrame:
    """The local engine's table for `photos`: what every Ray run must write."""
    out = tmp_path_factory.mktemp("local") / "results.csv"
    predict_folder(PredictOptions(tiny_model, photos, out, engine=EngineOptions(progress=False), labelling=Labelling(content_check=False)))
    return read_table(out)


@pytest.fixture
def ray_root() -> Iterator[Path]:
    """A temp dir for one Ray, short enough for the Unix sockets Ray makes under it."""
    root = Path(tempfile.mkdtemp(prefix="catsdogs-ray-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def ray_env(root: Path) -> dict[str, str]:
    """The environment of a Ray started by a test, and of the commands run against it: Ray's temp
    dir under `root` (not /tmp/ray, where another Ray's address file may be), its own token (not
    ~/.ray/auth_token), no RAY_ADDRESS, this checkout's package, and a marker for its processes."""
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env.update({
        "PATH": f"{RAY.parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        "RAY_TMPDIR": str(root),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        MARKER: secrets.token_hex(8),
    })  # fmt: skip
    return env


def predict(model: Path, folder: Path, out: Path, *options: str) -> list[str]:
    """`catsdogs predict` on Ray, in batches of 8: 20 images are 3 batches, enough for 2 actors."""
    return [sys.executable, "-m", "catsdogs_batch.cli", "predict", str(model), str(folder), "--out", str(out),
            "--engine", "ray", "--batch-size", "8", "--no-progress", "--no-content-check", *options]  # fmt: skip


def assert_same_table(table: pd.DataFrame, expected: pd.DataFrame) -> None:
    exact = ["path", "id", "label", "width", "height", "status", "error"]
    pd.testing.assert_frame_equal(table[exact], expected[exact])
    probabilities = ["p_dog", "confidence"]
    pd.testing.assert_frame_equal(table[probabilities], expected[probabilities], atol=1e-5, rtol=0)


def marked(env: dict[str, str]) -> list[psutil.Process]:
    """The running processes whose environment carries `env`'s marker. (Ray's agents overwrite
    theirs when they rename themselves: they are found as children, see `descendants`.)"""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get(MARKER) == env[MARKER]:
                found.append(process)
    return found


def descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def running(process: psutil.Process) -> bool:
    """Running, not gone and not a zombie (exited, waiting for its parent to collect it)."""
    with contextlib.suppress(psutil.Error):
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return False


def still_running(processes: list[psutil.Process], timeout: float) -> list[str]:
    """Those of `processes` still running after `timeout` seconds, as "PID NAME"; they are killed."""
    deadline = time.monotonic() + timeout
    alive = [p for p in set(processes) if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if running(p)]
    left = []
    for process in alive:
        with contextlib.suppress(psutil.Error):
            left.append(f"{process.pid} {process.name()}")
            process.kill()
    return left


def run_watched(command: list[str], env: dict[str, str], log: Path) -> tuple[int, dict[psutil.Process, str]]:
    """Run `command` to its end (killed after RUN_SECONDS), its output in `log`: its exit code and
    every process seen under it while it ran, with its name (the Ray it starts, if any)."""
    with log.open("w") as f:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=f, stderr=f)
    started: dict[psutil.Process, str] = {}
    deadline = time.monotonic() + RUN_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        for child in descendants(process.pid):
            with contextlib.suppress(psutil.Error):
                started.setdefault(child, child.name())
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()
    return process.wait(), started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A Ray cluster started with `ray start` on this machine."""

    address: str
    env: dict[str, str]
    node_dirs: list[Path]  # each node's temp dir

    def alive_nodes(self) -> int:
        """Nodes alive, as a driver that joins the cluster sees them (0 while it cannot join)."""
        code = "import sys, ray; ray.init(sys.argv[1], logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"  # fmt: skip
        command = [sys.executable, "-c", code, self.address]
        run = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=STARTUP_SECONDS)
        return int(run.stdout) if run.returncode == 0 else 0

    def nodes_with_actor(self, actor: str) -> int:
        """Nodes whose worker logs show an actor of this name (Ray writes ":actor_name:NAME" there)."""
        def has_actor(node: Path) -> bool:
            logs = node.glob("session_*/logs/worker-*.out")
            return any(f":actor_name:{actor}\n" in log.read_text(errors="replace") for log in logs)

        return sum(has_actor(node) for node in self.node_dirs)


def ray_start(env: dict[str, str], temp_dir: Path, *options: str) -> subprocess.Popen:
    """One node of 1 CPU: `ray start --block` stays in the foreground, so that SIGTERM stops this
    node's processes and no others."""
    command = [str(RAY), "start", "--block", "--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats",
               f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={free_port()}", *options]  # fmt: skip
    with temp_dir.with_suffix(".log").open("w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    """A head and a second node on this machine, as `ray start --head` and `ray start --address`
    make them, each with its own temp dir and ports. The head's temp dir is $RAY_TMPDIR/ray, where
    `--ray-address auto` looks for the address of a cluster started on this machine."""
    root = Path(tempfile.mkdtemp(prefix="catsdogs-ray-"))
    env = ray_env(root) | {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # SIGTERM: stop now, not in 30 s
    port = free_port()
    cluster = LocalCluster(f"127.0.0.1:{port}", env, [root / "ray", root / "node2"])
    for node in cluster.node_dirs:
        node.mkdir()
    head = ray_start(env, cluster.node_dirs[0], "--head", f"--port={port}", "--include-dashboard=false",
                     f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}")  # fmt: skip
    starts = [head]
    try:
        starts.append(ray_start(env, cluster.node_dirs[1], f"--address={cluster.address}"))
        deadline = time.monotonic() + STARTUP_SECONDS
        while cluster.alive_nodes() < 2:
            for start, node in zip(starts, cluster.node_dirs):
                if start.poll() is not None:
                    log = node.with_suffix(".log").read_text()[-3000:]
                    pytest.fail(f"ray start exited {start.returncode}:\n{log}")
            if time.monotonic() > deadline:
                pytest.fail(f"the cluster at {cluster.address} did not have 2 nodes within {STARTUP_SECONDS} s")
            time.sleep(0.5)
        yield cluster
    finally:
        left = []
        for start in reversed(starts):  # the second node first, while the head still answers it
            processes = descendants(start.pid)
            start.send_signal(signal.SIGTERM)
            left += still_running(processes, EXIT_SECONDS)
            with contextlib.suppress(subprocess.TimeoutExpired):
                start.wait(EXIT_SECONDS)
            start.kill()  # if it is still there: its processes are gone
            start.wait()
        left += still_running(marked(env), EXIT_SECONDS)  # anything else of this cluster's environment
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes of the cluster still running {EXIT_SECONDS} s after SIGTERM (killed): {left}"


# The test that starts its own Ray runs first, before the module's cluster exists.


def test_without_an_address_the_command_starts_and_stops_a_ray_of_its_own(
    tiny_model, photos, local_table, ray_root, tmp_path
):
    env = ray_env(ray_root)
    out = tmp_path / "results.csv"
    code, started = run_watched(predict(tiny_model, photos, out), env, tmp_path / "predict.log")
    left = still_running([*started, *marked(env)], EXIT_SECONDS)

    assert code == 0, (tmp_path / "predict.log").read_text()[-3000:]
    assert_same_table(read_table(out), local_table)
    assert {"gcs_server", "raylet"} <= set(started.values())  # it started a Ray ...
    assert left == []  # ... and stopped all of it


def test_the_command_joins_a_cluster_with_ray_address_auto_and_leaves_it_running(
    ray_cluster, tiny_model, photos, local_table, tmp_path
):
    out = tmp_path / "results.csv"
    run = subprocess.run(predict(tiny_model, photos, out, "--ray-address", "auto"), env=ray_cluster.env, cwd=REPO,
                         capture_output=True, text=True, timeout=RUN_SECONDS)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    assert_same_table(read_table(out), local_table)
    assert ray_cluster.nodes_with_actor(POOL_ACTOR) == 2  # the pool had an actor on each node
    assert ray_cluster.alive_nodes() == 2  # the command did not shut down a cluster it joined


def test_without_an_address_the_command_starts_its_own_ray_beside_a_cluster(
    ray_cluster, tiny_model, photos, local_table, tmp_path
):
    """`ray start` records its cluster where `ray.init()` would join it: the command still
    starts a Ray of its own, as documented, and leaves the cluster alone."""
    out = tmp_path / "results.csv"
    code, started = run_watched(predict(tiny_model, photos, out), ray_cluster.env, tmp_path / "predict.log")
    left = still_running(list(started), EXIT_SECONDS)

    assert code == 0, (tmp_path / "predict.log").read_text()[-3000:]
    assert_same_table(read_table(out), local_table)
    assert {"gcs_server", "raylet"} <= set(started.values())  # a Ray of its own ...
    assert left == []  # ... gone once the command has returned
    assert ray_cluster.alive_nodes() == 2  # and the cluster still answers, both nodes alive
