"""Builds a product catalog (PNG tree) from Fashion-MNIST, seeded and reproducible.

    python -m jobs.build_catalog --output data/sample_catalog --split train \
        --counts ankle_boot=510,sandal=14,trouser=400,bag=385,sneaker=600
    python -m jobs.build_catalog --output data/heldout_catalog --split test \
        --counts ankle_boot=100,sandal=100,trouser=100,bag=100,sneaker=100
"""

from __future__ import annotations

import argparse

from jobs import runtime
from pipeline.fashion_mnist import STUDY_COUNTS, build_catalog


def parse_counts(text: str) -> dict[str, int]:
    try:
        return {name: int(count) for name, count in (item.split("=") for item in text.split(","))}
    except ValueError as error:
        raise ValueError(f"--counts {text!r} is malformed; use class=count,class=count") from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.build_catalog", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument(
        "--split",
        choices=["train", "test"],
        default="train",
        help="Fashion-MNIST split; held-out catalogs must use test",
    )
    parser.add_argument("--counts", default=",".join(f"{k}={v}" for k, v in STUDY_COUNTS.items()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", help="folder with the four IDX .gz files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runtime.setup_logging()

    def body() -> int:
        written = build_catalog(args.output, parse_counts(args.counts), args.split, args.seed, args.source)
        print(f"wrote {sum(written.values())} images {written} to {args.output}")
        return runtime.EXIT_OK

    return runtime.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
