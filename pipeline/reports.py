"""Pictures and pages a person reads: training curves, confusion matrix, reliability diagram,
thumbnails, the evaluation report and the page comparing models.

Pages are self-contained where it matters: thumbnails are embedded as data URIs, so a report copied
elsewhere or served from S3 never links back to the catalog's own paths. Every figure a page shows
carries `data-field` (its dotted path in summary.json) and `data-value` (the exact number), so a
test can compare what a person sees with what was written.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend, safe on headless workers
from PIL import Image

from pipeline.images import ImageError, decode_image

THUMBNAIL_SIZE = 96


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


def reliability_png(series: Sequence[tuple[str, dict[str, Any]]], title: str) -> bytes:
    """One reliability diagram per named set of calibration bins (count, confidence_sum, correct):
    accuracy against mean confidence per bin, the diagonal being perfect calibration, so a reader
    sees where the model is over- or under-confident, and what calibration changed."""
    figure = Figure(figsize=(4.5 * len(series), 4.8))
    axes = figure.subplots(1, len(series), squeeze=False)[0]
    for axis, (name, bins) in zip(axes, series):
        count = np.asarray(bins["count"], dtype=np.float64)
        used = count > 0
        edges = np.linspace(0.0, 1.0, len(count) + 1)
        accuracy = np.divide(np.asarray(bins["correct"], dtype=np.float64), count, out=np.zeros_like(count), where=used)
        mean = np.divide(
            np.asarray(bins["confidence_sum"], dtype=np.float64), count, out=np.zeros_like(count), where=used
        )
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
        axis.bar(edges[:-1][used], accuracy[used], width=np.diff(edges)[used], align="edge", alpha=0.5,
                 edgecolor="C0", label="accuracy in bin")  # fmt: skip
        axis.plot(mean[used], accuracy[used], marker="o", color="C1", label="mean confidence → accuracy")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_title(f"{name}\n({int(count.sum())} rows)", fontsize=9)
    axes[0].legend(loc="upper left", fontsize=8)
    figure.suptitle(title)
    return _png(figure)


def placeholder_png(size: int = THUMBNAIL_SIZE) -> bytes:
    """A grey square shown where a thumbnail could not be made, so the page keeps its layout."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 200, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail(data: bytes | ImageError, size: int = THUMBNAIL_SIZE) -> tuple[str, str | None]:
    """A small JPEG data URI of an image's bytes, and None; or a placeholder PNG data URI and why.

    Decoding goes through `decode_image`, so the product's pixel limit and EXIF handling apply to
    the report too and a hostile image is refused before it is allocated.
    """
    try:
        if isinstance(data, ImageError):
            raise data
        pixels = decode_image(data, size)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
        return _data_uri("image/jpeg", buffer.getvalue()), None
    except ImageError as error:
        return _data_uri("image/png", placeholder_png(size)), str(error)


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def png_data_uri(data: bytes) -> str:
    return _data_uri("image/png", data)


# --------------------------------------------------------------------------- HTML


_STYLE = """body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}tr.low{background:#fff3cd}
.pictures{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:10em;font-size:85%}
figure img{display:block}.problem{color:#a00}.models{display:flex;gap:2em;flex-wrap:wrap}
.models>section{flex:1;min-width:25em}img.figure{max-width:100%}
.warning{background:#fff3cd;border:1px solid #e0c060;padding:0 1em}"""


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _cell(field: str, value: Any, model: str | None = None, tag: str = "td") -> str:
    """A table cell showing a figure, naming its summary.json path and its exact value."""
    owner = f' data-model="{html.escape(model)}"' if model is not None else ""
    exact = "null" if value is None else repr(value)
    return f'<{tag} data-field="{html.escape(field)}" data-value="{html.escape(exact)}"{owner}>{_number(value)}</{tag}>'


