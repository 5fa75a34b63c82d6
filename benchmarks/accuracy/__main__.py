"""Command line of the held-out accuracy benchmark: `python -m benchmarks.accuracy --output DIR [--tiny]`."""

from __future__ import annotations

import logging
import os
import sys

from benchmarks.accuracy.flags import build_parser, settings_from_args
from benchmarks.accuracy.report import read_results, results_markdown, write_outputs
from benchmarks.accuracy.settings import SettingsError


def render_only(output: str, notes: str | None) -> int:
    """Rewrites results.md, reliability.png and the judged targets from an existing accuracy.json."""
    try:
        results = read_results(output)
    except ValueError as error:
        print(f"error: --render-only: {error}", file=sys.stderr)
        return 2
    if notes:
        with open(notes) as handle:
            results["notes"] = handle.read()
    write_outputs(results, output)
    print(results_markdown(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render_only:
        return render_only(os.path.abspath(args.output), args.notes)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    command = "python -m benchmarks.accuracy " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        settings = settings_from_args(args, command)
        # Imported here: Ray and TensorFlow load with it, and neither bad flags nor --render-only need them.
        from benchmarks.accuracy.run import run_benchmark

        results = run_benchmark(settings)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(results_markdown(results))
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
