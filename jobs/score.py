"""Scores a catalog with a trained model: Parquet predictions, evaluation when labelled, run.json.

    python -m jobs.score --catalog data/heldout_catalog --model outputs/demo/models/custom_cnn \
        --output outputs/demo/scores/custom_cnn --config local
"""

from __future__ import annotations

import argparse
import logging

from jobs import runtime
from pipeline.config import JobConfig

logger = logging.getLogger(__name__)


def _actors(value: str) -> int | str:
    return value if value == "auto" else int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.score", description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", required=True, help="folder tree, flat folder or CSV/Parquet manifest")
    parser.add_argument("--model", required=True, help="a model artifact directory written by jobs.train")
    parser.add_argument("--output", required=True, help="where predictions go (path or s3://)")
    parser.add_argument("--batch-size", type=int, help="images per model call")
    parser.add_argument(
        "--actors", type=_actors, help='Predictor actors, or "auto" (one per core; one per GPU with --gpu)'
    )
    parser.add_argument("--gpu", action="store_true", default=None, help="one GPU per actor")
    parser.add_argument("--engine", choices=["auto", "onnx", "keras"], help="inference engine")
    parser.add_argument("--config", help="preset: local, cluster, or a YAML file (path or s3://)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override")
    parser.add_argument("--verbose", action="store_true", help="show every log line on the console, not only progress")
    return parser


def resolve(args: argparse.Namespace) -> JobConfig:
    """The job's config from its parsed flags (what a cluster driver resolves first)."""
    paths = {"catalog": args.catalog, "model": args.model, "output": args.output}
    return runtime.resolve_config(
        args.config,
        args.set,
        paths,
        {
            "predict.batch_size": args.batch_size,
            "resources.actors": args.actors,
            "resources.gpu": args.gpu,
            "predict.engine": args.engine,
        },
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with runtime.job_log(args.output, "score", "scoring", args.verbose) as log:
        from pipeline.score.drift import signals_scheduler
        from pipeline.score.driver import prepare_scoring, score
        from pipeline.score.incremental import prepare_incremental, score_incremental
        from pipeline.score.predictions import read_run

    def body() -> int:
        config = resolve(args)
        if config.predict.incremental:
            incremental = prepare_incremental(args.catalog, args.model, args.output, config)
            runtime.init_ray(config.resources, verbose=args.verbose)
            view = score_incremental(incremental)
            print(
                f"current view: {view.rows} rows ({view.scored_this_run} scored now, {view.unchanged} "
                f"unchanged, {view.deleted} deleted) → {args.output}"
            )
            latest = read_run(incremental.plan.output_uri) if view.scored_this_run else None
            drifted = latest is not None and latest.drift is not None and signals_scheduler(latest.drift, config.drift)
            return runtime.EXIT_DRIFT if drifted else runtime.EXIT_OK
        plan = prepare_scoring(args.catalog, args.model, args.output, config)
        runtime.init_ray(config.resources, verbose=args.verbose)
        manifest = score(plan)
        counts, timings = manifest.counts, manifest.timings or {}
        headline = manifest.evaluation or {}
        accuracy = f", accuracy {headline['accuracy']:.4f}" if headline.get("accuracy") is not None else ""
        print(
            f"{manifest.status}: {counts.rows_out if counts else 0} rows ({counts.errors if counts else 0} errors) "
            f"in {timings.get('seconds')} s ({timings.get('images_per_second')} img/s){accuracy} → {plan.output_uri}"
        )
        for problem in manifest.problems:
            logger.error("run failed: %s", problem)
        if manifest.drift is not None:
            print(f"drift: {manifest.drift.status} (details in {plan.output_uri}/drift/report.html)")
        if manifest.status != "completed":
            return runtime.EXIT_FAILED
        drifted = manifest.drift is not None and signals_scheduler(manifest.drift, config.drift)
        return runtime.EXIT_DRIFT if drifted else runtime.EXIT_OK

    return log.end(runtime.run(body), succeeded=(runtime.EXIT_OK, runtime.EXIT_DRIFT))


if __name__ == "__main__":
    raise SystemExit(main())
