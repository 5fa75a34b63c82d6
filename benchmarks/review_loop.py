"""The review loop, measured: does labelling the review queue first beat labelling random images?

The shipped held-out catalog (100 images per class, never trained on) is split, per class and seeded,
into a **pool** that reviewers may label and an **untouched test** set that nothing ever trains on.
Round 0 trains `custom_cnn` on `data/sample_catalog` (14 sandals). Then, for each arm, `--rounds`
times: pick `--budget` unlabelled pool images, "label" them from their known labels, write the
review CSV, and retrain from scratch with `prepare_training(..., extra_labels_uri)` on the catalog
plus every image labelled so far. The arms:

- **queue**: the pool scored by the arm's latest model, ordered as `jobs.review export` orders the
  queue (smallest margin first, `pipeline.review.rank`), the first `--budget` not yet labelled. The
  whole pool is ranked, not only its `low_confidence` rows, so the budget is always spent;
- **random**: `--budget` images drawn uniformly from the unlabelled pool (seeded).

After each round, each model scores the untouched test set with the product's scoring; the figures
are its macro-F1 and the minority class's F1. Every run trains with the same seed and schedule, so the
arms differ only in which images were labelled. Training noise is real (see the README's Results): one
run per round is a single sample, not a significance test.

    python -m benchmarks.review_loop --output benchmarks/results/review_loop/review_loop.json
    python -m benchmarks.review_loop --tiny --output tiny.json      # CI
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import common
from benchmarks.common import REPO, machine
from jobs.config import load_config
from pipeline.artifacts import read_card
from pipeline.catalog import read_catalog_frame
from pipeline.config import JobConfig
from pipeline.review import rank
from pipeline.schema import IMAGE_ID, IMAGE_URI, LABEL
from pipeline.score.driver import prepare_scoring, score
from pipeline.score.predictions import read_predictions, read_summary
from pipeline.train.driver import prepare_training, run_training

NAME = "review_loop"
MODEL = "custom_cnn"
MINORITY = "sandal"
TINY = {"catalog_per_class": 24, "pool_per_class": 8, "test_per_class": 8, "budget": 6, "image_size": 32, "epochs": 1}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.review_loop", description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", default=os.path.join(REPO, "data", "sample_catalog"), help="training catalog")
    parser.add_argument("--heldout", default=os.path.join(REPO, "data", "heldout_catalog"), help="pool + test source")
    parser.add_argument("--pool-per-class", type=int, default=50, help="held-out images per class reviewers may label")
    parser.add_argument("--budget", type=int, default=25, help="images labelled per round (default 25)")
    parser.add_argument("--rounds", type=int, default=2, help="review rounds (default 2)")
    parser.add_argument("--epochs", type=int, default=10, help="custom_cnn epochs per training run")
    parser.add_argument("--image-size", type=int, default=64, help="model input size (default 64, the local preset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pool/test split and the random arm")
    parser.add_argument("--tiny", action="store_true", help="a few images per class, 1 epoch: checks it runs")
    parser.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    parser.add_argument("--output", required=True, help="results JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import ray

    started = time.perf_counter()
    with common.work_directory(NAME, args.keep) as work:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            results = run(args, work)
        finally:
            ray.shutdown()
    results["machine"] = machine()
    common.finish(portable(results, work), started, args.output)
    return 0


def run(args: argparse.Namespace, work: str) -> dict[str, Any]:
    catalog, pool, test = prepare_data(args, work)
    config = training_config(args)
    baseline = train_and_test(catalog, None, config, os.path.join(work, "round0"), test)
    budget = TINY["budget"] if args.tiny else args.budget
    arms: dict[str, list[dict[str, Any]]] = {}
    for arm in ("queue", "random"):
        labelled = pool.iloc[0:0]
        artifact, rows = baseline["artifact"], []
        rng = np.random.default_rng(args.seed)
        for round_number in range(1, args.rounds + 1):
            where = os.path.join(work, f"{arm}{round_number}")
            unlabelled = pool[~pool[IMAGE_URI].isin(labelled[IMAGE_URI])]
            chosen = choose(arm, unlabelled, artifact, config, where, budget, rng)
            labelled = pd.concat([labelled, chosen], ignore_index=True)
            labels_csv = os.path.join(where, "review.csv")
            os.makedirs(where, exist_ok=True)
            labelled[[IMAGE_ID, IMAGE_URI, LABEL]].to_csv(labels_csv, index=False)
            outcome = train_and_test(catalog, labels_csv, config, where, test)
            artifact = outcome["artifact"]
            outcome.update(
                round=round_number,
                labelled=len(labelled),
                labelled_per_class=labelled[LABEL].value_counts().sort_index().to_dict(),
            )
            rows.append(outcome)
            common.log(NAME, f"{arm} round {round_number}: {figures(outcome)}")
        arms[arm] = rows
    return {
        "settings": settings(args, pool, test),
        "round0": baseline,
        "arms": arms,
        "summary": summary(baseline, arms),
    }


def prepare_data(args: argparse.Namespace, work: str) -> tuple[str, pd.DataFrame, str]:
    """(training catalog, pool rows with labels, untouched test manifest), split per class, seeded."""
    catalog = args.catalog
    heldout = read_catalog_frame(args.heldout)
    pool_per_class = TINY["pool_per_class"] if args.tiny else args.pool_per_class
    if args.tiny:
        catalog = write_manifest(
            subsample(read_catalog_frame(catalog), TINY["catalog_per_class"], args.seed), work, "catalog.csv"
        )
        heldout = subsample(heldout, pool_per_class + TINY["test_per_class"], args.seed)
    rng = np.random.default_rng(args.seed)
    pool_parts, test_parts = [], []
    for _, group in heldout.groupby(LABEL, sort=True):
        shuffled = group.iloc[rng.permutation(len(group))]
        pool_parts.append(shuffled.iloc[:pool_per_class])
        test_parts.append(shuffled.iloc[pool_per_class:])
    pool = pd.concat(pool_parts, ignore_index=True)
    test = write_manifest(pd.concat(test_parts, ignore_index=True), work, "test.csv")
    return catalog, pool, test


def subsample(frame: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    parts = [group.sample(min(per_class, len(group)), random_state=seed) for _, group in frame.groupby(LABEL)]
    return pd.concat(parts, ignore_index=True)


def write_manifest(frame: pd.DataFrame, work: str, name: str) -> str:
    path = os.path.join(work, name)
    frame[[IMAGE_ID, IMAGE_URI, LABEL]].to_csv(path, index=False)
    return path


def training_config(args: argparse.Namespace) -> JobConfig:
    image_size = TINY["image_size"] if args.tiny else args.image_size
    epochs = TINY["epochs"] if args.tiny else args.epochs
    overrides = [
        f"model.image_size={image_size}",
        f"train.epochs={epochs}",
        "train.batch_size_per_worker=16",
        # jobs/configs/local.yaml's resources: 2 workers x 0.5 CPU (2 x 1 CPU starves Ray Data here).
        "resources.workers=2",
        "resources.cpus_per_worker=0.5",
        "resources.actors=1",
        "resources.cpus_per_actor=0.5",
        "predict.batch_size=64",
    ]
    return load_config(None, overrides, **{"model.names": [MODEL]})


def train_and_test(catalog: str, labels_csv: str | None, config: JobConfig, where: str, test: str) -> dict[str, Any]:
    """Trains (with the labels so far) and scores the untouched test set; returns its figures."""
    started = time.perf_counter()
    artifact = run_training(prepare_training(catalog, os.path.join(where, "models"), config, labels_csv))[MODEL][
        "artifact"
    ]
    trained = time.perf_counter() - started
    scores = os.path.join(where, "test_scores")
    score(prepare_scoring(test, artifact, scores, config))
    result = read_summary(scores)
    if result is None:
        raise RuntimeError(f"scoring the test set into {scores} wrote no evaluation")
    per_class = {row["label"]: row["f1"] for row in result.metrics["per_class"]}
    return {
        "artifact": artifact,
        "macro_f1": round(float(result.metrics["macro"]["f1"]), 4),
        "minority_f1": round(float(per_class[MINORITY]), 4),
        "accuracy": round(float(result.metrics["accuracy"]), 4),
        "test_images": result.evaluated_rows,
        "train_seconds": round(trained, 1),
    }


def choose(
    arm: str,
    unlabelled: pd.DataFrame,
    artifact: str,
    config: JobConfig,
    where: str,
    budget: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """The next `budget` images to label: the review order of the arm's latest model, or random."""
    if arm == "random":
        return unlabelled.iloc[np.sort(rng.choice(len(unlabelled), size=min(budget, len(unlabelled)), replace=False))]
    scores = os.path.join(where, "pool_scores")
    os.makedirs(where, exist_ok=True)
    pool_csv = write_manifest(unlabelled, where, "pool.csv")
    score(prepare_scoring(pool_csv, artifact, scores, config))
    predictions = read_predictions(scores, [IMAGE_ID, IMAGE_URI, "confidence", "probabilities", "error"])
    predictions = predictions[predictions["error"].isna()]
    ordered = rank(predictions, list(read_card(artifact).class_names), "margin")
    first = ordered[IMAGE_URI].head(budget)
    return unlabelled.set_index(IMAGE_URI).loc[first].reset_index()[[IMAGE_ID, IMAGE_URI, LABEL]]


