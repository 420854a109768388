"""A picture of `catsdogs review` on real photos: 14 of them in a results table, served by
`catsdogs review` and shown in a headless Chromium at 900x600.

    .venv/bin/python scripts/review_screenshot.py [PHOTOS] [--model RUN] [--out review.png]

PHOTOS is a folder holding train/ with Kaggle's names (cat.N.jpg, dog.N.jpg), or the sample
archive (the default: the one the tests read). With --model, the photos and their p_dog are the
model's: the 12 it is least sure of and the 2 it gets most confidently wrong among 400 training
photos. Without, 14 fixed photos get the fixed p_dog the page's test uses (12 uncertain, 2
disagreements): a picture of the page, not of a model. The competition's photos are Kaggle's and
not ours to publish, so docs/review.png shows generated pictures; make it with photos you may
publish (`--out docs/review.png`). Needs Debian's chromium and chromium-driver (or Chrome's) and
selenium (the dev extra).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from catsdogs_batch.inference.tables import with_true_labels  # noqa: E402
from catsdogs_batch.inference.tables import COLUMNS, DTYPES, ok_row, read_table, row_values, write_table  # noqa: E402

SAMPLE = REPOSITORY.parent / "shared/data/dogs-vs-cats-redux-kernels-edition-mini.zip"
WIDTH, HEIGHT = 900, 600
# Without a model: the test's band (12 uncertain, in queue order) and a cat the model would be sure
# is a dog and a dog it would be sure is a cat.
FIXED = [("cat", 0.5), ("dog", 0.47), ("dog", 0.56), ("cat", 0.41), ("cat", 0.62), ("dog", 0.35), ("dog", 0.68),
         ("cat", 0.3), ("dog", 0.72), ("cat", 0.25), ("cat", 0.77), ("dog", 0.22), ("cat", 0.97), ("dog", 0.05)]  # fmt: skip
POOL = 200  # photos of each class predicted with --model
CURRENT = "return document.querySelector('.tile.current .name').textContent"


def copy_photos(sample: Path, names: list[str], folder: Path) -> None:
    """Copy train/NAME of the sample (its archive, or a folder holding train/) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if sample.is_dir():
        for name in names:
            shutil.copyfile(sample / "train" / name, folder / name)
        return
    with zipfile.ZipFile(sample) as outer, outer.open("train.zip") as inner, zipfile.ZipFile(inner) as train:
        for name in names:
            (folder / name).write_bytes(train.read(f"train/{name}"))


def fixed_table(sample: Path, work: Path) -> tuple[Path, tuple[float, float]]:
    """The 14 photos cat.0-6.jpg and dog.0-6.jpg with the fixed p_dog: the table and its band."""
    counts = {"cat": 0, "dog": 0}
    names = []
    for label, _ in FIXED:
        names.append(f"{label}.{counts[label]}.jpg")
        counts[label] += 1
    copy_photos(sample, names, work / "photos")
    return write_results(work, names, [p for _, p in FIXED]), (0.2, 0.8)


def model_table(sample: Path, model: Path, work: Path) -> tuple[Path, tuple[float, float]]:
    """The model's 12 least sure and 2 most confidently wrong of POOL cats and POOL dogs: the
    table and a band around 0.5 that holds the 12."""
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import EngineOptions, PredictOptions

    names = [f"{label}.{n}.jpg" for label in ("cat", "dog") for n in range(POOL)]
    copy_photos(sample, names, work / "pool" / "train")
    predict_folder(PredictOptions(model, work / "pool" / "train", work / "pool.csv", engine=EngineOptions(progress=False)))
    table = read_table(work / "pool.csv")
    table = table[table["status"] == "ok"]
    p = table["p_dog"].to_numpy()
    wrong = np.flatnonzero((p >= 0.5) != table["path"].str.startswith("dog").to_numpy())
    wrong = wrong[np.argsort(-np.abs(p[wrong] - 0.5))][:2]
    unsure = [i for i in np.argsort(np.abs(p - 0.5)) if i not in wrong][: 14 - len(wrong)]
    picked = list(table["path"].iloc[[*unsure, *wrong]])
    copy_photos(work / "pool", picked, work / "photos")  # a folder of the 14 only: the table's
    width = float(np.abs(p[unsure] - 0.5).max()) + 1e-3
    return write_results(work, picked, list(p[[*unsure, *wrong]])), (max(0.5 - width, 0), min(0.5 + width, 1))


def write_results(work: Path, names: list[str], p_dog: list[float]) -> Path:
    """Evaluate's table (a results table with true labels) of the photos in work/photos."""
    rows = []
    for name, p in zip(names, p_dog):
        with Image.open(work / "photos" / name) as image:
            rows.append(row_values(ok_row(name, float(p), *image.size)))
    frame = pd.DataFrame(rows, columns=COLUMNS).astype({c: t for c, t in DTYPES.items() if c in COLUMNS})
    write_table(work / "results.csv", [with_true_labels(frame, [int(name.startswith("dog")) for name in names])])
    return work / "results.csv"


def serve(table: Path, photos: Path, band: tuple[float, float]) -> tuple[subprocess.Popen, str]:
    """`catsdogs review` as a user runs it: the process and the URL it prints."""
    command = [sys.executable, "-m", "catsdogs_batch.cli", "review", str(table), "--images", str(photos),
               "--uncertain", str(band[0]), str(band[1]), "--no-browser"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
    printed = []
    for line in process.stderr:
        printed.append(line)
        if "review page: " in line:
            return process, line.split("review page: ")[1].split()[0]
    raise SystemExit(f"catsdogs review printed no URL: {''.join(printed)}")


def screenshot(url: str) -> bytes:
    """The page at WIDTH x HEIGHT after two decisions (the first two rows' true labels), the
    first row selected again."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        raise SystemExit("no headless browser: install chromium and chromium-driver (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    try:
        def wait_for(script: str, *arguments):
            return WebDriverWait(browser, 30).until(lambda b: b.execute_script(script, *arguments))

        progress = "return document.getElementById('progress').textContent"
        browser.get(url)
        wait_for("return [...document.querySelectorAll('.tile img')].length > 0")
        wait_for("return [...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth > 0)")
        first = browser.execute_script(CURRENT)
        for n in (1, 2):  # the first two decided, each as its name says
            label = "d" if browser.execute_script(CURRENT).startswith("dog") else "c"
            ActionChains(browser).send_keys(label).perform()
            wait_for(progress + f".startsWith('Reviewed {n} /')")
        ActionChains(browser).send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT).perform()
        wait_for(CURRENT + " === arguments[0]", first)
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}
        )
        return browser.get_screenshot_as_png()
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sample", type=Path, nargs="?", default=SAMPLE, help="a folder holding train/, or the sample archive")
    parser.add_argument("--model", type=Path, help="a run folder: its p_dog and the photos it is least sure of")
    parser.add_argument("--out", type=Path, default=Path("review.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="review-screenshot-") as work:
        work = Path(work)
        table, band = model_table(args.sample, args.model, work) if args.model else fixed_table(args.sample, work)
        process, url = serve(table, work / "photos", band)
        try:
            png = screenshot(url)
        finally:
            process.kill()
            process.wait()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (WIDTH, HEIGHT), image.size
    image.save(args.out, "PNG", optimize=True)
    print(f"{args.out}: {image.size[0]}x{image.size[1]}, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
