"""How the content check's thresholds were chosen: every quantity its rules read, computed once per
photo, then the rules swept over a grid, on a tuning half and checked on the other half.

    .venv/bin/python scripts/tune_content_check.py RUN [--no-animal FOLDER ...]

RUN: a default run trained on the sample's train/; its validation split is cut in two by
position (even: tuning, odd: checking), and each half's cats are pasted beside its dogs for the
composites. Photos of no animal: the folders given, else Debian's wallpapers and scikit-image's
pictures as scripts/benchmark_content.py gathers them (wallpapers tune, scikit-image checks).
For each photo: p_dog, the largest cell share on cats and dogs (`neither`), and the p_dog and
cat-or-dog share of its two halves (`both`; every photo is cut, so that the candidate band can
be swept). Prints the CPU, the ranges of the cell share per set, then the rules that meet the
targets on the tuning half with their figures on both halves."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_content import composites, skimage_pictures, wallpapers  # noqa: E402

from catsdogs_batch.cpu import cpu_description  # noqa: E402
from catsdogs_batch.models.content import BOTH_CANDIDATES, SIDES_APART  # noqa: E402
from catsdogs_batch.models.content import PRESENT as CONTENT_PRESENT  # noqa: E402
from catsdogs_batch.options import BOTH_ABOVE, NEITHER_BELOW  # noqa: E402

NEITHER = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
BAND = (0.98, 0.995, 0.997, 0.998, 0.999, 1.0)  # candidates: p_dog within (1 - band, band); 1.0: every photo
SURE = (0.8, 0.85, 0.88, 0.9, 0.95, 0.98)
APART = (0, 2, 3, 4, 5)  # the model's sides' logits at least this far apart (a default run's only)
PRESENT = (0.05, 0.1, 0.2)


def quantities(predictor, paths: list[Path]) -> dict[str, np.ndarray]:
    """What the rules read, for each photo (decoded as the engine decodes)."""
    from catsdogs_batch.models.content import Evidence, halves
    from catsdogs_batch.data.images import load_image

    out: dict[str, list] = {"p": [], "region": [], "gap": [], "half_p": [], "half_animal": []}
    for start in range(0, len(paths), 32):
        pixels = np.stack([load_image(path, predictor.image_size).pixels for path in paths[start : start + 32]])
        p, imagenet = predictor._predict(pixels, tta=False)
        parts = halves(pixels).reshape(-1, *pixels.shape[1:])
        half_p, half_imagenet = predictor._predict(parts, tta=False)
        whole, half = predictor._imagenet(pixels, imagenet), predictor._imagenet(parts, half_imagenet)
        out["p"].append(p)
        out["region"].append(whole.region)
        no_sides = np.full(len(pixels), np.inf)  # a model that is no default run: every unsure photo is cut
        out["gap"].append(no_sides if whole.sides is None else np.abs(whole.sides[:, 0] - whole.sides[:, 1]))
        out["half_p"].append(half_p.reshape(-1, 2))
        out["half_animal"].append((half.dog + half.cat).reshape(-1, 2))
    return {k: np.concatenate(v) for k, v in out.items()}


def verdicts(q: dict[str, np.ndarray], neither_below: float, band: float, sure: float, present: float, apart: float = 0):
    from catsdogs_batch.models.content import both_in_halves

    neither = q["region"] < neither_below
    candidate = ~neither & (q["p"] > 1 - band) & (q["p"] < band) if band < 1 else ~neither
    candidate &= q["gap"] >= apart
    both = candidate & both_in_halves(q["half_p"], q["half_animal"], sure, present)
    return neither, both, candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--no-animal", type=Path, nargs="*", help="folders of photos with no cat or dog (tuning)")
    parser.add_argument("--cache", type=Path, help="an .npz of the quantities: written once, read on later runs")
    args = parser.parse_args()

    from catsdogs_batch.data.images import iter_image_files
    from catsdogs_batch.inference.predictor import Predictor

    print(cpu_description())
    data = Path(json.loads((args.run / "run.json").read_text())["config"]["data"])
    split = [line.split(",") for line in (args.run / "split.csv").read_text().splitlines()[1:]]
    val = [(path, label) for path, label, subset in split if subset == "val"]
    if args.cache and args.cache.exists():
        with np.load(args.cache) as cached:
            q = {}
            for key in cached.files:
                name, field = key.split("|")
                q.setdefault(name, {})[field] = cached[key]
        sweep(q)
        return
    predictor = Predictor(args.run, content_check=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        none = [p for folder in args.no_animal for p in iter_image_files(folder)] if args.no_animal else wallpapers(tmp / "wall")
        sets = {"no animal (tuning)": none, "scikit-image (checking)": skimage_pictures()}
        for name, half in (("tuning", val[0::2]), ("checking", val[1::2])):
            sets[f"kaggle {name}"] = [data / path for path, _ in half]
            folder = composites(data, half, tmp / f"pairs-{name}", len(half))
            sets[f"pairs {name}"] = sorted(folder.iterdir())
        q = {name: quantities(predictor, [Path(p) for p in paths]) for name, paths in sets.items() if paths}
    if args.cache:
        np.savez(args.cache, **{f"{name}|{field}": v for name, values in q.items() for field, v in values.items()})
    sweep(q)


def sweep(q: dict[str, dict[str, np.ndarray]]) -> None:
    for name, values in q.items():
        print(f"{name}: {len(values['region'])} photos, largest cell share {np.percentile(values['region'], [0, 1, 50, 99, 100]).round(3)} (min, 1%, median, 99%, max)")
    rows, frontier = [], []
    for neither_below, band, sure, present, apart in itertools.product(NEITHER, BAND, SURE, PRESENT, APART):
        figures = {}
        for name, values in q.items():
            neither, both, candidate = verdicts(values, neither_below, band, sure, present, apart)
            figures[name] = (neither.mean(), both.mean(), candidate.mean())
        kaggle, pairs, none = figures["kaggle tuning"], figures["pairs tuning"], figures["no animal (tuning)"]
        if none[0] < 0.9:
            continue
        frontier.append((kaggle[0] + kaggle[1], -pairs[1], kaggle[2], neither_below, band, sure, present, apart, figures))
        if kaggle[0] + kaggle[1] <= 0.005 and pairs[1] >= 0.7:
            rows.append((kaggle[2], neither_below, band, sure, present, apart, figures))

    def show(cut, neither_below, band, sure, present, apart, figures):
        tuning, check = figures["kaggle tuning"], figures["kaggle checking"]
        print(
            f"neither_below {neither_below} band {band} sure {sure} present {present} apart {apart}: photos cut {cut:.1%}; "
            f"tuning: kaggle neither {tuning[0]:.2%} both {tuning[1]:.2%}, pairs both {figures['pairs tuning'][1]:.1%}; "
            f"checking: kaggle neither {check[0]:.2%} both {check[1]:.2%}, pairs both {figures['pairs checking'][1]:.1%}, "
            f"scikit-image neither {figures.get('scikit-image (checking)', (float('nan'),))[0]:.1%}"
        )

    print("\nrules meeting the targets on the tuning half (<= 0.5% of Kaggle photos neither or both, >= 70% of "
          "pairs both, >= 90% of no animal neither), fewest photos cut first:")  # fmt: skip
    for row in sorted(rows, key=lambda r: r[0])[:15]:
        show(*row)
    if not rows:
        print("none")
    print("\nthe most pairs called both among the rules with the fewest of the tuning half's Kaggle photos "
          "neither or both (at most 1%), then the fewest photos cut:")  # fmt: skip
    for row in sorted((r for r in frontier if r[0] <= 0.01), key=lambda r: (-r[1] < -0.7, r[0], r[1], r[2]))[:12]:
        show(*row[2:])
    for name in ("kaggle tuning", "kaggle checking", "pairs tuning", "pairs checking"):
        neither, both, candidate = verdicts(q[name], NEITHER_BELOW, BOTH_CANDIDATES, BOTH_ABOVE, CONTENT_PRESENT, SIDES_APART)
        print(f"the defaults on {name}: neither {neither.mean():.2%}, both {both.mean():.2%}, cut {candidate.mean():.1%}")


if __name__ == "__main__":
    main()
