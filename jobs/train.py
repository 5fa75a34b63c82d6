"""Trains the catalog models data-parallel on Ray Train.

python -m jobs.train --catalog data/sample_catalog --output outputs/models --config local
"""

from __future__ import annotations

import argparse
import logging

from jobs import runtime
from pipeline import storage
from pipeline.config import JobConfig

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", required=True, help="labelled catalog: <root>/<label>/ tree or manifest")
    parser.add_argument("--output", required=True, help="where model artifacts go (path or s3://)")
    parser.add_argument("--models", help="comma-separated: custom_cnn,mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--workers", type=int, help="Ray Train workers")
    parser.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker")
    parser.add_argument("--epochs", type=int, help="custom_cnn epochs and the pretrained models' head epochs")
    parser.add_argument(
        "--image-size", type=int, help="input side in pixels for every model (default: each model's registry size)"
    )
    parser.add_argument("--weights", help="pretrained base weights: imagenet, none, or a file path/s3:// URI")
    parser.add_argument(
        "--extra-labels", help="reviewed labels (Label Studio JSON export or review CSV) added to training only"
    )
    parser.add_argument("--config", help="preset: local, cluster, or a YAML file (path or s3://)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override")
    parser.add_argument("--verbose", action="store_true", help="show every log line on the console, not only progress")
    return parser


def resolve(args: argparse.Namespace) -> JobConfig:
    """The job's config from its parsed flags (what a cluster driver resolves first)."""
    return runtime.resolve_config(
        args.config,
        args.set,
        {"catalog": args.catalog, "output": args.output},
        {
            "model.names": args.models.split(",") if args.models else None,
            "resources.workers": args.workers,
            "resources.gpu": args.gpu,
            "train.epochs": args.epochs,
            "train.head_epochs": args.epochs,
            "model.image_size": args.image_size,
            "model.weights": args.weights,
        },
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with runtime.job_log(args.output, "train", "training", args.verbose) as log:
        from pipeline.train.driver import prepare_training, run_training

    def body() -> int:
        config = resolve(args)
        plan = prepare_training(args.catalog, args.output, config, args.extra_labels)
        storage.write_json(storage.join(plan.output_uri, "config.json"), config.to_dict())
        runtime.init_ray(config.resources, verbose=args.verbose)
        results = run_training(plan)
        for name, result in results.items():
            print(f"{name}: test accuracy {result['test']['accuracy']:.4f} → {result['artifact']}")
        return runtime.EXIT_OK

    return log.end(runtime.run(body))


if __name__ == "__main__":
    raise SystemExit(main())
