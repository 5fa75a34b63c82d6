"""Prints where each scoring run's predictions are and how accurate it was, with 95% intervals, and
whether one model beats another on the same images (--page: also an HTML comparison).

python -m jobs.summarize outputs/demo/scores/custom_cnn outputs/demo/scores/mobilenet_v2 --page outputs/demo/index.html
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs import runtime
from pipeline import storage
from pipeline.reports import ComparedPair, verdict_text
from pipeline.score.comparison import compare_pairs, write_comparison_page
from pipeline.score.predictions import PREDICTIONS_DIR, RUN_FILE, read_run


def _figure(value: float | None) -> str:
    """A metric to 4 places, or "-" for an unlabelled catalog, which has none."""
    return "-" if value is None else f"{value:.4f}"


def _interval(interval: list[float] | None) -> str:
    return "-" if not interval else f"[{interval[0]:.4f},{interval[1]:.4f}]"


def _difference(figures: dict[str, Any] | None, metric: str) -> str:
    if figures is None:
        return "-"
    low, high = figures[metric]["interval"]
    return f"{figures[metric]['difference']:+.4f} [{low:+.4f},{high:+.4f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.summarize", description=__doc__.split("\n")[0])
    parser.add_argument("outputs", nargs="+", help="scoring output folders")
    parser.add_argument("--page", help="also write the comparison page (HTML) here, e.g. outputs/demo/index.html")
    args = parser.parse_args(argv)

    def body() -> int:
        print(
            f"{'model':<18} {'status':<10} {'rows':>6} {'errors':>6} {'accuracy':>9} {'(95%)':<17} "
            f"{'macro-F1':>9} {'(95%)':<17}  predictions"
        )
        for output in args.outputs:
            run = read_run(output)
            if run is None:
                raise ValueError(f"{output!r} has no {RUN_FILE}: not a scoring output, or its run never started")
            headline = run.evaluation or {}
            rows, errors = (run.counts.rows_out, run.counts.errors) if run.counts else ("-", "-")
            print(
                f"{run.model.name:<18} {run.status:<10} {rows:>6} {errors:>6} "
                f"{_figure(headline.get('accuracy')):>9} {_interval(headline.get('accuracy_interval')):<17} "
                f"{_figure(headline.get('macro_f1')):>9} {_interval(headline.get('macro_f1_interval')):<17}  "
                f"{storage.join(output, PREDICTIONS_DIR)}"
            )
        pairs = compare_pairs(args.outputs)
        for pair in pairs:
            shown = ComparedPair(pair.first, pair.second, pair.figures, pair.reason)
            print(
                f"{pair.first} - {pair.second} on the same images: "
                f"macro-F1 {_difference(pair.figures, 'macro_f1')} {verdict_text(shown, 'macro_f1')}; "
                f"accuracy {_difference(pair.figures, 'accuracy')} {verdict_text(shown, 'accuracy')}"
            )
        if args.page:
            print(f"comparison page: {write_comparison_page(args.outputs, args.page, pairs)}")
        return runtime.EXIT_OK

    return runtime.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
