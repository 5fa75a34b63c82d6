"""The hand-written baseline: the single-process scoring loop a user writes without the product.

PIL decode and resize, batches of 32, Keras `predict_on_batch`, one Parquet file via pandas:
the loop the issue compares the product against. `--engine onnx --draft` gives the strongest
single-process loop we know of (5,000 600×600 JPEGs in 37 s here, against 80 s with Keras),
reported alongside so nobody mistakes "faster than a naive loop" for "faster than a good one".

    python -m benchmarks.handwritten --images DIR --model ARTIFACT_DIR --output predictions.parquet
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from typing import Any

import numpy as np


def score_folder(
    image_dir: str,
    model_dir: str,
    output_path: str,
    batch_size: int = 32,
    engine: str = "keras",
    draft: bool = False,
    threads: int = 2,
) -> dict[str, Any]:
    """Scores every `*.jpg` in `image_dir` in one process and writes one Parquet file.

    Timing starts before the model is loaded, like the product's, so both include model loading
    and listing the images but not interpreter start-up or imports.

    Returns:
        {"images", "seconds", "images_per_second", and where the time went}.
    """
    import pandas as pd
    from PIL import Image

    started = time.perf_counter()
    with open(os.path.join(model_dir, "model_card.json")) as handle:
        card = json.load(handle)
    size, class_names = card["input"]["image_size"], np.array(card["class_names"], dtype=object)
    if engine == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            os.path.join(model_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name
        predict = lambda pixels: session.run(None, {input_name: pixels})[0]  # noqa: E731
    else:
        import keras

        model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
        predict = lambda pixels: np.asarray(model.predict_on_batch(pixels))  # noqa: E731
    paths = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
    decode_seconds = predict_seconds = 0.0
    uris, indices, confidences, probabilities = [], [], [], []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        tick = time.perf_counter()
        pixels = []
        for path in chunk:
            with Image.open(path) as image:
                if draft:
                    image.draft("RGB", (size, size))
                pixels.append(np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)))
        batch = np.stack(pixels).astype(np.float32)
        tock = time.perf_counter()
        output = predict(batch)
        predict_seconds += time.perf_counter() - tock
        decode_seconds += tock - tick
        best = output.argmax(axis=1)
        uris += chunk
        indices += best.tolist()
        confidences += output[np.arange(len(chunk)), best].tolist()
        probabilities += output.tolist()
    tick = time.perf_counter()
    pd.DataFrame(
        {
            "image_uri": uris,
            "predicted_index": indices,
            "predicted_label": class_names[indices],
            "confidence": confidences,
            "probabilities": probabilities,
        }
    ).to_parquet(output_path)
    write_seconds = time.perf_counter() - tick
    seconds = time.perf_counter() - started
    return {
        "images": len(paths),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(paths) / seconds, 2) if seconds else None,
        "decode_seconds": round(decode_seconds, 3),
        "predict_seconds": round(predict_seconds, 3),
        "write_seconds": round(write_seconds, 3),
        "engine": engine,
        "draft": draft,
        "batch_size": batch_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handwritten", description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="folder of *.jpg files")
    parser.add_argument("--model", required=True, help="model artifact directory")
    parser.add_argument("--output", required=True, help="Parquet file to write")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--engine", choices=["keras", "onnx"], default="keras")
    parser.add_argument("--draft", action="store_true", help="JPEG draft-mode decoding")
    args = parser.parse_args(argv)
    result = score_folder(args.images, args.model, args.output, args.batch_size, args.engine, args.draft)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
