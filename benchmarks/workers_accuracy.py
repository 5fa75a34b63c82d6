"""Does data parallelism cost accuracy? The same model, seed and split trained with 1 and N Ray
Train workers, with the learning rates scaled to the global batch (`linear`) or not (`none`).

Each row trains `prepare_training` + `run_training` on the catalog and reads the artifact's card:
the internal test split's accuracy, macro-F1 and smallest-class F1, the epochs run and the
effective learning rate. One seed per row, so differences under the run-to-run noise (README,
Results) show nothing; the figures say which way the scaling moves a 2-worker run, not by how much
for certain.

    python -m benchmarks.workers_accuracy --output benchmarks/results/training/workers_accuracy.json
    python -m benchmarks.workers_accuracy --tiny --output tiny.json      # CI
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

from benchmarks.common import REPO, make_labelled_catalog

SAMPLE_CATALOG = os.path.join(REPO, "data", "sample_catalog")
ROWS = "1:linear,2:none,2:linear"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="JSON file for the figures")
    parser.add_argument("--catalog", default=SAMPLE_CATALOG, help="labelled catalog (default data/sample_catalog)")
    parser.add_argument("--rows", default=ROWS, help=f"workers:scaling pairs (default {ROWS})")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tiny", action="store_true", help="CI smoke: a generated catalog, 32 px, 1 epoch")
    return parser


def train_row(catalog: str, workers: int, scaling: str, image_size: int, epochs: int, seed: int) -> dict[str, Any]:
    """One training run's held-out figures from its model card."""
    from jobs.config import load_config
    from pipeline.train.driver import prepare_training, run_training

    overrides = [
        f"model.image_size={image_size}",
        f"train.epochs={epochs}",
        f"train.cnn_patience={epochs}",
        f"train.learning_rate_scaling={scaling}",
        f"data.seed={seed}",
        f"resources.workers={workers}",
        "resources.cpus_per_worker=0.5",
    ]
    config = load_config(None, overrides, **{"model.names": ["custom_cnn"]})
    with tempfile.TemporaryDirectory() as output:
        run_training(prepare_training(catalog, output, config))
        with open(os.path.join(output, "custom_cnn", "model_card.json")) as handle:
            card = json.load(handle)
    test = card["test"]
    return {
        "workers": workers,
        "learning_rate_scaling": scaling,
        "global_batch_size": card["global_batch_size"],
        "effective_learning_rate": card["learning_rates"]["phases"]["train"]["effective"],
        "epochs_run": card["epochs_run"],
        "best_epoch": card["best_epoch"],
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro"]["f1"],
        "test_min_class_f1": min(row["f1"] for row in test["per_class"]),
        "test_images": sum(row["support"] for row in test["per_class"]),
    }


def main(argv: list[str] | None = None) -> int:
    import ray

    args = build_parser().parse_args(argv)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            catalog, image_size, epochs = args.catalog, args.image_size, args.epochs
            if args.tiny:
                catalog = make_labelled_catalog(os.path.join(scratch, "catalog"), per_class=24, size=32)["directory"]
                image_size, epochs = 32, 1
            rows = []
            for pair in args.rows.split(","):
                workers, scaling = pair.split(":")
                rows.append(train_row(catalog, int(workers), scaling, image_size, epochs, args.seed))
                print(json.dumps(rows[-1]))
    finally:
        ray.shutdown()
    source = "generated" if args.tiny else os.path.relpath(args.catalog, REPO)
    settings = {"catalog": source, "image_size": image_size, "epochs": epochs}
    with open(args.output, "w") as handle:
        json.dump({"settings": settings, "seed": args.seed, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
