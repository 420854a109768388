"""`catsdogs evaluate`: how well a model does on a folder labelled like the training data. Writes
into one folder `results.csv` (the engine's table with the true label), `metrics.json`, four
pictures and `report.html` showing them all; unreadable and unlabelled images are counted but
left out of the metrics (metrics.py's)."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..training.calibration import calibration_report, logit
from ..models.checkpoint import Checkpoint, Models, ensemble_name, find_checkpoints, model_paths
from ..inference.engine import predict_folder, table_lock
from ..errors import UserError
from ..files import atomic_write_json, atomic_write_text, shown
from ..data.images import CLASS_NAMES, ImageError, iter_image_files, label_from_path, load_image
from ..metrics import (
    EPS, THRESHOLD, accuracy, confusion_matrix, expected_calibration_error, log_loss, per_class, reliability_bins,
    roc_auc, roc_curve,
)  # fmt: skip
from ..options import EvaluateOptions, PredictOptions, check_options
from ..inference.tables import NOT_CAT_OR_DOG, read_table, with_true_labels
from ..side_files import METRICS_FILE, REPORT_FILE, RESULTS_FILE

log = logging.getLogger(__name__)

LISTED_ERRORS = 100  # unreadable files listed by name in metrics.json
PICTURES = {
    "confusion_matrix": "confusion_matrix.png",
    "roc_curve": "roc_curve.png",
    "reliability": "reliability.png",
    "confidently_wrong": "confidently_wrong.jpg",
}


def default_out(model: Models, folder: Path) -> Path:
    return Path("submissions") / f"evaluate-{ensemble_name(model)}-{folder.resolve().name}"


def binary_metrics(true: np.ndarray, p_dog: np.ndarray) -> dict:
    """Accuracy, log loss, ROC AUC, precision/recall per class, confusion matrix and calibration
    for true labels (0 cat, 1 dog) and predicted probabilities of dog."""
    if not len(true):
        raise UserError("no readable labelled images to evaluate")
    return {
        "images": len(true),
        "accuracy": accuracy(true, p_dog),
        "log_loss": log_loss(true, p_dog),
        "roc_auc": roc_auc(true, p_dog),
        "per_class": per_class(true, p_dog),
        "confusion_matrix": {"rows": "true", "columns": "predicted", "labels": list(CLASS_NAMES),
                             "counts": confusion_matrix(true, p_dog)},  # fmt: skip
        "expected_calibration_error": expected_calibration_error(true, p_dog),
        "reliability": reliability_bins(true, p_dog),
        "threshold": THRESHOLD,
        "log_loss_eps": EPS,
    }


def calibration_metrics(checkpoints: list[Checkpoint], true: np.ndarray, p_dog: np.ndarray) -> dict | None:
    """Log loss and calibration error with and without the temperature in the model's run.json (raw
    p_dog = sigmoid(T * logit(p_dog))). None without calibration, and for an ensemble or TTA (the mean of
    raw probabilities cannot be recovered from the mean of calibrated ones)."""
    temperature = checkpoints[0].run.get("calibration", {}).get("temperature")
    if len(checkpoints) > 1 or temperature is None or not len(true):
        return None
    return {"temperature": temperature, **calibration_report(true, temperature * logit(p_dog), temperature)}


def _calibration_rows(calibration: dict | None) -> str:
    if not calibration:
        return ""
    loss, ece = calibration["log_loss"], calibration["expected_calibration_error"]
    return (
        f'<tr><th>without calibration (temperature {calibration["temperature"]:.3f})</th>'
        f"<td>log loss {_number(loss['before'])}, calibration error {_number(ece['before'])}</td></tr>"
    )


def _figure(width: float = 4.6, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def draw_confusion_matrix(counts: list[list[int]], path: Path) -> None:
    figure = _figure()
    ax = figure.add_subplot()
    matrix = np.asarray(counts)
    ax.imshow(matrix, cmap="Blues", vmin=0)
    totals = matrix.sum(axis=1, keepdims=True)
    for (i, j), n in np.ndenumerate(matrix):
        share = n / totals[i, 0] if totals[i, 0] else 0
        ax.text(j, i, f"{n}\n{share:.1%} of {CLASS_NAMES[i]}s", ha="center", va="center",
                color="white" if n > matrix.max() / 2 else "black")  # fmt: skip
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    figure.savefig(path)


def draw_roc_curve(true: np.ndarray, p_dog: np.ndarray, auc: float | None, path: Path) -> None:
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    if auc is None:
        ax.text(0.5, 0.5, "needs images of both classes", ha="center")
    else:
        fpr, tpr = roc_curve(true, p_dog)
        ax.plot(fpr, tpr, label=f"model (AUC {auc:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (cats called dogs)",
           ylabel="true positive rate (dogs found)", title="ROC curve")  # fmt: skip
    ax.legend(loc="lower right")
    figure.savefig(path)


def draw_reliability(bins: list[dict], ece: float, path: Path) -> None:
    figure = _figure(4.6, 5.0)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    used = [b for b in bins if b["count"]]
    width = bins[0]["high"] - bins[0]["low"]
    top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    top.bar([b["low"] for b in used], [b["fraction_dog"] for b in used], width=width, align="edge",
            alpha=0.6, edgecolor="black", label="fraction that are dogs")  # fmt: skip
    top.plot([b["mean_p_dog"] for b in used], [b["fraction_dog"] for b in used], "o-", color="C1",
             label="at the bins' mean p_dog")  # fmt: skip
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="fraction of dogs", title=f"Reliability (ECE {ece:.3f})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar([b["low"] for b in bins], [b["count"] for b in bins], width=width, align="edge", color="grey")
    bottom.set(xlabel="predicted p_dog", ylabel="images")
    figure.savefig(path)


def draw_contact_sheet(folder: Path, wrong: pd.DataFrame, path: Path, thumb: int = 160, columns: int = 4) -> None:
    """A grid of thumbnails of the `wrong` rows (path, true_label, p_dog), each captioned with
    its file name, true label and probability of dog."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    caption, pad = 34, 6
    rows = max(1, -(-len(wrong) // columns))
    cell_w, cell_h = thumb + pad, thumb + caption + pad
    sheet = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if wrong.empty:
        draw.text((pad, pad), "no wrong predictions", fill="black", font=font)
    for n, row in enumerate(wrong.itertuples()):
        x, y = pad + (n % columns) * cell_w, pad + (n // columns) * cell_h
        try:
            sheet.paste(Image.fromarray(load_image(folder / row.path, thumb).pixels), (x, y))
        except ImageError as e:
            draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), fill="lightgrey")
            draw.text((x + 4, y + 4), str(e), fill="black", font=font)
        name = row.path if len(row.path) <= 26 else "..." + row.path[-23:]
        draw.text((x, y + thumb + 2), name, fill="black", font=font)
        draw.text((x, y + thumb + 17), f"true {row.true_label}, p_dog {row.p_dog:.3f}", fill="firebrick", font=font)
    sheet.save(path, quality=90)


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_report(metrics: dict, wrong: pd.DataFrame) -> str:
    """One HTML page with the numbers, the four pictures and the files left out."""
    e = html.escape
    counts = metrics["confusion_matrix"]["counts"]
    per_class = "".join(
        f"<tr><th>{name}</th><td>{_number(m['precision'])}</td><td>{_number(m['recall'])}</td>"
        f"<td>{m['support']}</td></tr>"
        for name, m in metrics["per_class"].items()
    )
    confusion = "".join(
        f"<tr><th>true {name}</th>" + "".join(f"<td>{n}</td>" for n in counts[i]) + "</tr>"
        for i, name in enumerate(CLASS_NAMES)
    )
    pictures = "".join(
        f'<figure><img src="{e(file)}" alt="{e(name)}"><figcaption>{e(name.replace("_", " "))}'
        "</figcaption></figure>"
        for name, file in PICTURES.items()
    )
    wrong_rows = "".join(
        f"<tr><td>{e(r.path)}</td><td>{e(r.true_label)}</td><td>{r.p_dog:.4f}</td></tr>" for r in wrong.itertuples()
    )
    unreadable = "".join(f"<li>{e(u['path'])}: {e(u['error'])}</li>" for u in metrics["unreadable"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation of {e(metrics["model"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
figure img {{ max-width: 100%; }}
</style></head><body>
<h1>Cats vs. dogs: evaluation</h1>
<p>Model <code>{e(metrics["model"])}</code> on <code>{e(metrics["folder"])}</code>:
{metrics["images"]} of {metrics["files"]} images evaluated ({metrics["errors"]} unreadable,
{metrics["unlabelled"]} without a label; {metrics["neither"]} called neither and {metrics["both"]} both by the
content check, still scored by their p_dog). Per-image results: <a href="{RESULTS_FILE}">{RESULTS_FILE}</a>;
all numbers: <a href="{METRICS_FILE}">{METRICS_FILE}</a>.</p>
<table>
<tr><th>accuracy</th><td>{_number(metrics["accuracy"])}</td></tr>
<tr><th>log loss</th><td>{_number(metrics["log_loss"])}</td></tr>
<tr><th>ROC AUC</th><td>{_number(metrics["roc_auc"])}</td></tr>
<tr><th>expected calibration error</th><td>{_number(metrics["expected_calibration_error"])}</td></tr>
{_calibration_rows(metrics.get("calibration"))}</table>
<h2>Per class</h2>
<table><tr><th></th><th>precision</th><th>recall</th><th>images</th></tr>{per_class}</table>
<h2>Confusion matrix</h2>
<table><tr><th></th><th>predicted cat</th><th>predicted dog</th></tr>{confusion}</table>
<h2>Pictures</h2>
{pictures}
<h2>Most confidently wrong</h2>
<table><tr><th>image</th><th>true</th><th>p_dog</th></tr>{wrong_rows}</table>
<h2>Unreadable files</h2>
<ul>{unreadable or "<li>none</li>"}</ul>
</body></html>
"""


@dataclass
class Evaluation:
    out: Path
    metrics: dict

    @property
    def report(self) -> Path:
        return self.out / REPORT_FILE

    def describe(self) -> str:
        m = self.metrics
        calibration = m.get("calibration")
        uncalibrated = f" ({calibration['log_loss']['before']:.4f} uncalibrated)" if calibration else ""
        return (
            f"{m['images']} images: accuracy {m['accuracy']:.4f}, log loss {m['log_loss']:.4f}{uncalibrated}, "
            f"ROC AUC {_number(m['roc_auc'])}; {m['errors']} unreadable, {m['unlabelled']} unlabelled, "
            f"{m['neither']} neither, {m['both']} both -> {shown(self.report)}"
        )


def _check_labelled(folder: Path) -> None:
    """Refuse early (before loading the model) a folder with no labelled image at all."""
    for path in iter_image_files(folder):
        if label_from_path(path.relative_to(folder)) is not None:
            return
    raise UserError(
        f"no labelled images in {folder}: name them like Kaggle's train/ (cat.1.jpg, dog.1.jpg) "
        "or put them in cat/ and dog/ folders"
    )


def evaluate_folder(options: EvaluateOptions) -> Evaluation:
    """Predict every image of a labelled folder and write the metrics, pictures and report."""
    check_options(options)
    out = options.out or default_out(options.model, options.folder)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: it names the folder the report goes into")
    outputs = [out / name for name in (RESULTS_FILE, METRICS_FILE, REPORT_FILE, *PICTURES.values())]
    existing = [p.name for p in outputs if p.exists()]
    if existing and not options.overwrite:
        raise UserError(f"{out} already holds {', '.join(existing)}: pass --overwrite to replace them")
    _check_labelled(options.folder)
    with table_lock(*outputs):  # the lock of the first, results.csv; the others' unfinished writes too
        return _evaluated(options, out)


def _evaluated(options: EvaluateOptions, out: Path) -> Evaluation:
    """The work of evaluate_folder, under its results table's lock (another evaluate into the same
    folder stops at once, and a killed one's half-written outputs are gone)."""
    results_path = out / RESULTS_FILE
    predict_folder(
        PredictOptions(options.model, options.folder, results_path, options.overwrite, options.engine, options.labelling),
        locked=True,
        relabel=lambda rows: with_true_labels(rows, [label_from_path(p) for p in rows["path"]]),
    )
    results = read_table(results_path, true_label=True)

    ok = results["status"] == "ok"
    errors = results[~ok]
    used = results[ok & (results["true_label"] != "")]
    true = (used["true_label"] == "dog").to_numpy(dtype=int)
    p_dog = used["p_dog"].to_numpy(dtype=float)
    metrics = {
        "model": " + ".join(str(path) for path in model_paths(options.model)),
        "folder": str(options.folder),
        "files": len(results),  # every image file; "images": those in the metrics
        **binary_metrics(true, p_dog),
        "calibration": None if options.engine.tta else calibration_metrics(find_checkpoints(options.model, options.engine.runtime), true, p_dog),
        "errors": len(errors),
        "unlabelled": int((ok & (results["true_label"] == "")).sum()),
        # labelled photos that the content check called neither or both (content.py); the
        # metrics above still score their p_dog
        **{label: int((used["label"] == label).sum()) for label in NOT_CAT_OR_DOG},
        "unreadable": [{"path": r.path, "error": r.error} for r in errors.head(LISTED_ERRORS).itertuples()],
    }
    atomic_write_json(out / METRICS_FILE, metrics)

    wrong = used[used["label"].isin(CLASS_NAMES) & (used["label"] != used["true_label"])]
    wrong = wrong.sort_values(["confidence", "path"], ascending=[False, True]).head(options.worst)
    draw_confusion_matrix(metrics["confusion_matrix"]["counts"], out / PICTURES["confusion_matrix"])
    draw_roc_curve(true, p_dog, metrics["roc_auc"], out / PICTURES["roc_curve"])
    draw_reliability(metrics["reliability"], metrics["expected_calibration_error"], out / PICTURES["reliability"])
    draw_contact_sheet(options.folder, wrong, out / PICTURES["confidently_wrong"])
    atomic_write_text(out / REPORT_FILE, render_report(metrics, wrong))
    return Evaluation(out, metrics)
