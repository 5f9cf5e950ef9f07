"""``logloss predict``: classify your own pictures of digits with a trained checkpoint.

Each picture is read and converted (:mod:`logloss.data.preprocess`, Pillow and NumPy) before
torch loads; a picture that cannot be used is reported on its own line and the others are still
classified (exit status 2 when any failed).  Torch loads only when there is something to classify.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from logloss.activations import softmax
from logloss.cli import (
    DEVICE_CHOICES,
    CLIError,
    add_checkpoint_arguments,
    add_json_flag,
    check_run_folder,
    print_json,
)
from logloss.insight.explain import render_bars

if TYPE_CHECKING:
    from logloss.training.checkpoint import Checkpoint

PNG_SCALE = 8  # --png writes each 28x28 input 8x enlarged (224x224), one block per pixel


def register(subparsers: Any) -> None:
    """Add ``logloss predict``."""
    predict = subparsers.add_parser(
        "predict",
        help="classify your own images of digits with a trained checkpoint",
        description="Each image is converted the way MNIST was made (grayscale, the paper's "
        "uneven lighting removed, inverted when the ink is dark, the digit's bounding box scaled "
        "to 20x20 and centred by its centre of mass in 28x28), then classified.  A file that "
        "cannot be used gets an error line; the others are still classified (exit status 2 "
        "when any failed).",
    )
    add_checkpoint_arguments(predict)
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="cpu",
        help="device for inference: auto, cpu, cuda, mps (default: cpu)",
    )
    predict.add_argument(
        "--png",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"also write what the model saw: each converted 28x28 image, {PNG_SCALE}x enlarged, "
        "as DIR/K-NAME.png (K: the image's position among the arguments, from 1)",
    )
    add_json_flag(predict, "print JSON instead of text (each image converted, as 28x28 rows)")
    predict.set_defaults(handler=run_predict)


@dataclass(frozen=True)
class Prepared:
    """One IMAGE argument: its converted 28x28 uint8 pixels, or why it cannot be used."""

    path: Path
    pixels: np.ndarray | None  # (28, 28) uint8
    error: str | None


def prepare(path: Path) -> Prepared:
    """Read and convert one picture; a ValueError becomes the error of this file alone."""
    from logloss.data.preprocess import load_image, to_mnist  # Pillow: only for pictures

    try:
        image = load_image(path)  # its errors name the file
    except ValueError as error:
        return Prepared(path, None, str(error))
    try:
        return Prepared(path, to_mnist(image), None)
    except ValueError as error:
        return Prepared(path, None, f"{path}: {error}")


def png_path(directory: Path, position: int, path: Path) -> Path:
    """``DIR/K-NAME.png`` for the ``position``-th (from 1) IMAGE argument: unique per argument.

    >>> png_path(Path("seen"), 2, Path("photos/seven.jpg")).as_posix()
    'seen/2-seven.png'
    """
    return directory / f"{position}-{path.stem}.png"


def classify(checkpoint: Checkpoint, pixels: np.ndarray) -> list[dict[str, Any]]:
    """Class, probabilities and logits of converted images (N, 28, 28) uint8, one dict each."""
    expected = tuple(checkpoint.model.architecture.input_shape)
    if pixels.shape[1:] != expected:
        raise CLIError(
            f"this checkpoint takes {expected} images (dataset {checkpoint.config.dataset}); "
            "predict converts pictures to MNIST's 28x28"
        )
    logits = checkpoint.logits(pixels).astype(np.float64)  # (N, C)
    probabilities = softmax(logits, axis=-1)  # (N, C)
    classes = checkpoint.classes
    results = []
    for z, p in zip(logits, probabilities, strict=True):
        best = int(np.argmax(p))
        results.append(
            {
                "predicted": best,
                "label": classes[best],
                "probability": float(p[best]),
                "probabilities": [float(v) for v in p],
                "logits": [float(v) for v in z],
            }
        )
    return results


def run_predict(args: argparse.Namespace) -> int:
    check_run_folder(args.checkpoint)
    if args.png is not None and args.png.exists() and not args.png.is_dir():
        raise CLIError(f"--png {args.png} is a file; give a folder (it is created if missing)")
    prepared = [prepare(path) for path in args.images]
    good = [k for k, item in enumerate(prepared) if item.error is None]  # positions, from 0
    pngs: dict[int, Path] = {}
    if args.png is not None and good:
        from logloss.data.render import save_png  # Pillow: only when asked for

        args.png.mkdir(parents=True, exist_ok=True)
        for k in good:
            pngs[k] = png_path(args.png, k + 1, prepared[k].path)
            save_png(pngs[k], prepared[k].pixels, scale=PNG_SCALE)
    results: dict[int, dict[str, Any]] = {}
    classes: list[str] = []
    if good:
        from logloss.training.checkpoint import load_checkpoint  # torch: after the checks

        checkpoint = load_checkpoint(args.checkpoint, which=args.which, device=args.device)
        pixels = np.stack([prepared[k].pixels for k in good])  # (N, 28, 28) uint8
        results = dict(zip(good, classify(checkpoint, pixels), strict=True))
        classes = checkpoint.classes
    for item in prepared:
        if item.error is not None:
            print(f"logloss: error: {item.error}", file=sys.stderr)
    if args.json:
        print_json([_record(item, results.get(k), pngs.get(k)) for k, item in enumerate(prepared)])
    else:
        for k in good:
            _print_result(prepared[k].path, results[k], classes, pngs.get(k))
    return 2 if len(good) < len(prepared) else 0


def _record(item: Prepared, result: dict[str, Any] | None, png: Path | None) -> dict[str, Any]:
    """The JSON record of one IMAGE argument: its result and converted image, or its error."""
    if result is None or item.pixels is None:
        return {"file": str(item.path), "error": item.error}
    png_name = None if png is None else str(png)
    return {"file": str(item.path), **result, "image": item.pixels.tolist(), "png": png_name}


def _print_result(path: Path, result: dict[str, Any], classes: list[str], png: Path | None) -> None:
    """The text report of one classified picture: class, p, -ln p, the bars, the PNG written."""
    p = result["probability"]
    print(f"{path}: {result['label']} (p = {p:.4f}, -ln p = {-math.log(p):.4f})")
    print(render_bars(result["probabilities"], classes, marks={result["predicted"]: "predicted"}))
    if png is not None:
        print(f"wrote {png} (what the model saw)")
