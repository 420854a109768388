"""Shared fixtures (small generated images, one small trained model, the sample competition archive)
and the fast tier's CPU budget: a test not marked slow that costs more fails."""

from __future__ import annotations

import dataclasses

import logging
import os
import resource
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["pytester"]  # tests/test_fast_tier.py runs the budget below in a pytest of its own

# A cut-down copy of Kaggle's redux archive (train.zip with 5,000 images, test.zip with 1,000, the
# sample submission), kept beside the repository; CATSDOGS_SAMPLE_ARCHIVE points elsewhere.
SAMPLE_ARCHIVE = Path(
    os.environ.get("CATSDOGS_SAMPLE_ARCHIVE")
    or Path(__file__).resolve().parents[2] / "shared/data/dogs-vs-cats-redux-kernels-edition-mini.zip"
)
SAMPLE_ARCHIVE_MISSING = (
    f"sample archive not found: {SAMPLE_ARCHIVE} (copy the project's shared test data "
    "dogs-vs-cats-redux-kernels-edition-mini.zip there, or set CATSDOGS_SAMPLE_ARCHIVE to its path)"
)


# --- the fast tier's budget ------------------------------------------------------------------
# `-m "not slow"` is the tier people run while they work: a test left out of `slow` must stay cheap,
# so one that costs more than `fast_test_cpu_seconds` (setup.cfg) fails and says so. The cost is CPU
# time, not wall time: this process's and its finished subprocesses' user+sys seconds, so that a busy
# machine (CI, two cores shared) neither fails a cheap test nor hides a dear one. A test's cost is
# its call and its setup (teardown is not counted). A module or session fixture made during that
# setup (the model trained once, which 70 fast tests share) is a cost of the tier, paid once: it is
# held on its own against `fast_fixture_cpu_seconds` and reported by the first test that uses it
# (which one depends on the order: in the whole suite it may be a slow test, and then only a run of
# the fast tier tells).
CPU_COST = pytest.StashKey[float]()  # a test's own: setup (less its shared fixtures) and call
SHARED_COSTS = pytest.StashKey[dict[str, float]]()  # the module and session fixtures made for the test
RUNNING = pytest.StashKey[pytest.Item]()  # on the config: the test being set up or called


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("fast_test_cpu_seconds", "CPU seconds (setup + call) a test not marked slow may cost", default="3")
    parser.addini("fast_fixture_cpu_seconds", "CPU seconds a module or session fixture of such a test may cost", default="10")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its subprocesses that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _charged(item: pytest.Item) -> Iterator[None]:
    """Add the CPU seconds of the wrapped phase, less the shared fixtures made in it, to the item's cost."""
    item.config.stash[RUNNING] = item
    shared = item.stash.setdefault(SHARED_COSTS, {})
    before, start = sum(shared.values()), cpu_seconds()
    try:
        return (yield)
    finally:
        own = cpu_seconds() - start - (sum(shared.values()) - before)
        item.stash[CPU_COST] = item.stash.get(CPU_COST, 0.0) + own