def _interval(field: str, interval: Sequence[float] | None, model: str | None = None) -> str:
    """A 95% interval as "[low, high]", each bound a figure naming its summary.json path
    (`field`.0 and `field`.1); "—" where the summary has none (no rows, or written before intervals)."""
    if not interval:
        return '<span class="interval">—</span>'
    low, high = (_cell(f"{field}.{i}", float(interval[i]), model, tag="span") for i in (0, 1))
    return f'<span class="interval">[{low}, {high}]</span>'


@dataclass(frozen=True)
class Picture:
    """One row shown as a thumbnail: the image's data URI, and why it is a placeholder, if it is."""

    image_uri: str
    label: str | None
    predicted_label: str | None
    confidence: float
    source: str  # data URI
    problem: str | None = None


def _pictures(pictures: Sequence[Picture], kind: str) -> str:
    if not pictures:
        return "<p>None.</p>"
    escape = html.escape
    figures = "".join(
        f'<figure class="{kind}"><img src="{picture.source}" width="{THUMBNAIL_SIZE}" height="{THUMBNAIL_SIZE}"'
        f' alt="{escape(str(picture.image_uri))}" title="{escape(str(picture.image_uri))}">'
        f"<figcaption>true <b>{escape(str(picture.label if picture.label is not None else '—'))}</b><br>"
        f"predicted <b>{escape(str(picture.predicted_label))}</b><br>confidence {_number(picture.confidence)}"
        + (f'<br><span class="problem">{escape(picture.problem)}</span>' if picture.problem else "")
        + "</figcaption></figure>"
        for picture in pictures
    )
    return f'<div class="pictures">{figures}</div>'


def _headline_rows(summary: dict[str, Any], model: str | None = None) -> str:
    metrics = summary.get("metrics", {})
    unknown = summary.get("unknown_labels", {})
    unknown_text = ", ".join(f"{html.escape(k)} ({v} rows)" for k, v in unknown.items()) if unknown else "none"
    intervals = {
        "metrics.accuracy": _interval("metrics.accuracy_interval", metrics.get("accuracy_interval"), model),
        "metrics.macro.f1": _interval("metrics.macro.f1_interval", metrics.get("macro", {}).get("f1_interval"), model),
    }
    figures = [
        ("rows evaluated", "metrics.rows", metrics.get("rows", 0)),
        ("accuracy", "metrics.accuracy", metrics.get("accuracy")),
        ("macro F1", "metrics.macro.f1", metrics.get("macro", {}).get("f1")),
        ("log loss", "metrics.loss", metrics.get("loss")),
        ("expected calibration error", "metrics.expected_calibration_error", metrics.get("expected_calibration_error")),
        ("rows with errors (not evaluated)", "error_rows", summary.get("error_rows", 0)),
        ("sent to review (low confidence)", "review.rows", summary.get("review", {}).get("rows", 0)),
        ("accuracy of the rest", "review.accuracy_on_rest", summary.get("review", {}).get("accuracy_on_rest")),
    ]
    rows = "".join(
        f"<tr><th>{name}</th>{_cell(field, value, model)}<td>{intervals.get(field, '')}</td></tr>"
        for name, field, value in figures
    )
    return rows + f"<tr><th>labels the model does not know</th><td colspan=2>{unknown_text}</td></tr>"


def _interval_note(metrics: dict[str, Any]) -> str:
    """How the intervals were made, from the summary's own record of it."""
    made = metrics.get("intervals")
    if not made:
        return "<p>This summary was written without intervals.</p>"
    return (
        f'<p id="interval-method">95% intervals: {html.escape(str(made["method"]))}, {made["resamples"]} resamples,'
        f" seed {made['seed']}. Two models whose intervals overlap may still differ: compare them on the same"
        " images with the paired comparison.</p>"
    )


