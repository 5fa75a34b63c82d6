"""Does data parallelism cost accuracy? Each model trained with 1, 2 and 4 Ray Train workers over
several training seeds, every run scored on a held-out catalog it never saw.

A row is (model, workers, learning-rate scaling, training seed). It trains with `prepare_training` +
`run_training` on the catalog (the split stays `data.seed` = `--seed`; `train.seed` is `--seed`,
`--seed`+1, ... and seeds initialisation, shuffling, augmentation and dropout), then scores the
held-out catalog with `prepare_scoring` + `score` and reads the run's evaluation summary: accuracy,
macro-F1 and the F1 of the smallest training class, each with its 95% bootstrap interval over
images. The card's internal test split figures are kept beside them. `batch_size_per_worker` is
fixed, so the global batch grows with the workers; `linear` scales the learning rates with it.
`fixed` instead keeps the global batch at 32 (`train.global_batch_size`), split over the workers.
Training gets 1 CPU in all (`resources.cpus_per_worker` = 1 / workers on the 2-CPU local Ray,
leaving 1 CPU to Ray Data); each row records the share `pipeline.resources.fit_training` granted.

The verdict, per model, compares each (workers, scaling) with 1 worker (the same scaling if that
row exists) over the seeds' held-out macro-F1 (and, separately, smallest-class F1): Welch's t-test
(scipy.stats.ttest_ind, equal_var=False); p >= 0.05 is "same within noise", p < 0.05 "differs".
"Same within noise" means no difference shown at this many seeds, not a proof of equality: read
it with the difference of the means and the std. Under 2 seeds per side there is no test
("undetermined").

    python -m benchmarks.workers_accuracy --output benchmarks/results/training/workers_accuracy.json
    python -m benchmarks.workers_accuracy --models custom_cnn,mobilenet_v2 --seeds 3 --output w.json
    python -m benchmarks.workers_accuracy --rows 1:linear,2:none,2:linear,4:linear --output w.json
    python -m benchmarks.workers_accuracy --models mobilenet_v2 --weights base.h5 --head-epochs 4 --output w.json
    python -m benchmarks.workers_accuracy --rows 2:fixed,4:fixed --append --output w.json  # adds rows to w.json
    python -m benchmarks.workers_accuracy --tiny --output tiny.json   # CI: generated catalogs, 1 epoch, 2 seeds

The held-out catalog is `--heldout`, else 1,000 Fashion-MNIST test images per class built once
into `--cache-dir` (the shipped 100-per-class data/heldout_catalog when Fashion-MNIST is not
installed), as `benchmarks.accuracy` picks it; `--tiny` generates one of the same classes as its
generated training catalog.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.common import REPO, make_labelled_catalog

SAMPLE_CATALOG = os.path.join(REPO, "data", "sample_catalog")
DEFAULT_CACHE = os.path.join(REPO, "outputs", "cache")
ROWS = "1:linear,2:linear,4:linear"
# "fixed": `train.global_batch_size` = the study's batch of 32 (what 1 worker takes), split over
# the workers, at the configured learning rates (no scaling needed: the steps do not change).
SCALINGS = ("linear", "none", "fixed")
FIXED_GLOBAL_BATCH = 32
# The local Ray this benchmark starts, and the CPUs training shares (the rest feeds Ray Data).
RAY_CPUS = 2
TRAINING_CPUS = 1.0
TINY_SEEDS = 2
ALPHA = 0.05
RULE = (
    "per model, each (workers, scaling) against 1 worker (same scaling if present) over the training "
    "seeds: Welch's t-test (scipy.stats.ttest_ind, equal_var=False) on held-out macro-F1 and, "
    f"separately, smallest-class F1; p >= {ALPHA} is 'same within noise' (no difference shown at "
    f"this many seeds), p < {ALPHA} 'differs'; under 2 seeds a side, 'undetermined'"
)


@dataclass(frozen=True)
class Row:
    workers: int
    scaling: str


@dataclass(frozen=True)
class Settings:
    """What every row shares."""

    catalog: str
    heldout: str
    heldout_note: str
    models: tuple[str, ...]
    rows: tuple[Row, ...]
    seeds: tuple[int, ...]
    split_seed: int
    image_size: int
    epochs: int
    head_epochs: int
    fine_tune_epochs: int
    weights: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="JSON file for the figures")
    parser.add_argument("--catalog", default=SAMPLE_CATALOG, help="labelled catalog (default data/sample_catalog)")
    parser.add_argument("--models", default="custom_cnn", help="comma-separated models (default custom_cnn)")
    parser.add_argument(
        "--rows", default=ROWS, help=f"workers:scaling pairs, scaling linear|none|fixed (default {ROWS})"
    )
    parser.add_argument("--seeds", type=int, default=None, help="training seeds per row: --seed, +1, ... (default 3)")
    parser.add_argument(
        "--heldout",
        default=None,
        help="labelled catalog to score (default: 1,000 Fashion-MNIST test images per class, built into "
        "--cache-dir; the shipped data/heldout_catalog if Fashion-MNIST is not installed)",
    )
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the default held-out catalog is built")
    parser.add_argument(
        "--weights", default="none", help="MobileNetV2 base weights file, or none (default): model.weights"
    )
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of a single-phase run (custom_cnn, no weights)")
    parser.add_argument("--head-epochs", type=int, default=4, help="pretrained MobileNetV2: head epochs")
    parser.add_argument("--fine-tune-epochs", type=int, default=2, help="pretrained MobileNetV2: fine-tune epochs")
    parser.add_argument("--seed", type=int, default=42, help="the split's seed (data.seed) and the first train.seed")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows --output already holds (same settings) and run only the missing ones",
    )
    parser.add_argument("--tiny", action="store_true", help="CI smoke: generated catalogs, 32 px, 1 epoch, 2 seeds")
    return parser


def parse_rows(text: str) -> tuple[Row, ...]:
    """`1:linear,2:none` as rows.

    Raises:
        ValueError: A pair that is not `<workers >= 1>:<linear|none>`, or a repeated pair.
    """
    rows = []
    for pair in (item.strip() for item in text.split(",") if item.strip()):
        workers, _, scaling = pair.partition(":")
        if not workers.isdigit() or int(workers) < 1 or scaling not in SCALINGS:
            raise ValueError(
                f"--rows: {pair!r} is not workers:scaling; use e.g. 1:linear,2:none,4:fixed (scaling linear|none|fixed)"
            )
        rows.append(Row(int(workers), scaling))
    if not rows or len(set(rows)) != len(rows):
        raise ValueError(f"--rows {text!r}: give at least one pair, each once (e.g. {ROWS})")
    return tuple(rows)


def settings_from_args(args: argparse.Namespace, scratch: str) -> Settings:
    """Checks every flag before any work; `--tiny` generates its catalogs into `scratch`.

    Raises:
        ValueError: A bad flag, named with the fix.
    """
    from models import MODEL_BUILDERS

    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    unknown = [name for name in models if name not in MODEL_BUILDERS]
    if not models or unknown:
        raise ValueError(f"--models {args.models!r}: unknown {unknown}; choose from {sorted(MODEL_BUILDERS)}")
    rows = parse_rows(args.rows)
    count = args.seeds if args.seeds is not None else (TINY_SEEDS if args.tiny else 3)
    if count < 1:
        raise ValueError(f"--seeds {count}: give at least 1 (3 or more for a verdict with spread)")
    if args.weights != "none" and not os.path.isfile(args.weights):
        raise ValueError(f"--weights {args.weights!r}: no such file; give a MobileNetV2 base weights file or none")
    for flag, value in (
        ("--epochs", args.epochs),
        ("--head-epochs", args.head_epochs),
        ("--image-size", args.image_size),
    ):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    if args.heldout is not None and not os.path.isdir(args.heldout):
        raise ValueError(f"--heldout {args.heldout!r}: no such directory; give a labelled catalog directory")
    catalog, image_size, epochs = args.catalog, args.image_size, args.epochs
    if args.tiny:
        catalog, image_size, epochs = os.path.join(scratch, "catalog"), 32, 1
        # 48 a class gives a train split of 160 images: one step of 4 workers x 32 needs 128.
        make_labelled_catalog(catalog, per_class=48, size=32)
    elif not os.path.isdir(catalog):
        raise ValueError(f"--catalog {catalog!r}: no such directory; give a labelled catalog directory")
    heldout, note = _heldout(args, scratch)
    return Settings(
        catalog=catalog,
        heldout=heldout,
        heldout_note=note,
        models=models,
        rows=rows,
        seeds=tuple(args.seed + offset for offset in range(count)),
        split_seed=args.seed,
        image_size=image_size,
        epochs=epochs,
        head_epochs=1 if args.tiny else args.head_epochs,
        fine_tune_epochs=min(1, args.fine_tune_epochs) if args.tiny else args.fine_tune_epochs,
        weights=args.weights,
    )


def _heldout(args: argparse.Namespace, scratch: str) -> tuple[str, str]:
    """The held-out catalog and a note saying what it is: as `benchmarks.accuracy` picks it, except
    that `--tiny` (whose generated catalog has other classes) generates one with a different seed."""
    from benchmarks.accuracy.data import resolve_heldout

    if args.tiny and args.heldout is None:
        directory = os.path.join(scratch, "heldout")
        make_labelled_catalog(directory, per_class=12, size=32, seed=1)
        return directory, "generated: 12 images per class of the tiny catalog's classes, image seed 1"
    return resolve_heldout(args.heldout, False, args.cache_dir)


def row_overrides(model: str, row: Row, seed: int, settings: Settings) -> list[str]:
    """The `--set` overrides one row trains and scores with."""
    # custom_cnn reads no weights; "none" keeps prepare_training from resolving MobileNetV2's.
    weights = settings.weights if model == "mobilenet_v2" else "none"
    if row.scaling == "fixed":
        batching = ["train.learning_rate_scaling=none", f"train.global_batch_size={FIXED_GLOBAL_BATCH}"]
    else:
        batching = [f"train.learning_rate_scaling={row.scaling}"]
    return [
        *batching,
        f"model.image_size={settings.image_size}",
        f"model.weights={weights}",
        "model.weights_fallback=null",
        f"train.epochs={settings.epochs}",
        f"train.cnn_patience={settings.epochs}",
        f"train.head_epochs={settings.head_epochs}",
        f"train.fine_tune_epochs={settings.fine_tune_epochs}",
        f"train.transfer_patience={settings.head_epochs + settings.fine_tune_epochs}",
        f"data.seed={settings.split_seed}",
        f"train.seed={seed}",
        f"resources.workers={row.workers}",
        f"resources.cpus_per_worker={TRAINING_CPUS / row.workers:g}",
        "resources.actors=1",
        "resources.cpus_per_actor=0.5",
        "predict.batch_size=64",
        "predict.overwrite=true",
    ]


def run_row(model: str, row: Row, seed: int, settings: Settings) -> dict[str, Any]:
    """Trains one row, scores the held-out catalog with its artifact, and returns both sets of figures.

    Raises:
        RuntimeError: The scoring run did not complete or wrote no evaluation.
    """
    from jobs.config import load_config
    from pipeline.artifacts import read_card
    from pipeline.resources import ClusterShape, fit_training
    from pipeline.score.driver import prepare_scoring, score
    from pipeline.train.driver import prepare_training, run_training

    config = load_config(None, row_overrides(model, row, seed, settings), **{"model.names": [model]})
    # run_training grants the same share from the same function; the card does not record it.
    granted = fit_training(config.resources, ClusterShape.current()).cpus_per_worker
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        artifact = run_training(prepare_training(settings.catalog, os.path.join(work, "models"), config))[model][
            "artifact"
        ]
        train_seconds = time.perf_counter() - started
        card = read_card(artifact).to_dict()
        scores = os.path.join(work, "scores")
        manifest = score(prepare_scoring(settings.heldout, artifact, scores, config)).to_dict()
        if manifest["status"] != "completed":
            raise RuntimeError(
                f"scoring run {manifest['run_id']} ended {manifest['status']}: {manifest.get('problems')}"
            )
        train_counts = card["split"]["counts"]["train"]
        minority = min(train_counts, key=lambda name: train_counts[name])
        heldout = heldout_figures(scores, minority)
    test = card["test"]
    return {
        "model": model,
        "workers": row.workers,
        "learning_rate_scaling": row.scaling,
        "seed": card["seed"],
        "split_seed": card["split"]["seed"],
        "cpus_per_worker": granted,
        "batch_size_per_worker": card["batch_size_per_worker"],
        "global_batch_size": card["global_batch_size"],
        "effective_learning_rate": {
            name: phase["effective"] for name, phase in card["learning_rates"]["phases"].items()
        },
        "schedule": card["schedule"],
        "epochs_run": card["epochs_run"],
        "best_epoch": card["best_epoch"],
        "train_seconds": round(train_seconds, 1),
        "minority": minority,
        "heldout": heldout,
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro"]["f1"],
        "test_minority_f1": next(item["f1"] for item in test["per_class"] if item["label"] == minority),
        "test_images": test["rows"],
    }


def heldout_figures(scores_dir: str, minority: str) -> dict[str, Any]:
    """Accuracy, macro-F1 and `minority`'s F1 with their 95% intervals, from the scoring run's summary.

    Raises:
        RuntimeError: The run wrote no evaluation (the held-out catalog had no labels).
    """
    from pipeline.score.predictions import read_summary

    summary = read_summary(scores_dir)
    if summary is None:
        raise RuntimeError(f"the scoring run in {scores_dir} wrote no evaluation: is the held-out catalog labelled?")
    metrics = summary.metrics
    per_class = {item["label"]: item for item in metrics["per_class"]}
    minority_row = per_class.get(minority, {})
    return {
        "images": metrics["rows"],
        "accuracy": metrics["accuracy"],
        "accuracy_interval": metrics.get("accuracy_interval"),
        "macro_f1": metrics["macro"]["f1"],
        "macro_f1_interval": metrics["macro"].get("f1_interval"),
        "minority_f1": minority_row.get("f1"),
        "minority_f1_interval": minority_row.get("f1_interval"),
        "minority_images": minority_row.get("support", 0),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (sample, over seeds) of the held-out figures per (model, workers, scaling)."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["workers"], row["learning_rate_scaling"]), []).append(row)
    summary = []
    for (model, workers, scaling), members in groups.items():
        entry: dict[str, Any] = {"model": model, "workers": workers, "learning_rate_scaling": scaling}
        entry["seeds"] = [member["seed"] for member in members]
        entry["global_batch_size"] = members[0]["global_batch_size"]
        for metric in ("accuracy", "macro_f1", "minority_f1"):
            values = [member["heldout"][metric] for member in members if member["heldout"][metric] is not None]
            entry[metric] = {"values": values, "mean": _mean(values), "std": _std(values)}
        summary.append(entry)
    return summary


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def verdicts(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model's multi-worker groups against its 1-worker group, by the rule in `RULE`."""
    results = []
    for entry in summary:
        if entry["workers"] == 1:
            continue
        ones = [other for other in summary if other["model"] == entry["model"] and other["workers"] == 1]
        same_scaling = [other for other in ones if other["learning_rate_scaling"] == entry["learning_rate_scaling"]]
        base = (same_scaling or ones or [None])[0]
        if base is None:
            continue
        result = {
            "model": entry["model"],
            "workers": entry["workers"],
            "learning_rate_scaling": entry["learning_rate_scaling"],
            "against": {"workers": 1, "learning_rate_scaling": base["learning_rate_scaling"]},
        }
        for metric in ("macro_f1", "minority_f1"):
            result[metric] = compare(base[metric]["values"], entry[metric]["values"])
        results.append(result)
    return results


