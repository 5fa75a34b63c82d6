"""Label shift measured where it is known: accuracy, macro-F1 and ECE of a labelled scoring output
as scored, and after its probabilities are re-weighted to the class prior that EM estimates
(`pipeline.score.drift`). The shipped held-out catalog is balanced while training is not, so the
shift is known and the estimate can be checked against the true mix.

    python -m benchmarks.prior_shift --scores outputs/demo/scores/custom_cnn --model outputs/demo/models/custom_cnn \
        --output benchmarks/results/prior_shift
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np


def measure(scores_uri: str, model_uri: str) -> dict[str, Any]:
    """The figures with and without the prior correction, and the estimated against the true prior.

    Reads the prediction rows back: an offline measurement, not the scoring path.
    """
    from pipeline.artifacts import read_card
    from pipeline.metrics import summarize
    from pipeline.score.drift import estimate_prior, reweight_to_prior, source_prior
    from pipeline.score.predictions import read_predictions

    card = read_card(model_uri)
    class_names = list(card.class_names)
    source = source_prior(card)
    if source is None:
        raise ValueError(f"model card at {model_uri!r} has no drift baseline; retrain with this version")
    rows = read_predictions(scores_uri, columns=["label", "probabilities", "error"])
    rows = rows[rows["error"].isna() & rows["label"].isin(class_names)]
    truth = np.array([class_names.index(label) for label in rows["label"]])
    probabilities = np.stack(rows["probabilities"].to_numpy()).astype(np.float64)
    estimate = estimate_prior(probabilities, source)
    corrected = reweight_to_prior(probabilities, source, estimate)

    def figures(values: np.ndarray) -> dict[str, float]:
        summary = summarize(truth, values, class_names)
        return {
            "accuracy": round(summary["accuracy"], 4),
            "macro_f1": round(summary["macro"]["f1"], 4),
            "ece": round(summary["expected_calibration_error"], 4),
        }

    true_mix = np.bincount(truth, minlength=len(class_names)) / len(truth)
    predicted_mix = np.bincount(probabilities.argmax(axis=1), minlength=len(class_names)) / len(truth)
    return {
        "rows": len(truth),
        "classes": class_names,
        "training_prior": source.round(4).tolist(),
        "true_prior": true_mix.round(4).tolist(),
        "predicted_mix": predicted_mix.round(4).tolist(),
        "em_estimate": estimate.round(4).tolist(),
        "as_scored": figures(probabilities),
        "prior_corrected": figures(corrected),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prior_shift", description=__doc__.split("\n")[0])
    parser.add_argument("--scores", required=True, help="a scoring output of a labelled catalog")
    parser.add_argument("--model", required=True, help="the model artifact it was scored with")
    parser.add_argument("--output", required=True, help="folder for prior_shift.json")
    args = parser.parse_args(argv)
    result = measure(args.scores, args.model)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "prior_shift.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
