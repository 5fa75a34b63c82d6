"""Pictures and pages a person reads: training curves, confusion matrix, the HTML report."""

from __future__ import annotations

import html
import io
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global backend, safe on headless workers


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def curves_png(history: list[dict[str, Any]], title: str) -> bytes:
    """Train/val loss and accuracy per epoch; a dashed line marks where fine-tuning began."""
    figure = Figure(figsize=(10, 4))
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for axis, key in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.plot(epochs, [row[key] for row in history], marker="o", label=f"train {key}")
        axis.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label=f"val {key}")
        boundaries = [row["epoch"] for previous, row in zip(history, history[1:]) if row["phase"] != previous["phase"]]
        for boundary in boundaries:
            axis.axvline(boundary - 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    figure.suptitle(title)
    return _png(figure)


def confusion_matrix_png(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    size = max(4.0, 0.7 * len(labels) + 2)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_title(title)
    return _png(figure)


def report_html(summary: dict[str, Any], mistakes: list[dict[str, Any]], confusion_png_name: str) -> str:
    """One page: headline metrics, per-class table with support, confusion matrix, worst mistakes."""
    escape = html.escape
    metrics = summary.get("metrics", {})

    def number(value: Any) -> str:
        return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else escape(str(value))

    rows = "".join(
        f"<tr{' class=low' if row['low_support'] else ''}><td>{escape(row['label'])}</td>"
        f"<td>{number(row['precision'])}</td><td>{number(row['recall'])}</td><td>{number(row['f1'])}</td>"
        f"<td>{row['support']}{' (low support)' if row['low_support'] else ''}</td></tr>"
        for row in metrics.get("per_class", [])
    )
    mistake_rows = "".join(
        f"<tr><td>{escape(str(m['image_uri']))}</td><td>{escape(str(m['label']))}</td>"
        f"<td>{escape(str(m['predicted_label']))}</td><td>{number(float(m['confidence']))}</td></tr>"
        for m in mistakes
    )
    unknown = summary.get("unknown_labels", {})
    unknown_text = ", ".join(f"{escape(k)} ({v} rows)" for k, v in unknown.items()) if unknown else "none"
    macro = metrics.get("macro", {})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Evaluation: {escape(summary["model_name"])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}tr.low{{background:#fff3cd}}</style></head>
<body><h1>Evaluation of {escape(summary["model_name"])} ({escape(summary["model_version"])})</h1>
<p>Catalog <code>{escape(summary["catalog"])}</code>, run <code>{escape(summary["run_id"])}</code>.</p>
<h2>Headline</h2><table>
<tr><th>rows evaluated</th><td>{metrics.get("rows", 0)}</td></tr>
<tr><th>accuracy</th><td>{number(metrics.get("accuracy"))}</td></tr>
<tr><th>macro F1</th><td>{number(macro.get("f1"))}</td></tr>
<tr><th>log loss</th><td>{number(metrics.get("loss"))}</td></tr>
<tr><th>expected calibration error</th><td>{number(metrics.get("expected_calibration_error"))}</td></tr>
<tr><th>rows with errors (not evaluated)</th><td>{summary.get("error_rows", 0)}</td></tr>
<tr><th>labels the model does not know</th><td>{unknown_text}</td></tr>
<tr><th>sent to review (low confidence)</th><td>{summary.get("review", {}).get("rows", 0)}</td></tr>
</table>
<h2>Per class</h2><p>Classes with fewer than 20 evaluated images are highlighted: their figures are noisy.</p>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
<h2>Confusion matrix</h2><img src="{escape(confusion_png_name)}" alt="confusion matrix">
<h2>Most confident mistakes</h2>
<table><tr><th>image</th><th>true</th><th>predicted</th><th>confidence</th></tr>{mistake_rows}</table>
</body></html>
"""