def _calibration_rows(calibration: dict[str, Any] | None, series: Sequence[str]) -> str:
    drawn = "".join(f"<li>{html.escape(name)}</li>" for name in series)
    listing = f'<p>The diagrams, left to right:</p><ul id="reliability-series">{drawn}</ul>'
    if not calibration:
        return listing + "<p>Training recorded no calibration for this model: probabilities are the model's own.</p>"
    rows = f"<tr><th>temperature</th><td>{_number(calibration.get('temperature'))}</td></tr>"
    for split in ("validation", "test"):
        before, after = calibration.get(f"{split}_ece_before"), calibration.get(f"{split}_ece_after")
        rows += f"<tr><th>{split} ECE before → after</th><td>{_number(before)} → {_number(after)}</td></tr>"
    fitted = calibration.get("fitted_images_per_class")
    if fitted:
        counts = ", ".join(f"{html.escape(name)} {count}" for name, count in fitted.items())
        rows += f"<tr><th>images per class it was fitted on</th><td>{counts}</td></tr>"
        source = html.escape(calibration.get("fitted_on") or "validation split")
        rows += f'<tr><th>what it was fitted on</th><td id="calibration-fitted-on">{source}</td></tr>'
    measured = f"<p>What training measured before and after temperature scaling:</p><table>{rows}</table>"
    return listing + measured + _warnings_list(calibration.get("warnings") or [])


def _warnings_list(warnings: Sequence[str]) -> str:
    """Training's warnings about the model, where a reader of its figures cannot miss them."""
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(warning)}</li>" for warning in warnings)
    return f'<div class="warning"><p>Training warned:</p><ul id="model-warnings">{items}</ul></div>'


def report_html(
    summary: dict[str, Any],
    mistakes: Sequence[Picture],
    review_sample: Sequence[Picture],
    figures: dict[str, str],
    calibration: dict[str, Any] | None = None,
    reliability_series: Sequence[str] = (),
    drift_status: str | None = None,
) -> str:
    """One page: headline metrics, drift status and charts, per-class table with support, confusion matrix, reliability
    diagram and calibration, training curves, and thumbnails of the worst mistakes and of the
    review queue.

    Args:
        figures: Picture name ("confusion", "reliability", "curves") → its src, beside the page or
            a data URI; a missing name is said to be missing rather than shown broken.
    """
    escape = html.escape
    metrics = summary.get("metrics", {})
    rows = "".join(
        f"<tr{' class=low' if row['low_support'] else ''}><td>{escape(row['label'])}</td>"
        + "".join(_cell(f"metrics.per_class.{i}.{key}", row[key]) for key in ("precision", "recall", "f1"))
        + f"<td>{_interval(f'metrics.per_class.{i}.f1_interval', row.get('f1_interval'))}</td>"
        + f"{_cell(f'metrics.per_class.{i}.support', row['support'])}"
        + f"<td>{'low support' if row['low_support'] else ''}</td></tr>"
        for i, row in enumerate(metrics.get("per_class", []))
    )

    def figure(name: str, alt: str) -> str:
        if name not in figures:
            return f"<p>No {alt} for this run.</p>"
        return f'<img class="figure" src="{escape(figures[name])}" alt="{escape(alt)}">'

    threshold = summary.get("review", {}).get("threshold")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Evaluation: {escape(summary["model_name"])}</title>
