"""The benchmark's command-line flags, and how they become `Settings` (`--tiny` is the CI preset)."""

from __future__ import annotations

import argparse
import os

from benchmarks.accuracy import __doc__ as PACKAGE_DOC
from benchmarks.accuracy.settings import (
    ALL_VARIANTS,
    DEFAULT_CACHE,
    DEFAULT_REPEATS,
    SAMPLE_CATALOG,
    TINY_IMAGE_SIZE,
    TINY_REPEATS,
    TINY_VARIANTS,
    Schedule,
    Settings,
    default_imbalance,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy", description=(PACKAGE_DOC or "").split("\n")[0]
    )
    parser.add_argument("--output", required=True, help="directory for accuracy.json, results.md, reliability.png")
    parser.add_argument(
        "--heldout",
        help="held-out catalog (default: 1,000 Fashion-MNIST test images per class, "
        "built into --cache-dir; the shipped data/heldout_catalog if Fashion-MNIST is missing)",
    )
    parser.add_argument("--catalog", default=SAMPLE_CATALOG, help="training catalog (default data/sample_catalog)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the default held-out catalog is built")
    parser.add_argument("--work-dir", help="model artifacts and scoring outputs (default <output>/work)")
    parser.add_argument("--keep-work", action="store_true", help="keep --work-dir after the run")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS), help="comma list of " + ", ".join(ALL_VARIANTS))
    parser.add_argument(
        "--imbalance",
        default="none,class_weight,oversample,both",
        help="strategies for product_custom_cnn (one run each)",
    )
    parser.add_argument(
        "--mobilenet-imbalance", default="class_weight", help="strategies for product_mobilenet_v2 (one run each)"
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="pretrained MobileNetV2 base for product_mobilenet_v2 and the MobileNetV2 baselines: "
        "imagenet (needs internet) or a Keras no-top weights file",
    )
    parser.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="multiplies the product's default epoch budgets (train.epochs, head_epochs, fine_tune_epochs)",
    )
    parser.add_argument("--cnn-epochs", type=int, help="custom_cnn epochs (product and baselines)")
    parser.add_argument("--scratch-epochs", type=int, help="product_mobilenet_v2_scratch epochs")
    parser.add_argument("--head-epochs", type=int, help="MobileNetV2 head-phase epochs")
    parser.add_argument("--fine-tune-epochs", type=int, help="MobileNetV2 fine-tune epochs")
    parser.add_argument("--cnn-patience", type=int, help="early-stopping patience, CNN and scratch")
    parser.add_argument("--transfer-patience", type=int, help="early-stopping patience, MobileNetV2 phases")
    parser.add_argument(
        "--batch-size", type=int, help="baselines' batch (default: the product's train.batch_size_per_worker)"
    )
    parser.add_argument(
        "--product-batch-per-worker",
        type=int,
        help="product train.batch_size_per_worker (default --batch-size / 2: the same global batch as the baselines)",
    )
    parser.add_argument("--seed", type=int, default=42, help="split seed (the product's data.seed) and baseline seed")
    parser.add_argument(
        "--baseline-seed",
        type=int,
        help="Keras seed of the baselines and train.seed of the product rows (default --seed); the split keeps --seed",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="runs per variant, to report mean ± std beside each run's 95%% intervals (default 3; --tiny: 2). "
        "Repeat k trains with seed --baseline-seed + k - 1 (Keras seed; the product's train.seed) on the same split",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CI smoke: 32 px, 1 epoch, product_custom_cnn + baseline_fixed_cnn, shipped held-out",
    )
    parser.add_argument("--verbose", action="store_true", help="stream Ray worker logs")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite results.md / reliability.png / targets from --output's accuracy.json",
    )
    parser.add_argument("--notes", help="a Markdown file whose text goes into results.md under 'Notes'")
    parser.add_argument(
        "--reuse-work", action="store_true", help="product rows: reuse a completed artifact + scoring run in --work-dir"
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows of an earlier run in --output's accuracy.json (same image size, "
        "schedule, split, held-out catalog and weights) that this run does not redo",
    )
    return parser


def settings_from_args(args: argparse.Namespace, command: str) -> Settings:
    """The run's settings; `--tiny` is the CI preset and ignores the variant and epoch flags."""
    schedule = Schedule.tiny() if args.tiny else Schedule.product(args.epochs_scale)
    schedule = schedule.with_overrides(
        args.product_batch_per_worker,
        cnn_epochs=args.cnn_epochs,
        head_epochs=args.head_epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        scratch_epochs=args.scratch_epochs,
        cnn_patience=args.cnn_patience,
        transfer_patience=args.transfer_patience,
        batch_size=args.batch_size,
    )
    output = os.path.abspath(args.output)
    return Settings(
        output=output,
        work_dir=os.path.abspath(args.work_dir or os.path.join(output, "work")),
        catalog=args.catalog,
        heldout=args.heldout,
        cache_dir=args.cache_dir,
        image_size=TINY_IMAGE_SIZE if args.tiny else args.image_size,
        variants=TINY_VARIANTS if args.tiny else _list(args.variants),
        cnn_imbalance=(default_imbalance("custom_cnn"),) if args.tiny else _list(args.imbalance),
        mobilenet_imbalance=() if args.tiny else _list(args.mobilenet_imbalance),
        weights=args.weights,
        schedule=schedule,
        seed=args.seed,
        baseline_seed=args.seed if args.baseline_seed is None else args.baseline_seed,
        command=command,
        tiny=args.tiny,
        keep_work=args.keep_work,
        verbose=args.verbose,
        reuse_work=args.reuse_work,
        append=args.append,
        notes=args.notes,
        repeats=args.repeats if args.repeats is not None else (TINY_REPEATS if args.tiny else DEFAULT_REPEATS),
    )


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())
