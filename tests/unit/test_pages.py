"""The evaluation report and the comparison page, opened in a real headless Chromium: every image
loads, and every figure shown equals summary.json. Pages are built the way a scoring run builds
them (prediction files with footer tallies, then `evaluate_output`), from real images on disk, one
of them unreadable and one missing."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest

from jobs import summarize
from models.spec import InputSpec
from pipeline.metrics import reliability_bins
from pipeline.records import Calibration, ModelCard, ModelRef, RunManifest
from pipeline.schema import prediction_schema
from pipeline.score.comparison import compare_pairs, write_comparison_page
from pipeline.score.evaluation import evaluate_output
from pipeline.score.predictions import write_batch, write_run
from pipeline.score.rows import RowContext, prediction_table
from tests.conftest import skip_or_fail
from tests.factories import colour_of, make_image

CLASSES = ("boots", "dress", "shirt")
HISTORY = [
    {"epoch": e, "phase": "head" if e < 3 else "fine_tune", "loss": 1.0 / e, "val_loss": 1.1 / e,
     "accuracy": 0.5 + e / 20, "val_accuracy": 0.45 + e / 20}
    for e in range(1, 6)
]  # fmt: skip
# What training records when a class was scarce in the validation split (custom_cnn's card only).
FITTED = {"boots": 12, "dress": 9, "shirt": 2}
FEW_SHIRTS = "the calibration temperature and review threshold were fitted on 2 validation image(s) of class 'shirt'"


def _catalog(root) -> list[str]:
    """60 real PNGs, then one file that is not an image and one path that does not exist."""
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    uris = []
    for i in range(60):
        path = os.path.join(root, f"img-{i:03d}.png")
        make_image(colour_of(CLASSES[i % 3], i % 3), rng, size=48).save(path)
        uris.append(path)
    with open(os.path.join(root, "broken.png"), "wb") as handle:
        handle.write(b"this is not an image")
    return [*uris, os.path.join(root, "broken.png"), os.path.join(root, "gone.png")]


def _scored_output(tmp_path, name: str, seed: int, uris: list[str], right: int = 0) -> tuple[str, dict]:
    """A scoring output as a run leaves it before evaluation: prediction files and run.json. With
    `right`, the model is made sure of the true class of the first `right` images, and its rows are
    written in reverse order, so a comparison must pair images by id, not by position."""
    rng = np.random.default_rng(seed)
    count = len(uris)
    logits = rng.normal(size=(count, len(CLASSES))) * 3
    logits[np.arange(right), np.arange(right) % 3] += 20
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    probabilities[-2:] = probabilities[-2:].min(axis=1, keepdims=True)  # the broken and missing rows:
    probabilities[-2:] /= probabilities[-2:].sum(axis=1, keepdims=True)  # least confident, so shown
    batch = {
        "image_id": np.array([f"id-{i}" for i in range(count)], dtype=object),
        "image_uri": np.array(uris, dtype=object),
        "label": np.array([CLASSES[i % 3] for i in range(count)], dtype=object),
        "error": np.array([""] * count, dtype=object),
    }
    if right:
        order = np.arange(count)[::-1]
        batch = {key: values[order] for key, values in batch.items()}
        probabilities = probabilities[order]
    output = str(tmp_path / "scores" / name)
    artifact = tmp_path / "models" / name
    artifact.mkdir(parents=True)
    (artifact / "history.json").write_text(json.dumps(HISTORY))
    card = ModelCard(
        name=name,
        version=f"v-{name}",
        class_names=CLASSES,
        input=InputSpec(image_size=32),
        calibration=Calibration(
            1.3,
            validation_ece_before=0.2,
            validation_ece_after=0.05,
            test_ece_before=0.21,
            test_ece_after=0.06,
            # Only the first model's card records the test split's bins, as a card from older training would not.
            test_reliability_before=reliability_bins(rng.uniform(0.3, 1, 40), rng.random(40) < 0.5)
            if seed == 0
            else None,
            test_reliability_after=reliability_bins(rng.uniform(0.3, 1, 40), rng.random(40) < 0.6)
            if seed == 0
            else None,
            fitted_images_per_class=FITTED if seed == 0 else None,
        ),
        details={"warnings": [FEW_SHIRTS]} if seed == 0 else {},
    )
    context = RowContext(CLASSES, 2, 0.6, name, card.version, "run-1")
    table = prediction_table(batch, probabilities, np.ones(count, dtype=bool), context, datetime.now(UTC))
    for block in (table.slice(0, 30), table.slice(30)):  # two files, as two workers would write them
        write_batch(block, os.path.join(output, "predictions"), prediction_schema(list(CLASSES)), "run-1")
    write_run(output, RunManifest("run-1", "completed", "2026-12-01T00:00:00+00:00",
                                  ModelRef(str(artifact), name, card.version), str(tmp_path / "catalog"),
                                  output, "keras", 0.6, {}))  # fmt: skip
    evaluate_output(output, card, str(tmp_path / "catalog"), "run-1", 0.6)
    summary = json.loads(open(os.path.join(output, "evaluation", "summary.json")).read())
    return output, summary


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pages")
    uris = _catalog(str(tmp_path / "catalog"))
    runs = {
        name: _scored_output(tmp_path, name, seed, uris) for seed, name in enumerate(("custom_cnn", "mobilenet_v2"))
    }
    page = write_comparison_page([output for output, _ in runs.values()], str(tmp_path / "index.html"))
    return tmp_path, runs, page


CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map((image) => ({src: image.getAttribute("src").slice(0, 30),
    width: image.naturalWidth}));
  const fields = [...document.querySelectorAll("[data-field]")].map((element) => ({
    field: element.dataset.field, value: element.dataset.value, model: element.dataset.model || null,
    text: element.textContent}));
  const links = [...document.querySelectorAll("a")].map((link) => ({href: link.href,
    written: link.getAttribute("href")}));
  const pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify({images, fields, links});
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    skip_or_fail("chromium is missing: apt-get install -y chromium")
    raise AssertionError("unreachable")


def _open_in_chromium(page: str, profile) -> dict:
    """What the page looks like once Chromium has loaded it: its images' natural widths, the
    figures it shows and its links, written into the DOM by a script added to a copy of the page
    (beside it, so relative sources resolve the same way)."""
    copy = page.replace(".html", ".checked.html")
    with open(page) as source, open(copy, "w") as target:
        target.write(source.read().replace("</body>", CHECK + "</body>"))
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", f"file://{copy}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="check">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the page's check never ran: {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def _at(summary: dict, field: str):
    """The test's own reading of a dotted path into summary.json, independent of the page's."""
    value = summary
    for part in field.split("."):
        value = value[int(part)] if part.isdigit() else value[part]
    return value


def _assert_figures_equal_summary(fields: list[dict], summaries: dict[str | None, dict]) -> None:
    for shown in fields:
        expected = _at(summaries[shown["model"]], shown["field"])
        if expected is None:
            assert shown["value"] == "null" and shown["text"] == "—", shown
        else:
            assert json.loads(shown["value"]) == expected, shown  # exact, not rounded
            assert shown["text"] == (f"{expected:.4f}" if isinstance(expected, float) else str(expected)), shown


def test_the_report_shows_every_picture_and_the_figures_of_summary_json(pages, tmp_path):
    _, runs, _ = pages
    output, summary = runs["custom_cnn"]
    seen = _open_in_chromium(os.path.join(output, "evaluation", "report.html"), tmp_path / "profile")
    assert [image for image in seen["images"] if image["width"] <= 0] == []
    sources = [image["src"] for image in seen["images"]]
    assert sources[:3] == ["confusion_matrix.png", "reliability.png", "curves.png"]
    thumbnails = [src for src in sources[3:] if src.startswith("data:image/")]
    assert len(thumbnails) == len(sources) - 3 and len(thumbnails) >= 20  # mistakes and review sample
    _assert_figures_equal_summary(seen["fields"], {None: summary})
    shown = {field["field"] for field in seen["fields"]}
    assert {"metrics.accuracy", "metrics.macro.f1", "metrics.loss", "review.rows"} <= shown
    assert {f"metrics.per_class.{i}.f1" for i in range(len(CLASSES))} <= shown
    bounds = {"metrics.accuracy_interval", "metrics.macro.f1_interval"}
    bounds |= {f"metrics.per_class.{i}.f1_interval" for i in range(len(CLASSES))}
    assert {f"{field}.{end}" for field in bounds for end in (0, 1)} <= shown  # every interval, both ends


def test_the_comparison_page_shows_both_models_figures_and_links_their_reports(pages, tmp_path):
    root, runs, page = pages
    seen = _open_in_chromium(page, tmp_path / "profile")
    assert len(seen["images"]) == 4  # a confusion matrix and curves for each model
    assert [image for image in seen["images"] if image["width"] <= 0] == []
    _assert_figures_equal_summary(seen["fields"], {name: summary for name, (_, summary) in runs.items()})
    for name in runs:
        shown = {field["field"] for field in seen["fields"] if field["model"] == name}
        assert {"metrics.accuracy", "metrics.macro.f1"} | {f"metrics.per_class.{i}.f1" for i in range(3)} <= shown
        bounds = {"metrics.accuracy_interval", "metrics.macro.f1_interval"}
        bounds |= {f"metrics.per_class.{i}.f1_interval" for i in range(3)}
        assert {f"{field}.{end}" for field in bounds for end in (0, 1)} <= shown
    assert [link["href"] for link in seen["links"]] == [
        f"file://{runs[name][0]}/evaluation/report.html" for name in runs
    ]
    assert [link["written"] for link in seen["links"]] == [f"scores/{name}/evaluation/report.html" for name in runs]


def test_a_copied_report_links_nothing_of_the_catalog_and_shows_placeholders_for_bad_images(pages):
    root, runs, page = pages
    output, _ = runs["custom_cnn"]
    report = open(os.path.join(output, "evaluation", "report.html")).read()
    sources = re.findall(r'(?:src|href)="([^"]*)"', report)
    assert sources and not [src for src in sources if str(root / "catalog") in src or src.startswith("file:")]
    assert "not_an_image" in report and "missing:" in report  # the broken and the gone image, as placeholders
    for _, summary in runs.values():
        assert summary["evaluated_rows"] == 62
    assert "report.html" in open(page).read()


def test_the_reliability_diagrams_are_before_and_after_calibration_where_training_recorded_both(pages):
    _, runs, _ = pages

    def series(name: str) -> list[str]:
        report = open(os.path.join(runs[name][0], "evaluation", "report.html")).read()
        listing = re.search(r'<ul id="reliability-series">(.*?)</ul>', report, re.S)
        assert listing, name
        return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", listing.group(1))]

    assert series("custom_cnn") == [
        "this catalog, as scored",
        "training's test split, before calibration",
        "training's test split, after calibration",
    ]
    assert series("mobilenet_v2") == ["this catalog, as scored"]


def test_the_report_repeats_what_training_warned_and_the_images_calibration_was_fitted_on(pages):
    _, runs, _ = pages
    warned = open(os.path.join(runs["custom_cnn"][0], "evaluation", "report.html")).read()
    listing = re.search(r'<ul id="model-warnings">(.*?)</ul>', warned, re.S)
    assert listing and [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", listing.group(1))] == [FEW_SHIRTS]
    assert "<td>boots 12, dress 9, shirt 2</td>" in warned
    assert '<td id="calibration-fitted-on">validation split</td>' in warned
    calm = open(os.path.join(runs["mobilenet_v2"][0], "evaluation", "report.html")).read()
    assert 'id="model-warnings"' not in calm and "fitted on</th>" not in calm


def _verdicts(page: str) -> dict[tuple[str, str], str]:
    """(pair, metric) → the verdict the comparison page states."""
    rows = re.findall(r'<tr data-pair="([^"]*)" data-metric="([^"]*)">.*?<td class="verdict">([^<]*)</td>', page)
    return {(html.unescape(pair), metric): html.unescape(text) for pair, metric, text in rows}


def test_the_comparison_names_a_better_model_only_when_the_paired_interval_excludes_zero(pages, tmp_path, capsys):
    root, runs, page = pages
    (pair,) = compare_pairs([runs["custom_cnn"][0], runs["mobilenet_v2"][0]])
    assert pair.figures["images"] == 62  # every evaluated image, paired by id
    for metric in ("accuracy", "macro_f1"):  # two models guessing: the interval holds 0
        low, high = pair.figures[metric]["interval"]
        assert low < 0 < high
    assert _verdicts(open(page).read()) == {
        ("custom_cnn - mobilenet_v2", "macro_f1"): "no difference shown",
        ("custom_cnn - mobilenet_v2", "accuracy"): "no difference shown",
    }
    uris = _catalog(str(root / "catalog"))
    oracle, summary = _scored_output(tmp_path, "oracle", 2, uris, right=50)
    (pair,) = compare_pairs([runs["custom_cnn"][0], oracle])
    assert pair.figures["accuracy"]["difference"] == pytest.approx(
        runs["custom_cnn"][1]["metrics"]["accuracy"] - summary["metrics"]["accuracy"]
    )  # the paired point difference is the difference of the two summaries: the join lost no image
    better = write_comparison_page([runs["custom_cnn"][0], oracle], str(tmp_path / "better.html"))
    assert _verdicts(open(better).read()) == {
        ("custom_cnn - oracle", "macro_f1"): "oracle better than custom_cnn",
        ("custom_cnn - oracle", "accuracy"): "oracle better than custom_cnn",
    }
    assert summarize.main([runs["custom_cnn"][0], oracle]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    assert printed.startswith("custom_cnn - oracle on the same images: macro-F1 -0.")
    assert printed.count("oracle better than custom_cnn") == 2
