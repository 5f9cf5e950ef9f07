"""``logloss predict``: classify your own pictures of digits with a trained checkpoint.

Torch loads inside the handler, after argument checks.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from logloss.activations import softmax
from logloss.cli import CLIError, add_checkpoint_arguments, add_json_flag
from logloss.insight.explain import render_bars

if TYPE_CHECKING:
    from logloss.training.checkpoint import Checkpoint


def register(subparsers: Any) -> None:
    """Add ``logloss predict``."""
    predict = subparsers.add_parser(
        "predict",
        help="classify your own images of digits with a trained checkpoint",
        description="Each image is converted the way MNIST was made (grayscale, inverted when "
        "the background is light, the digit's bounding box scaled to 20x20 and centred by its "
        "centre of mass in 28x28), then classified.",
    )
    add_checkpoint_arguments(predict)
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument(
        "--device", default="cpu", help="device for inference: auto, cpu, cuda, mps (default: cpu)"
    )
    add_json_flag(predict, "print JSON instead of text")
    predict.set_defaults(handler=run_predict)


def predict_images(checkpoint: Checkpoint, paths: list[Path]) -> list[dict[str, Any]]:
    """Classify image files with a loaded checkpoint; one JSON-ready dict per file."""
    from logloss.data.preprocess import load_image, to_mnist  # Pillow: only for pictures

    pixels = np.stack([to_mnist(load_image(path)) for path in paths])  # (N, 28, 28) uint8
    expected = tuple(checkpoint.model.architecture.input_shape)
    if pixels.shape[1:] != expected:
        raise CLIError(
            f"this checkpoint takes {expected} images (dataset {checkpoint.config.dataset}); "
            "predict converts pictures to MNIST's 28x28"
        )
    logits = checkpoint.logits(pixels).astype(np.float64)  # (N, C)
    probabilities = softmax(logits, axis=-1)
    classes = checkpoint.classes
    results = []
    for path, z, p in zip(paths, logits, probabilities, strict=True):
        best = int(np.argmax(p))
        results.append(
            {
                "file": str(path),
                "predicted": best,
                "label": classes[best],
                "probability": float(p[best]),
                "probabilities": [float(v) for v in p],
                "logits": [float(v) for v in z],
            }
        )
    return results


def run_predict(args: argparse.Namespace) -> int:
    from logloss.training.checkpoint import load_checkpoint  # torch: after argument checks

    checkpoint = load_checkpoint(args.checkpoint, which=args.which, device=args.device)
    results = predict_images(checkpoint, list(args.images))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        p = result["probability"]
        print(f"{result['file']}: {result['label']} (p = {p:.4f}, -ln p = {-math.log(p):.4f})")
        print(
            render_bars(
                result["probabilities"],
                checkpoint.classes,
                marks={result["predicted"]: "predicted"},
            )
        )
    return 0
