"""The content check's figures (issue: neither and both): on photos of no animal, on the sample's
validation split, on a cat beside a dog, and what it costs.

    .venv/bin/python scripts/benchmark_content.py RUN [--seed-run SEED_RUN] [--no-animal FOLDER ...]

RUN: a default run (EfficientNet-Lite2, fitted head) trained on the sample archive's train/
(its split.csv names the validation photos). Photos of no animal: the folders given, else the
photographs and pictures of Debian's wallpaper packages (apt-get download, unpacked into a
temporary folder, never into the tree) and, where scikit-image is installed, its sample images
that hold no animal. Composites: each validation cat pasted beside a validation dog, 200 x 200
each. Prints the CPU, then each figure."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from catsdogs_batch.cpu import cpu_description  # noqa: E402

WALLPAPERS = (
    "plasma-workspace-wallpapers", "ukui-wallpapers", "lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
)
# Looked at one by one: these hold animals (two dogs at a window; a bird, a fish, a mouse, a
# dragonfly): left out of "no cat or dog" where they hold one (the dogs), kept where they hold
# another animal (that is neither too)
HOLDS_A_DOG = ("friends_by_Aitzol_Berasategi",)
SKIMAGE_NO_ANIMAL = (
    "astronaut.png", "brick.png", "camera.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "page.png", "rocket.jpg", "text.png",
    "retina.jpg", "color.png", "ihc.png", "cell.png", "clock_motion.png", "logo.png",
)  # fmt: skip


def wallpapers(into: Path) -> list[Path]:
    """One picture per wallpaper of Debian's packages (the largest), without their thumbnails."""
    debs = into / "debs"
    debs.mkdir(parents=True)
    subprocess.run(["apt-get", "download", *WALLPAPERS], cwd=debs, check=True, capture_output=True)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into / "root")], check=True)
    pictures: dict[str, Path] = {}
    for path in sorted((into / "root").rglob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or path.stem == "screenshot":
            continue
        key = path.parts[path.parts.index("wallpapers") + 1] if "wallpapers" in path.parts else path.stem
        if any(name in key for name in HOLDS_A_DOG):
            continue
        if key not in pictures or path.stat().st_size > pictures[key].stat().st_size:
            pictures[key] = path
    return list(pictures.values())


def skimage_pictures() -> list[Path]:
    try:
        import skimage.data
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in SKIMAGE_NO_ANIMAL if (folder / name).is_file()]


def gather(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for n, path in enumerate(paths):
        (folder / f"{n:03d}-{path.name}").symlink_to(path)
    return folder


def composites(data: Path, val: list[tuple[str, str]], folder: Path, count: int) -> Path:
    """`count` validation cats each beside a validation dog (alternating sides), 200 x 200 each."""
    folder.mkdir(parents=True)
    cats = [p for p, label in val if label == "cat"][:count]
    dogs = [p for p, label in val if label == "dog"][:count]
    for n, (cat, dog) in enumerate(zip(cats, dogs)):
        image = Image.new("RGB", (400, 200))
        pair = [Image.open(data / cat).convert("RGB").resize((200, 200)), Image.open(data / dog).convert("RGB").resize((200, 200))]
        if n % 2:
            pair.reverse()
        image.paste(pair[0], (0, 0))
        image.paste(pair[1], (200, 0))
        image.save(folder / f"pair.{n}.jpg", quality=92)
    return folder


def labels(run: Path, folder: Path, out: Path, labelling, files=None) -> dict:
    """The table `predict` writes for `folder` with `labelling`, and its images per second once the
    model is loaded (the first batch's wait left out)."""
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import EngineOptions, PredictOptions
    from catsdogs_batch.inference.tables import read_table

    options = PredictOptions(run, folder, out, overwrite=True, labelling=labelling, files=files,
                             engine=EngineOptions(progress=False))  # fmt: skip
    summary = predict_folder(options)
    return {"table": read_table(out), "rate": summary.images_per_second_after_startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--seed-run", type=Path, help="a run of --arch seed: the same figures beside another model")
    parser.add_argument("--no-animal", type=Path, nargs="*", help="folders of photos with no cat or dog")
    parser.add_argument("--composites", type=int, default=200, help="cat|dog pairs made from the validation split")
    args = parser.parse_args()

    from catsdogs_batch.metrics import accuracy, log_loss
    from catsdogs_batch.options import Labelling

    print(cpu_description())
    run_record = json.loads((args.run / "run.json").read_text())
    data = Path(run_record["config"]["data"])
    split = [line.split(",") for line in (args.run / "split.csv").read_text().splitlines()[1:]]
    val = [(path, label) for path, label, subset in split if subset == "val"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.no_animal:
            sets = {str(folder): folder for folder in args.no_animal}
        else:
            sets = {"Debian wallpapers": gather(wallpapers(tmp / "wall"), tmp / "wallpapers")}
            pictures = skimage_pictures()
            if pictures:
                sets["scikit-image samples"] = gather(pictures, tmp / "skimage")
        pairs = composites(data, val, tmp / "pairs", args.composites)
        runs = {"default run": args.run} | ({"seed run": args.seed_run} if args.seed_run else {})
        for name, run in runs.items():
            print(f"\n== {name}: {run}")
            for what, folder in sets.items():
                result = labels(run, folder, tmp / "none.csv", Labelling())
                share = (result["table"]["label"] == "neither").mean()
                print(f"no animal, {what}: {share:.1%} neither of {len(result['table'])}")
            result = labels(run, pairs, tmp / "pairs.csv", Labelling())
            print(f"a cat beside a dog: {(result['table']['label'] == 'both').mean():.1%} both of {len(result['table'])}")
            files = tuple(path for path, _ in val)
            # off and on twice, alternately, the faster of each: the first run of a process pays for
            # what the second finds ready (files in the page cache, TensorFlow's kernels)
            off = labels(run, data, tmp / "val-off.csv", Labelling(content_check=False), files)
            on = labels(run, data, tmp / "val-on.csv", Labelling(), files)
            off["rate"] = max(off["rate"], labels(run, data, tmp / "val-off.csv", Labelling(content_check=False), files)["rate"])
            on["rate"] = max(on["rate"], labels(run, data, tmp / "val-on.csv", Labelling(), files)["rate"])
            table, truth = on["table"], np.array([label == "dog" for _, label in val], dtype=int)
            gated = table["label"].isin(["neither", "both"]).to_numpy()
            p = table["p_dog"].to_numpy(dtype=float)
            print(
                f"validation split ({len(val)} photos): {gated.sum()} neither or both ({gated.mean():.2%}: "
                f"{(table['label'] == 'neither').sum()} neither, {(table['label'] == 'both').sum()} both); "
                f"accuracy {accuracy(truth, p):.4f} on all, {accuracy(truth[~gated], p[~gated]):.4f} on the rest"
            )
            clipped = np.clip(p, 0.001, 0.999)
            moved = np.where(table["label"] == "neither", 0.5, clipped)
            print(f"submission's log loss on it: {log_loss(truth, clipped):.4f} as p_dog, "
                  f"{log_loss(truth, moved):.4f} with neither moved to 0.5")  # fmt: skip
            print(f"label speed: {on['rate']:.1f} img/s with the content check, {off['rate']:.1f} without "
                  f"({on['rate'] / off['rate']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