<style>{_STYLE}</style></head>
<body><h1>Evaluation of {escape(summary["model_name"])} ({escape(summary["model_version"])})</h1>
<p>Catalog <code>{escape(summary["catalog"])}</code>, run <code>{escape(summary["run_id"])}</code>.</p>
<h2>Headline</h2>{_interval_note(metrics)}
<table><tr><th></th><th>value</th><th>95% interval</th></tr>{_headline_rows(summary)}</table>
{_drift_section(drift_status, figure("drift", "drift charts"))}
<h2>Per class</h2><p>Classes with fewer than 20 evaluated images are highlighted: their figures are noisy.</p>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>F1 95% interval</th><th>support</th>
<th></th></tr>{rows}</table>
<h2>Confusion matrix</h2>{figure("confusion", "confusion matrix")}
<h2>Calibration</h2>{figure("reliability", "reliability diagram")}{_calibration_rows(calibration, reliability_series)}
<h2>Training curves</h2>{figure("curves", "training curves")}
<h2>Most confident mistakes</h2>{_pictures(mistakes, "mistake")}
<h2>Review queue (sample)</h2><p>The least confident rows sent to people (confidence below
{_number(threshold)}), labelled or not.</p>{_pictures(review_sample, "review")}
</body></html>
"""


def _drift_section(status: str | None, chart: str) -> str:
    if status is None:
        return ""
    return (
        f'<h2>Drift</h2><p>Status <span data-field="drift.status">{html.escape(status)}</span>; '
        f'details in <a href="../drift/report.html">the drift report</a>.</p>{chart}'
    )


@dataclass(frozen=True)
class ComparedRun:
    """One scoring output as the comparison page shows it."""

    name: str
    status: str
    summary: dict[str, Any] | None  # None: the catalog had no labels, or evaluation never ran
    report_href: str | None
    figures: dict[str, str]  # "confusion", "curves" → data URIs


@dataclass(frozen=True)
class ComparedPair:
    """Model A minus model B on the same images (`pipeline.intervals.paired_difference`), or why not."""

    first: str
    second: str
    figures: dict[str, Any] | None
    reason: str | None = None


def verdict_text(pair: ComparedPair, metric: str) -> str:
    """The verdict with the models' names: a winner only when the interval of the difference excludes 0."""
    if pair.figures is None:
        return f"no paired comparison: {pair.reason}"
    wording = str(pair.figures[metric]["verdict"])
    if wording == "A better than B":
        return f"{pair.first} better than {pair.second}"
    if wording == "B better than A":
        return f"{pair.second} better than {pair.first}"
    return wording


def _pair_rows(pairs: Sequence[ComparedPair]) -> str:
    if not pairs:
        return "<p>One model: nothing to compare.</p>"
    rows = ""
    for pair in pairs:
        for metric, name in (("macro_f1", "macro F1"), ("accuracy", "accuracy")):
            figures = (pair.figures or {}).get(metric)
            owner = f'data-pair="{html.escape(pair.first)} - {html.escape(pair.second)}" data-metric="{metric}"'
            if figures is None:
                cells = "<td>—</td><td>—</td>"
            else:
                low, high = figures["interval"]
                cells = f"<td>{figures['difference']:+.4f}</td><td>[{low:+.4f}, {high:+.4f}]</td>"
            rows += (
                f"<tr {owner}><td>{html.escape(pair.first)} − {html.escape(pair.second)}</td><td>{name}</td>{cells}"
                f'<td class="verdict">{html.escape(verdict_text(pair, metric))}</td></tr>'
            )
    images = next((pair.figures["images"] for pair in pairs if pair.figures), None)
    method = (
        f"<p>Paired bootstrap over the {images} images both models scored ({intervals_method(pairs)}): a model is"
        " called better only when the 95% interval of the difference excludes 0.</p>"
        if images
        else ""
    )
    return (
        f'{method}<table id="paired"><tr><th>A − B</th><th>figure</th><th>difference</th><th>95% interval</th>'
        f"<th>verdict</th></tr>{rows}</table>"
    )


def intervals_method(pairs: Sequence[ComparedPair]) -> str:
    """The bootstrap's resamples and seed, as the paired figures recorded them."""
    figures = next(pair.figures for pair in pairs if pair.figures)
    return f"{figures['resamples']} resamples, seed {figures['seed']}"


