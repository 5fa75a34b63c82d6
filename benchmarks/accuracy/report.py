"""Rendering: results.md, reliability.png and accuracy.json (with the judged targets), from the results record."""

from __future__ import annotations

import io
import json
import math
import os

from benchmarks.accuracy.judging import imbalance_choice, judge
from benchmarks.accuracy.metrics import REPEATED, repeat_summary
from benchmarks.accuracy.settings import ECE_BINS, IMBALANCE_STRATEGIES, RUN_ORDER, default_imbalance
from benchmarks.common import write_json


def write_outputs(results: dict, output: str) -> None:
    """Sorts the rows into run order, judges the targets and (re)writes all three files."""
    os.makedirs(output, exist_ok=True)
    results["rows"] = sorted(results["rows"], key=_row_order)
    results["targets"] = judge(results)
    results["imbalance_choice"] = imbalance_choice(results)
    results["repeat_summary"] = repeat_summary(results["rows"])
    write_json(os.path.join(output, "accuracy.json"), results)
    with open(os.path.join(output, "results.md"), "w") as handle:
        handle.write(results_markdown(results))
    if results["rows"]:
        with open(os.path.join(output, "reliability.png"), "wb") as handle:
            handle.write(reliability_png(results))


def read_results(output: str) -> dict:
    """The results record of an earlier run in `output`.

    Raises:
        ValueError: `output` has no accuracy.json.
    """
    path = os.path.join(output, "accuracy.json")
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist")
    with open(path) as handle:
        return dict(json.load(handle))


def _row_order(row: dict) -> tuple:
    imbalance = row["imbalance"] if row["imbalance"] in IMBALANCE_STRATEGIES else ""
    is_default = imbalance == default_imbalance(row["model"])
    return (RUN_ORDER.index(row["variant"]), not is_default, imbalance, row.get("repeat", 1))


