"""What image size does to a frozen pretrained backbone: a linear probe at several input sizes.

For each backbone and size, the frozen base (with the model's own rescaling, as in training)
turns the shipped sample catalog into global-average-pooled features; a logistic regression fitted
on them is scored on the held-out catalog (macro-F1). This isolates what the base's features carry
at that size (the head phase of transfer training learns on exactly these features) at a fraction
of a training run's cost, and records the side of the base's last feature map: input / 32 for
both bases, so 64 px leaves 2×2 cells. The registry's per-backbone defaults cite these figures.

    python -m benchmarks.backbone_image_size --output benchmarks/results/backbones/image_size.json
    python -m benchmarks.backbone_image_size --sizes 64,96 --mobilenet-weights /path/to/no_top.h5 --output a.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from typing import Any

import numpy as np

from benchmarks.common import REPO, machine

DEFAULT_SIZES = "64,96,128"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backbone_image_size", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"input sides in pixels (default {DEFAULT_SIZES})")
    parser.add_argument(
        "--mobilenet-weights",
        default=None,
        help="MobileNetV2 no-top weights file; without it only EfficientNet-Lite0 (packaged weights) is probed",
    )
    parser.add_argument("--train", default=os.path.join(REPO, "data", "sample_catalog"))
    parser.add_argument("--test", default=os.path.join(REPO, "data", "heldout_catalog"))
    parser.add_argument("--output", required=True, help="JSON file to write")
    return parser


def read_folder_catalog(root: str) -> tuple[list[str], list[str]]:
    """Image paths and labels of a <root>/<label>/<image> tree."""
    paths = sorted(glob.glob(os.path.join(root, "*", "*")))
    return paths, [os.path.basename(os.path.dirname(path)) for path in paths]


def load_pixels(paths: list[str], size: int) -> np.ndarray:
    """RGB pixels in [0, 255] resized bilinearly, as the product's decode step hands them to models."""
    from PIL import Image

    return np.stack(
        [np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), np.float32) for path in paths]
    )


def probe(
    name: str, weights: str, size: int, train: tuple[list[str], list[str]], test: tuple[list[str], list[str]]
) -> dict[str, Any]:
    """Macro-F1 of a logistic regression on the frozen base's pooled features at one size."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    from models import build_model, efficientnet_lite0, mobilenet_v2

    model = build_model(name, num_classes=2, image_size=size, weights=weights)
    base = {"efficientnet_lite0": efficientnet_lite0, "mobilenet_v2": mobilenet_v2}[name].base_model(model)
    features_model = keras.Model(model.input, model.get_layer("gap").output)
    started = time.perf_counter()
    train_features = features_model.predict(load_pixels(train[0], size), batch_size=64, verbose=0)
    test_features = features_model.predict(load_pixels(test[0], size), batch_size=64, verbose=0)
    seconds = time.perf_counter() - started
    scaler = StandardScaler().fit(train_features)
    classifier = LogisticRegression(max_iter=3000, class_weight="balanced").fit(
        scaler.transform(train_features), train[1]
    )
    predicted = classifier.predict(scaler.transform(test_features))
    return {
        "model": name,
        "image_size": size,
        "final_map": int(base.output.shape[1]),
        "macro_f1": round(float(f1_score(test[1], predicted, average="macro")), 4),
        "accuracy": round(float(np.mean(np.asarray(test[1]) == predicted)), 4),
        "feature_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train, test = read_folder_catalog(args.train), read_folder_catalog(args.test)
    backbones = [("efficientnet_lite0", "imagenet")]
    if args.mobilenet_weights:
        backbones.append(("mobilenet_v2", args.mobilenet_weights))
    rows = []
    for size in (int(value) for value in args.sizes.split(",")):
        for name, weights in backbones:
            rows.append(probe(name, weights, size, train, test))
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "machine": machine(),
        "train_images": len(train[0]),
        "test_images": len(test[0]),
        # File names only: where a weights file sits on the measuring machine is not a result.
        "weights": {name: os.path.basename(weights) for name, weights in backbones},
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