def portable(results: dict[str, Any], work: str) -> dict[str, Any]:
    """The results with paths a reader of the committed JSON can place: the catalog relative to
    the repository, each artifact relative to the (deleted unless --keep) work directory."""
    results["settings"]["catalog"] = os.path.relpath(os.path.abspath(results["settings"]["catalog"]), REPO)
    for outcome in [results["round0"], *(o for outcomes in results["arms"].values() for o in outcomes)]:
        outcome["artifact"] = os.path.relpath(outcome["artifact"], work)
    return results


def figures(outcome: dict[str, Any]) -> str:
    return f"macro-F1 {outcome['macro_f1']:.3f}, {MINORITY} F1 {outcome['minority_f1']:.3f}"


def settings(args: argparse.Namespace, pool: pd.DataFrame, test: str) -> dict[str, Any]:
    return {
        "tiny": args.tiny,
        "model": MODEL,
        "catalog": args.catalog,
        "pool_images": len(pool),
        "test_images": len(pd.read_csv(test)),
        "budget": TINY["budget"] if args.tiny else args.budget,
        "rounds": args.rounds,
        "epochs": TINY["epochs"] if args.tiny else args.epochs,
        "image_size": TINY["image_size"] if args.tiny else args.image_size,
        "seed": args.seed,
        "order": "margin (smallest first), the default of jobs.review export",
    }


def summary(baseline: dict[str, Any], arms: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"round 0: {figures(baseline)}"]
    for arm, rows in arms.items():
        lines += [f"{arm} round {row['round']} ({row['labelled']} labelled): {figures(row)}" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