class FastTierBudget:
    """The hooks of the budget, registered as a plugin: a conftest's own hooks do not see the
    making of a session fixture, which pytest runs with the hooks of the session's folder."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        return (yield from _charged(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from _charged(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Iterator[object]:
        """Record what making a module or session fixture cost, on the test it is made for."""
        start = cpu_seconds()
        try:
            return (yield)
        finally:
            item = request.config.stash.get(RUNNING, None)
            if fixturedef.scope != "function" and item is not None:
                item.stash.setdefault(SHARED_COSTS, {})[fixturedef.argname] = cpu_seconds() - start

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
        """A passing test not marked slow fails when it, or a shared fixture first made for it, cost
        more than its budget; the message gives the cost."""
        report = yield
        if call.when != "call" or not report.passed or item.get_closest_marker("slow") is not None:
            return report
        budget, fixture_budget = (float(item.config.getini(f"fast_{kind}_cpu_seconds")) for kind in ("test", "fixture"))
        over = []
        if (cost := item.stash.get(CPU_COST, 0.0)) > budget:
            over.append(f"cost {cost:.1f} CPU seconds (setup + call), over the fast tier's {budget:g} s (fast_test_cpu_seconds)")
        for name, cost in item.stash.get(SHARED_COSTS, {}).items():
            if cost > fixture_budget:
                over.append(
                    f"is the first to use the fixture {name}, which cost {cost:.1f} CPU seconds, over the fast "
                    f"tier's {fixture_budget:g} s for one (fast_fixture_cpu_seconds)"
                )  # fmt: skip
        if over:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} {' and '.join(over)}: mark it slow or make it faster"
        return report


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(FastTierBudget(), "fast-tier-budget")


@pytest.fixture(autouse=True)
def content_check_off_for_generated_images(request: pytest.FixtureRequest) -> Iterator[None]:
    """The images these tests make (reddish and bluish noise) hold neither a cat nor a dog, and
    the content check (content.py) rightly says so; tests of the engine, the tables and the
    sorting ask only cat or dog of them, as `--no-content-check` does: its default is off in
    this process (the flag's default and Labelling()'s), unless a test is marked content_check.
    Commands run as subprocesses keep the real default."""
    if request.node.get_closest_marker("content_check"):
        yield
        return
    from catsdogs_batch.options import Labelling

    names = [f.name for f in dataclasses.fields(Labelling)]
    defaults = list(Labelling.__init__.__defaults__)
    defaults[names.index("content_check")] = False
    with pytest.MonkeyPatch.context() as patch:  # its own: a test's monkeypatch.undo() keeps it
        patch.setattr(Labelling.__dataclass_fields__["content_check"], "default", False)
        patch.setattr(Labelling.__init__, "__defaults__", tuple(defaults))
        yield


def bound_by_permissions(source: str) -> None:
    """Run the Python `source` (its asserts) in a process that file permissions bind: as root, as
    CI runs, with the capabilities that override them dropped (util-linux's setpriv)."""
    command = [sys.executable, "-c", source]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def write_image(path: Path, label: int, size: int = 48, seed: int = 0, **save_options) -> Path:
    """A small image a tiny CNN can tell apart: cats are reddish, dogs bluish, with noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    pixels[..., 0 if label == 0 else 2] += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return path


# --- a command run in this process: its exit code, its output, its one-line error ---------------


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the stage's INFO lines (what `catsdogs` prints on stderr)."""
    caplog.set_level(logging.INFO)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from catsdogs_batch.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str, command: str = "download") -> None:
    """Exit code 1 and one error line, `catsdogs COMMAND: error: ...`, holding FRAGMENTS; stderr
    holds nothing else but a download's progress bar."""
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    line = lines[-1]
    assert line.startswith(f"catsdogs {command}: error: ")
    assert all(other.startswith("\r") or "%|" in other for other in lines[:-1]), lines
    for fragment in fragments:
        assert fragment in line


@pytest.fixture
def kaggle_train_folder(tmp_path: Path) -> Path:
    """24 labelled images named like Kaggle's train/ (cat.N.jpg, dog.N.jpg)."""
    folder = tmp_path / "train"
    for n in range(12):
        write_image(folder / f"cat.{n}.jpg", 0, seed=n)
        write_image(folder / f"dog.{n}.jpg", 1, seed=100 + n)
    return folder


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The sample archive's train/ and test/ unpacked once per test session."""
    if not SAMPLE_ARCHIVE.is_file():
        pytest.skip(SAMPLE_ARCHIVE_MISSING)
    root = tmp_path_factory.mktemp("sample")
    with zipfile.ZipFile(SAMPLE_ARCHIVE) as outer:
        for inner in ("train.zip", "test.zip"):
            with outer.open(inner) as f, zipfile.ZipFile(f) as z:
                z.extractall(root)
        outer.extract("sample_submission.csv", root)
    return root


@pytest.fixture(scope="session")
def keras_imported():
    """Keras and TensorFlow imported, once a session: a fixture of its own, so that the seconds
    of CPU the import costs count as its own, not as the first model fixture's."""
    import keras

    return keras


@pytest.fixture(scope="session")
def tiny_model(keras_imported, tmp_path_factory) -> Path:
    """A real checkpoint of this project (the seed's CNN, 32 px, 16 dense units, calibrated),
    trained once per session on 60
    generated images until it is sure of its answers: confident enough that its validation split
    (12 images) tells a faithful export from a broken one. Tests that write into a model folder
    work on a copy (see tests/test_export.py)."""
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.training.train import train

    root = tmp_path_factory.mktemp("tiny")
    for n in range(30):
        write_image(root / "train" / f"cat.{n}.jpg", 0, seed=n)
        write_image(root / "train" / f"dog.{n}.jpg", 1, seed=100 + n)
    options = TrainOptions(
        data=root / "train", out=root / "model", arch="seed", image_size=32, batch_size=8, epochs=4,
        learning_rate=3e-3, dense_units=16, dropout=0.0, fast_model=False,  # its exports are test_export's
    )  # fmt: skip
    return train(options)