def comparison_html(runs: Sequence[ComparedRun], catalog: str, pairs: Sequence[ComparedPair] = ()) -> str:
    """Models side by side on one held-out catalog: headline with 95% intervals, the paired
    difference of each pair of models with its verdict, per-class F1, confusion matrices, curves,
    and a link to each model's own report."""
    escape = html.escape
    header = "".join(f"<th>{escape(run.name)}</th>" for run in runs)
    names = [
        ("status", None),
        ("rows evaluated", "metrics.rows"),
        ("accuracy", "metrics.accuracy"),
        ("macro F1", "metrics.macro.f1"),
        ("log loss", "metrics.loss"),
        ("expected calibration error", "metrics.expected_calibration_error"),
        ("rows with errors", "error_rows"),
        ("sent to review", "review.rows"),
    ]
    headline = ""
    for name, field in names:
        cells = ""
        for run in runs:
            if field is None:
                cells += f"<td>{escape(run.status)}</td>"
            elif run.summary is None:
                cells += "<td>—</td>"
            else:
                cells += _cell(field, summary_value(run.summary, field), run.name)
        headline += f"<tr><th>{name}</th>{cells}</tr>"
        interval_field = {
            "metrics.accuracy": "metrics.accuracy_interval",
            "metrics.macro.f1": "metrics.macro.f1_interval",
        }
        if field in interval_field:
            bounds = interval_field[field]
            cells = "".join(
                "<td>—</td>"
                if run.summary is None
                else f"<td>{_interval(bounds, summary_value(run.summary, bounds), run.name)}</td>"
                for run in runs
            )
            headline += f"<tr><th>{name} 95% interval</th>{cells}</tr>"
    labels: list[str] = []
    for run in runs:
        for row in (run.summary or {}).get("metrics", {}).get("per_class", []):
            if row["label"] not in labels:
                labels.append(row["label"])
    per_class = ""
    for label in labels:
        cells = ""
        for run in runs:
            found = [
                (i, row)
                for i, row in enumerate((run.summary or {}).get("metrics", {}).get("per_class", []))
                if row["label"] == label
            ]
            if not found:
                cells += "<td>—</td>"
                continue
            index, row = found[0]
            value = _cell(f"metrics.per_class.{index}.f1", row["f1"], run.name, tag="span")
            interval = _interval(f"metrics.per_class.{index}.f1_interval", row.get("f1_interval"), run.name)
            warning = " <small>(low support)</small>" if row.get("low_support") else ""
            cells += f"<td>{value} {interval}{warning}</td>"
        per_class += f"<tr><th>{escape(label)}</th>{cells}</tr>"
    sections = ""
    for run in runs:
        link = f'<p><a href="{escape(run.report_href)}">full report</a></p>' if run.report_href else "<p>No report.</p>"
        pictures = "".join(
            f'<h3>{title}</h3><img class="figure" src="{escape(run.figures[key])}" alt="{escape(run.name)} {title}">'
            if key in run.figures
            else f"<h3>{title}</h3><p>None recorded.</p>"
            for key, title in (("confusion", "confusion matrix"), ("curves", "training curves"))
        )
        sections += f'<section data-model="{escape(run.name)}"><h2>{escape(run.name)}</h2>{link}{pictures}</section>'
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Comparison on {escape(catalog)}</title>
<style>{_STYLE}</style></head>
<body><h1>Models compared on <code>{escape(catalog)}</code></h1>
<h2>Headline</h2><table><tr><th></th>{header}</tr>{headline}</table>
<h2>Differences on the same images</h2>{_pair_rows(pairs)}
<h2>F1 per class</h2><p>With its 95% interval; classes with fewer than 20 evaluated images are marked
low support: their figures are noisy.</p><table><tr><th>class</th>{header}</tr>{per_class}</table>
<div class="models">{sections}</div>
</body></html>
"""


def summary_value(values: dict[str, Any], field: str) -> Any:
    """The value at a dotted path of a summary ("metrics.macro.f1"); None where it has none."""
    value: Any = values
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


DRIFT_SIGNALS = {
    "class_mix": "predicted class mix",
    "confidence": "confidence histogram",
    "review_share": "share sent to review",
}


def _shares(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array / array.sum() if array.size and array.sum() > 0 else np.zeros_like(array)


def drift_png(report: dict[str, Any], class_names: list[str]) -> bytes:
    """One small chart per drift signal: this run's shares beside training's and the previous
    run's, the PSI of each in the title; the class-mix chart adds the EM estimate of the prior."""
    figure = Figure(figsize=(4.2 * len(DRIFT_SIGNALS), 3.6))
    axes = figure.subplots(1, len(DRIFT_SIGNALS), squeeze=False)[0]
    for axis, (name, title) in zip(axes, DRIFT_SIGNALS.items()):
        signals = [signal for signal in report["signals"] if signal["name"] == name]
        series = [("this run", signals[0]["observed"])] if signals else []
        series += [
            (signal["reference"].replace("_", " "), signal["expected"]) for signal in signals if signal["expected"]
        ]
        if name == "class_mix" and report.get("estimated_prior"):
            series.append(("EM prior estimate", report["estimated_prior"]))
        ticks = {
            "class_mix": class_names,
            "confidence": [f"{i / 10:.1f}" for i in range(10)],
            "review_share": ["review", "kept"],
        }[name]
        width = 0.8 / max(len(series), 1)
        for index, (label, values) in enumerate(series):
            shares = _shares(values)
            axis.bar(np.arange(len(shares)) + index * width, shares, width=width, label=label)
        axis.set_xticks(np.arange(len(ticks)) + 0.4 - width / 2, ticks, rotation=45, fontsize=7)
        psi = ", ".join(
            f"{s['reference'].replace('_', ' ')} PSI {_number(s['psi'])} ({s['status'] or 'not judged'})"
            for s in signals
        )
        axis.set_title(f"{title}\n{psi}", fontsize=8)
        axis.set_ylabel("share of rows")
        axis.legend(fontsize=7)
    figure.suptitle(f"drift: {report['status']}")
    return _png(figure)


