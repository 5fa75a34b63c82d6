"""Training overhead: the product's Ray Train epoch vs a plain single-process Keras `model.fit`.

Same generated catalog, same split, same model, batch size and optimizer. The product runs
`prepare_training` + `run_training` on a local Ray (1 worker, then 2 workers) and its per-epoch
`seconds` come from the artifact's history.json; the plain loop is `model.fit` on the same train
and validation rows, decoded once into memory like the product's materialized datasets, timed per
epoch (training + validation, as the product's are). Epoch 1 is warm-up (graph tracing) and is
excluded; the median of the rest is reported. Augmentation is off in both so they do the same work.

On a 2-core machine 2 workers cannot be faster than 1 worker using both cores: the comparison
shows what data parallelism costs or gives here, not what it gives on a cluster.

    python -m benchmarks.train_overhead --output train_overhead.json
    python -m benchmarks.train_overhead --tiny --output tiny.json      # CI
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import REPO, TreeMonitor, machine, make_labelled_catalog, settle

DEFAULT_CONFIG = os.path.join(REPO, "jobs", "configs", "local.yaml")
TINY = {"per_class": 24, "image_size": 32, "epochs": 3, "workers": "1,2"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="custom_cnn", help="model to train (default custom_cnn)")
    parser.add_argument("--per-class", type=int, default=300, help="images per class (5 classes; default 300)")
    parser.add_argument("--image-size", type=int, default=64, help="model input size (default 64, the local preset)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run; the first is excluded (default 5)")
    parser.add_argument("--workers", default="1,2", help="Ray Train worker counts to run (default 1,2)")
    parser.add_argument("--tiny", action="store_true", help="CI smoke run: 24 images per class, 32 px, 3 epochs")
    parser.add_argument("--output", default="train_overhead.json", help="JSON results file")
    parser.add_argument("--work-dir", help="keep the generated catalog here and reuse it")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the product's config preset")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override for the product's config, as in jobs.train",
    )
    return parser


def steady_epochs(seconds: list[float]) -> dict[str, Any]:
    """Median of the epochs after the first (tracing and first-touch costs land in epoch 1)."""
    steady = seconds[1:] or seconds
    return {
        "epoch_seconds": [round(value, 3) for value in seconds],
        "median_epoch_seconds": round(statistics.median(steady), 3),
    }


def product_config(args: argparse.Namespace, workers: int):
    from jobs.config import load_config

    overrides = [
        f"model.names=[{args.model}]",
        f"model.image_size={args.image_size}",
        "model.weights=none",
        f"train.epochs={args.epochs}",
        f"train.head_epochs={args.epochs}",
        "train.fine_tune_epochs=0",
        f"train.cnn_patience={args.epochs + 1}",
        f"train.transfer_patience={args.epochs + 1}",
        "augment.enabled=false",
        f"resources.workers={workers}",
    ]
    if not any(item.startswith("resources.cpus_per_worker=") for item in args.set):
        # The same thread budget as the plain loop: TensorFlow gets round(cpus_per_worker) threads
        # per worker, and half a CPU stays free for Ray Data (1 worker: 1.5 → 2 threads; 2: 0.5 → 1).
        overrides.append(f"resources.cpus_per_worker={max(0.5, (os.cpu_count() or 1) / workers - 0.5)}")
    return load_config(args.config, overrides + args.set)


def plain_fit(plan, args: argparse.Namespace) -> dict[str, Any]:
    """`model.fit` on the product's own train/val rows, decoded into memory first."""
    import keras

    from models import build_model
    from pipeline.images import decode_image
    from pipeline.splits import SPLIT

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = plan.frame[plan.frame[SPLIT] == split]
        pixels = np.stack([decode_image(open(uri, "rb").read(), args.image_size) for uri in rows["image_uri"]])
        return pixels, plan.label_index.encode(rows["label"]).to_numpy()

    (x_train, y_train), (x_val, y_val) = arrays("train"), arrays("val")
    config = plan.config
    keras.utils.set_random_seed(config.data.seed)
    model = build_model(
        args.model,
        len(plan.label_index),
        args.image_size,
        **({"weights": None} if args.model == "mobilenet_v2" else {}),
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.train.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # after validation, like the product's figure
            seconds.append(time.perf_counter() - self.started)

    batch = config.train.batch_size_per_worker
    with TreeMonitor() as monitor:
        model.fit(
            x_train.astype(np.float32),
            y_train,
            batch_size=batch,
            epochs=args.epochs,
            shuffle=True,
            validation_data=(x_val.astype(np.float32), y_val),
            callbacks=[EpochTimer()],
            verbose=0,
        )
    result = steady_epochs(seconds)
    result.update(
        {
            "train_images": int(len(x_train)),
            "val_images": int(len(x_val)),
            "batch_size": batch,
            "threads": os.cpu_count(),
            **monitor.result(),
        }
    )
    result["train_images_per_second"] = round(len(x_train) / result["median_epoch_seconds"], 1)
    return result


def product_fit(catalog: str, output: str, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """The product's training job (minus process start-up) on a fresh local Ray."""
    import ray

    from pipeline.train.driver import prepare_training, run_training

    config = product_config(args, workers)
    shutil.rmtree(output, ignore_errors=True)
    plan = prepare_training(catalog, output, config)
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    settle()
    ray_start = time.perf_counter() - started
    try:
        with TreeMonitor() as monitor:
            started = time.perf_counter()
            run_training(plan)
            total = time.perf_counter() - started
    finally:
        ray.shutdown()
    with open(os.path.join(output, args.model, "history.json")) as handle:
        history = json.load(handle)
    result = steady_epochs([row["seconds"] for row in history])
    steps = history[-1]["steps"]
    batch = config.train.batch_size_per_worker
    result.update(
        {
            "workers": workers,
            "cpus_per_worker": config.resources.cpus_per_worker,
            # configure_tensorflow rounds the worker's CPU share to its thread count.
            "tensorflow_threads_per_worker": max(1, int(round(config.resources.cpus_per_worker))),
            "steps_per_epoch": steps,
            "global_batch_size": batch * workers,
            "run_training_seconds": round(total, 1),
            "ray_start_seconds": round(ray_start, 2),
            **monitor.result(),
        }
    )
    result["train_images_per_second"] = round(steps * batch * workers / result["median_epoch_seconds"], 1)
    return result


def log(message: str) -> None:
    common.log("train_overhead", message)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tiny:
        args.per_class, args.image_size, args.epochs = TINY["per_class"], TINY["image_size"], TINY["epochs"]
        args.workers = TINY["workers"]
    with common.work_directory("train-overhead", args.work_dir) as work:
        started = time.perf_counter()
        catalog = os.path.join(work, f"catalog-{args.per_class}")
        log(f"generating a {args.per_class}-per-class catalog in {catalog}")
        info = make_labelled_catalog(catalog, args.per_class)
        from pipeline.train.driver import prepare_training

        plan = prepare_training(catalog, os.path.join(work, "plain"), product_config(args, 1))
        results: dict[str, Any] = {
            "benchmark": "train_overhead",
            "machine": machine(),
            "catalog": info,
            "settings": {
                "model": args.model,
                "image_size": args.image_size,
                "epochs": args.epochs,
                "config": args.config,
                "overrides": args.set,
                "augmentation": False,
                "tiny": args.tiny,
            },
        }
        log("plain single-process model.fit")
        results["plain"] = plain_fit(plan, args)
        results["product"] = {}
        for workers in (int(value) for value in args.workers.split(",")):
            log(f"product: Ray Train with {workers} worker(s)")
            results["product"][str(workers)] = product_fit(
                catalog, os.path.join(work, f"product-{workers}"), args, workers
            )
        plain = results["plain"]["median_epoch_seconds"]
        ratios = {
            f"product_{w}w_over_plain_epoch_time": round(r["median_epoch_seconds"] / plain, 3)
            for w, r in results["product"].items()
        }
        if "1" in results["product"] and "2" in results["product"]:
            ratios["speedup_2w_over_1w"] = round(
                results["product"]["1"]["median_epoch_seconds"] / results["product"]["2"]["median_epoch_seconds"], 3
            )
        results["ratios"] = ratios
        product_text = ", ".join(
            f"{w} worker(s) {r['median_epoch_seconds']:.2f} s ({r['train_images_per_second']:.0f} img/s)"
            for w, r in results["product"].items()
        )
        results["summary"] = (
            f"{args.model}@{args.image_size}px, {plain and results['plain']['train_images']} train "
            f"images: plain model.fit {plain:.2f} s/epoch "
            f"({results['plain']['train_images_per_second']:.0f} img/s) | Ray Train {product_text} | "
            + ", ".join(f"{key} {value}" for key, value in ratios.items())
        )
        common.finish(results, started, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