def reliability_png(results: dict) -> bytes:
    """One reliability diagram per row, uncalibrated and calibrated, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    columns = min(4, max(1, len(rows)))
    lines = max(1, math.ceil(len(rows) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3.6 * columns, 3.6 * lines), squeeze=False)
    for axis in axes.flat[len(rows) :]:
        axis.axis("off")
    for axis, row in zip(axes.flat, rows):
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for key, style, colour in (("uncalibrated", "--", "tab:red"), ("calibrated", "-", "tab:blue")):
            bins = [b for b in row["reliability"][key] if b["count"]]
            axis.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                style,
                marker="o",
                markersize=3,
                color=colour,
                label=f"{key} ECE {row['heldout']['ece_' + key]:.3f}",
            )
        axis.set_title(row["row"], fontsize=8)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence", fontsize=7)
        axis.set_ylabel("accuracy", fontsize=7)
        axis.tick_params(labelsize=6)
        axis.legend(fontsize=6, loc="upper left")
    figure.suptitle(
        f"Reliability on the held-out catalog ({results['heldout']['rows']} images, {ECE_BINS} bins)", fontsize=10
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def results_markdown(results: dict) -> str:
    """The human-readable report: setup, headline table, per-class F1, targets, imbalance choice."""
    out = [f"# Held-out accuracy: product vs the study's method ({results['finished_at'] or 'unfinished'})", ""]
    out += _setup(results)
    out += _headline_table(results)
    out += _repeats_table(results)
    out += _per_class_table(results)
    out += _targets(results)
    if results.get("notes"):
        out += ["", "## Notes", "", results["notes"].strip()]
    out += _reproduce(results)
    return "\n".join(out)


def _setup(results: dict) -> list[str]:
    minority = results["minority"]
    counts = ", ".join(f"{name} {count}" for name, count in results["catalog_counts"].items())
    split = results["split"]["counts"]
    return [
        f"- Training catalog: `{results['catalog']}` ({counts}); the same 70/15/15 split for every variant "
        f"(hash `{results['split']['hash']}`, seed {results['split']['seed']}; minority class **{minority}**: "
        f"{split['train'].get(minority)} train / {split['val'].get(minority)} val / "
        f"{split.get('test', {}).get(minority)} test images).",
        f"- Held-out catalog: {results['heldout']['note']}; {results['heldout']['rows']} images, none seen in "
        "training or model selection.",
        f"- Image size {results['image_size']} px. Schedule: {results['schedule_text']}.",
        f"- MobileNetV2 pretrained weights: **{results['weights']}**. These are not ImageNet results.",
        "- Product rows: Ray Train (2 workers × 0.5 CPU, global batch "
        f"{2 * results['schedule']['product_batch_per_worker']}) then Ray Data scoring; held-out figures are the "
        "scoring run's `evaluation/summary.json` (temperature-calibrated). Baseline rows: one-process Keras `fit` "
        f"(batch {results['schedule']['batch_size']}) with the study's augmentation on training batches only, "
        "early stopping, two-phase schedule for MobileNetV2; no calibration as published (their 'ECE after' "
        "is what a temperature fitted on their validation split would give).",
        "",
    ]


def _headline_table(results: dict) -> list[str]:
    minority = results["minority"]
    header = [
        "variant",
        "model",
        "imbalance",
        "input",
        "acc [95% CI]",
        "macro-F1 [95% CI]",
        f"F1 {minority} (minority) [95% CI]",
        "log loss",
        "ECE before",
        "ECE after",
        "epochs",
        "train s",
    ]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + [_headline_row(row) for row in results["rows"]]


def _with_interval(held: dict, key: str) -> str:
    """A held-out figure and its 95% interval, "0.912 [0.897, 0.926]" (rows from before intervals: the figure)."""
    interval = held.get(f"{key}_interval")
    return _f(held[key]) + (f" [{_f(interval[0])}, {_f(interval[1])}]" if interval else "")


def _repeats_table(results: dict) -> list[str]:
    """Mean ± std over the repeats of each row, beside the mean half-width of one run's interval."""
    names = {"accuracy": "acc", "macro_f1": "macro-F1", "minority_f1": f"F1 {results['minority']}"}
    header = ["variant", "runs"] + [f"{names[key]} mean ± std (95% CI ±)" for key in REPEATED]
    out = ["", "Over the repeats (std: training's run-to-run noise; CI ±: mean half-width of one run's 95% "
           "bootstrap interval over the held-out images):", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    for entry in results.get("repeat_summary", []):
        cells = [f"`{entry['row']}`", str(entry["repeats"])]
        for key in REPEATED:
            figures = entry[key]
            std = "—" if figures["std"] is None else _f(figures["std"])
            cells.append(f"{_f(figures['mean'])} ± {std} (±{_f(figures['interval_half_width'])})")
        out.append("| " + " | ".join(cells) + " |")
    return out


def _headline_row(row: dict) -> str:
    held = row["heldout"]
    imbalance = (
        row["imbalance"]
        if row["family"] == "product"
        else ("string-keyed weights (no effect)" if "string" in row["imbalance"] else "class_weight")
    )
    cells = [
        f"`{row['row']}`",
        row["model"],
        imbalance,
        f"[{row['input_pixels'][0]:g},{row['input_pixels'][1]:g}]",
        _with_interval(held, "accuracy"),
        f"**{_with_interval(held, 'macro_f1')}**",
        _with_interval(held, "minority_f1"),
        _f(held["log_loss"]),
        _f(held["ece_uncalibrated"]),
        _f(held["ece_calibrated"]),
        str(row["epochs_run"]),
        _f(row["train_seconds"], 0),
    ]
    return "| " + " | ".join(cells) + " |"


def _per_class_table(results: dict) -> list[str]:
    names = results["class_names"]
    out = ["", "Per-class F1 on the held-out catalog:", ""]
    out += ["| variant | " + " | ".join(names) + " | internal-test macro-F1 |", "|" + "---|" * (len(names) + 2)]
    for row in results["rows"]:
        out.append(
            f"| `{row['row']}` | "
            + " | ".join(_f(row["heldout"]["per_class_f1"][n]) for n in names)
            + f" | {_f(row['internal_test']['macro_f1'])} |"
        )
    return out


def _targets(results: dict) -> list[str]:
    out = ["", "## Targets", "", "| target | status | numbers |", "|---|---|---|"]
    out += [f"| {t['target']} | **{t['status']}** | {t['detail']} |" for t in results["targets"]]
    if results["imbalance_choice"]:
        out += ["", "## Imbalance strategy by evidence", ""]
        for variant, choice in results["imbalance_choice"].items():
            ranking = "; ".join(
                f"{r['imbalance']} {r['macro_f1']:.3f} (minority {r['minority_f1']:.3f})" for r in choice["ranking"]
            )
            out.append(
                f"- `{variant}`: held-out macro-F1 ranking {ranking}. Best: **{choice['best_by_heldout']}** "
                f"(current default `{choice['current_default']}`, margin {_f(choice['margin_over_default'])}); "
                f"the internal test split would have picked `{choice['best_by_internal_test']}`. "
                "One training run per strategy: differences of a few points are within run-to-run noise."
            )
    return out


def _reproduce(results: dict) -> list[str]:
    return [
        "",
        "Reliability diagrams: `reliability.png`. Full numbers: `accuracy.json`.",
        "",
        "Reproduce (from the repository root):",
        "",
        "```bash",
        *results.get("earlier_commands", []),
        results["command"],
        "```",
        "",
        f"Wall time {results['wall_seconds'] + results.get('earlier_wall_seconds', 0.0):.0f} s on "
        f"{results['machine']['cpus']} CPUs "
        f"(load average at start {results['machine']['load_average']}).",
        "",
    ]