def drift_html(
    report: dict[str, Any], class_names: list[str], model_name: str, model_warnings: Sequence[str] = ()
) -> str:
    """drift/report.html: the status, each signal's PSI against each reference, the chart, the
    predicted class mix beside the EM estimate of the catalog's prior, and training's warnings
    (an unlabelled run has no evaluation report to carry them)."""
    escape = html.escape
    rows = "".join(
        f"<tr><td>{escape(DRIFT_SIGNALS.get(s['name'], s['name']))}</td><td>{escape(s['reference'])}</td>"
        f"{_cell(f'drift.signals.{i}.psi', s['psi'])}<td>{escape(s['status'] or 'not judged')}</td>"
        f"<td>{escape(s['note'])}</td></tr>"
        for i, s in enumerate(report["signals"])
    )
    predicted = _shares(report["predicted_counts"])
    prior = report.get("estimated_prior") or [None] * len(class_names)
    mix = "".join(
        f"<tr><td>{escape(name)}</td>{_cell(f'drift.predicted_counts.{i}', report['predicted_counts'][i])}"
        f"<td>{_number(predicted[i] if predicted.size else None)}</td>"
        f"{_cell(f'drift.estimated_prior.{i}', prior[i])}</tr>"
        for i, name in enumerate(class_names)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Drift: {escape(model_name)}</title><style>{_STYLE}</style></head>
<body><h1>Drift of this run: <span id="drift-status" data-field="drift.status">{escape(report["status"])}</span></h1>
<p>{report["rows"]} scored rows; previous run of this schedule: {escape(str(report.get("previous_run")))}.
Population-stability index per signal; ok below the warn threshold, alert above the alert one.</p>
<table><tr><th>signal</th><th>against</th><th>PSI</th><th>status</th><th></th></tr>{rows}</table>
{_warnings_list(model_warnings)}
<img class="figure" src="drift.png" alt="drift charts">
<h2>Class mix: predicted, and estimated by EM from the calibrated probabilities</h2>
<p>The predicted mix carries the model's confusions; the EM estimate corrects for them.</p>
<table><tr><th>class</th><th>predicted rows</th><th>predicted share</th><th>EM prior estimate</th></tr>{mix}</table>
</body></html>
"""
