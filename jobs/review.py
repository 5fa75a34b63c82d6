"""Sends a scoring run's review queue to people: a Label Studio task file and a CSV, most useful first.

python -m jobs.review export --predictions outputs/demo/scores/custom_cnn --output outputs/demo/review
"""

from __future__ import annotations

import argparse

from jobs import runtime
from pipeline.review import CSV_FILE, LABEL_CONFIG_FILE, ORDERS, TASKS_FILE, export_review

DEFAULT_EXPIRES_S = 7 * 24 * 3600


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.review", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the review queue as Label Studio tasks and a CSV")
    export.add_argument("--predictions", required=True, help="a jobs.score --output folder (path or s3://)")
    export.add_argument("--output", required=True, help="where tasks.json, label_config.xml and review.csv go")
    export.add_argument(
        "--expires", type=int, default=DEFAULT_EXPIRES_S, help="seconds the pre-signed S3 image URLs stay valid"
    )
    export.add_argument("--order", choices=ORDERS, default="margin", help="review order (smallest first)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runtime.setup_logging(log_file=None, verbose=False)

    def body() -> int:
        queue = export_review(args.predictions, args.output, args.expires, args.order)
        print(
            f"review queue: {len(queue.rows)} images by {queue.order} → {args.output}/"
            f"{{{TASKS_FILE},{LABEL_CONFIG_FILE},{CSV_FILE}}}"
        )
        return runtime.EXIT_OK

    return runtime.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