def compare(baseline: list[float], other: list[float]) -> dict[str, Any]:
    """Welch's t-test of `other` against `baseline`: the difference of means, p and the verdict."""
    from scipy.stats import ttest_ind

    if len(baseline) < 2 or len(other) < 2:
        return {"difference": _difference(baseline, other), "p_value": None, "verdict": "undetermined"}
    difference = statistics.fmean(other) - statistics.fmean(baseline)
    if statistics.pvariance(baseline) == 0 and statistics.pvariance(other) == 0:
        # No spread at all: the t statistic is undefined; equal means are the same, any gap differs.
        p_value = 1.0 if difference == 0 else 0.0
    else:
        p_value = float(ttest_ind(other, baseline, equal_var=False).pvalue)
    return {
        "difference": difference,
        "p_value": p_value,
        "verdict": "same within noise" if p_value >= ALPHA else "differs",
    }


def _difference(baseline: list[float], other: list[float]) -> float | None:
    return statistics.fmean(other) - statistics.fmean(baseline) if baseline and other else None


def markdown(summary: list[dict[str, Any]], judged: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table, with each row's verdict on macro-F1 against 1 worker."""
    lookup = {(item["model"], item["workers"], item["learning_rate_scaling"]): item for item in judged}
    lines = [
        "| model | workers | scaling | global batch | seeds | held-out macro-F1 | smallest-class F1 "
        "| vs 1 worker (macro-F1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        verdict = lookup.get((entry["model"], entry["workers"], entry["learning_rate_scaling"]))
        said = "—"
        if verdict is not None:
            macro = verdict["macro_f1"]
            p_value = "" if macro["p_value"] is None else f", p={macro['p_value']:.2f}"
            said = f"{macro['verdict']} (Δ {_format(macro['difference'], signed=True)}{p_value})"
        lines.append(
            f"| {entry['model']} | {entry['workers']} | {entry['learning_rate_scaling']} | "
            f"{entry['global_batch_size']} | {len(entry['seeds'])} | {_spread(entry['macro_f1'])} | "
            f"{_spread(entry['minority_f1'])} | {said} |"
        )
    return "\n".join(lines)


def _spread(figures: dict[str, Any]) -> str:
    if figures["mean"] is None:
        return "—"
    return _format(figures["mean"]) + ("" if figures["std"] is None else f" ± {figures['std']:.3f}")


def _format(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            settings = settings_from_args(args, scratch)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        import ray

        try:
            rows = _earlier_rows(args, settings)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        done = {(row["model"], row["workers"], row["learning_rate_scaling"], row["seed"]) for row in rows}
        pending = [
            (model, row, seed)
            for model in settings.models
            for row in settings.rows
            for seed in settings.seeds
            if (model, row.workers, row.scaling, seed) not in done
        ]
        if pending:
            ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
        try:
            for model, row, seed in pending:
                rows.append(run_row(model, row, seed, settings))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            ray.shutdown()
    summary = summarize(rows)
    judged = verdicts(summary)
    described = _described(settings, args)
    described["models"] = list(dict.fromkeys(row["model"] for row in rows))
    described["rows"] = list(dict.fromkeys(f"{row['workers']}:{row['learning_rate_scaling']}" for row in rows))
    described["seeds"] = sorted({row["seed"] for row in rows})
    report = {
        "settings": described,
        "rows": rows,
        "summary": summary,
        "verdict_rule": RULE,
        "verdicts": judged,
    }
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print(markdown(summary, judged))
    return 0


# Settings an appended run must share with the rows already in --output.
APPEND_KEYS = ("catalog", "heldout", "split_seed", "image_size", "epochs", "head_epochs", "fine_tune_epochs", "weights")


def _earlier_rows(args: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    """With --append, the rows --output already holds.

    Raises:
        ValueError: Those rows were run with other settings, named.
    """
    if not args.append or not os.path.exists(args.output):
        return []
    with open(args.output) as handle:
        earlier = json.load(handle)
    mine = _described(settings, args)
    differ = [key for key in APPEND_KEYS if earlier["settings"].get(key) != mine[key]]
    if differ:
        raise ValueError(f"--append: {args.output} holds rows run with other {differ}; use another --output")
    rows: list[dict[str, Any]] = earlier["rows"]
    return rows


def _described(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The settings as the report shows them: paths relative to the repository, generated ones named so."""
    described = asdict(settings)
    described["catalog"] = "generated" if args.tiny else os.path.relpath(settings.catalog, REPO)
    generated = args.tiny and args.heldout is None
    described["heldout"] = "generated" if generated else os.path.relpath(settings.heldout, REPO)
    described["rows"] = [f"{row.workers}:{row.scaling}" for row in settings.rows]
    # A weights file by its name only: the report must not cite a path of the machine it ran on.
    described["weights"] = os.path.basename(settings.weights) if os.path.isfile(settings.weights) else settings.weights
    described["training_cpus"] = TRAINING_CPUS
    described["ray_cpus"] = RAY_CPUS
    return described


if __name__ == "__main__":
    raise SystemExit(main())