@pytest.fixture(scope="session")
def second_model(tiny_model, tmp_path_factory) -> Path:
    """Another model of the same input size that answers differently: the tiny model with its
    logit halved (as a temperature of 2 would)."""
    import shutil

    import keras

    from catsdogs_batch.models.networks import scale_logit

    folder = tmp_path_factory.mktemp("second") / "model"
    shutil.copytree(tiny_model, folder)
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    scale_logit(model, 2.0)
    model.save(folder / "model.keras")
    return folder


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory) -> Path:
    """The shared checkpoint, sure enough of its answers that its validation split (12 images)
    tells a faithful export from a broken one; copied once per test module, since exports are
    written inside it (tests/test_export.py, tests/test_runtimes.py)."""
    import shutil

    return Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("export") / "model"))


@pytest.fixture(scope="module")
def exports(model):
    """Each export of `model` made once for the module, when first asked: exports(format, int8) -> its folder."""
    from catsdogs_batch.inference.export import export_model
    from catsdogs_batch.options import ExportOptions

    made = {}

    def get(format: str, int8: bool) -> Path:
        if (format, int8) not in made:
            made[format, int8], _ = export_model(ExportOptions(model, format, int8, calibration_images=40))
        return made[format, int8]

    return get


def write_photos(folder: Path) -> Path:
    """Six generated photos, 0.jpg to 5.jpg, cats and dogs in turn."""
    for n in range(6):
        write_image(folder / f"{n}.jpg", n % 2, seed=500 + n)
    return folder


def pixels(folder: Path, size: int = 32) -> np.ndarray:
    """The folder's images decoded at `size`, in name order: a batch for a runtime."""
    from catsdogs_batch.data.images import load_image

    return np.stack([load_image(p, size).pixels for p in sorted(folder.iterdir())])


def composite(left: Path, right: Path, out: Path) -> Path:
    """Two photos side by side, each 200 x 200: a cat beside a dog."""
    image = Image.new("RGB", (400, 200))
    image.paste(Image.open(left).convert("RGB").resize((200, 200)), (0, 0))
    image.paste(Image.open(right).convert("RGB").resize((200, 200)), (200, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, quality=92)
    return out


@pytest.fixture(scope="session")
def lite2_run(sample_dir, tmp_path_factory) -> Path:
    """The default architecture (EfficientNet-Lite2, a fitted head) trained on 60 of the
    sample's photos: its content check runs on its own features."""
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.training.train import train

    root = tmp_path_factory.mktemp("lite2")
    for kind in ("cat", "dog"):
        for n in range(30):
            (root / "train").mkdir(exist_ok=True)
            (root / "train" / f"{kind}.{n}.jpg").write_bytes((sample_dir / "train" / f"{kind}.{n}.jpg").read_bytes())
    return train(TrainOptions(data=root / "train", out=root / "run", workers=2))


@pytest.fixture
def mixed_folder(sample_dir, tmp_path) -> Path:
    """Photos of each answer: two cats, two dogs (not trained on), two pictures of no animal
    (a colour gradient, a checkerboard), and a cat beside a dog."""
    folder = tmp_path / "photos"
    folder.mkdir()
    train = sample_dir / "train"
    for name in ("cat.2000.jpg", "cat.2001.jpg", "dog.2000.jpg", "dog.2001.jpg"):
        (folder / name).write_bytes((train / name).read_bytes())
    y, x = np.mgrid[0:300, 0:400]
    Image.fromarray(np.stack([x * 255 // 400, y * 255 // 300, 255 - x * 255 // 400], -1).astype(np.uint8)).save(folder / "gradient.png")
    Image.fromarray((((x // 50 + y // 50) % 2) * 255).astype(np.uint8)).save(folder / "checkers.png")
    composite(train / "cat.2002.jpg", train / "dog.2002.jpg", folder / "pair.jpg")
    return folder


# --- Hypothesis: the profiles of the property tests (tests/test_properties.py) ----------------
# Registered here, before pytest's own start-up, so that `--hypothesis-profile NAME` still wins.
# catsdogs-fast (loaded by default) keeps the fast tier within its budget: few examples, the same
# ones every run (derandomize), no shrinking (minutes, for a failure: the slow twin shrinks it), no
# example database (a failure's example is kept in the test as an @example); catsdogs-slow, the one
# the slow twins of those tests run, searches far more widely.
_PROFILE = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile(
    "catsdogs-fast", max_examples=4, stateful_step_count=5, derandomize=True,
    phases=[Phase.explicit, Phase.generate], **_PROFILE,
)  # fmt: skip
settings.register_profile("catsdogs-slow", max_examples=40, stateful_step_count=12, print_blob=True, **_PROFILE)
settings.load_profile("catsdogs-fast")
