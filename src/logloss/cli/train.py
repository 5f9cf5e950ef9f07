"""``logloss train`` and ``logloss predict``: parse, call :mod:`logloss.training`, print.

Heavy imports (torch, rich) happen inside the handlers so that ``logloss --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from logloss.cli import CLIError, add_checkpoint_arguments, add_json_flag

RUNS_DIR = Path("runs")

# (flag, TrainConfig field, type, help); every default comes from the chosen preset.
_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--hidden", "hidden", str, "hidden layer widths, comma-separated, e.g. 1024,1024"),
    ("--epochs", "epochs", int, "passes over the training set"),
    ("--batch-size", "batch_size", int, "samples per step"),
    ("--lr", "lr", float, "peak learning rate (the one-cycle maximum)"),
    ("--weight-decay", "weight_decay", float, "decoupled (AdamW) or L2 (SGD) weight decay"),
    ("--label-smoothing", "label_smoothing", float, "mix targets with uniform: e in [0, 1)"),
    ("--dropout", "dropout", float, "dropout probability after each hidden layer"),
    ("--seed", "seed", int, "seed for initial weights, split, shuffles and augmentation"),
)


def _validation_size(text: str) -> int | float:
    """argparse type of --validation-size: a count (5000) or a fraction (0.1)."""
    from logloss.train_config import parse_validation_size

    try:
        return parse_validation_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _default_help(field: str) -> str:
    from logloss.train_config import PRESETS, TrainConfig

    default = getattr(TrainConfig(), field)
    best = PRESETS["best"].get(field)
    text = f"default: {','.join(map(str, default)) if isinstance(default, tuple) else default}"
    if best is not None:
        text += f"; best preset: {','.join(map(str, best)) if isinstance(best, tuple) else best}"
    return text


def register(subparsers: Any) -> None:
    """Add ``logloss train`` and ``logloss predict``."""
    from logloss.cli.data import add_data_arguments
    from logloss.train_config import LOSSES, OPTIMIZERS, PRESETS, SCHEDULES

    train = subparsers.add_parser(
        "train",
        help="train a dense network (MNIST by default), with checkpoints and the before/after view",
        description="Train a dense network with the cross-entropy loss. Without options it "
        "reaches about 98% test accuracy on MNIST in seconds on a CPU; --preset best trains "
        "longer with augmentation and dropout for about 99.2%. Options given explicitly "
        "override the preset.",
    )
    train.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="default",
        help="starting set of options (default: default)",
    )
    add_data_arguments(train)
    train.set_defaults(dataset=None)  # None = the preset's (mnist); lets --resume spot changes
    for flag, field, kind, text in _OPTIONS:
        train.add_argument(flag, type=kind, default=None, help=f"{text} ({_default_help(field)})")
    train.add_argument(
        "--validation-size",
        type=_validation_size,
        default=None,
        metavar="N|F",
        help="training samples held out for validation: a count such as 5000 or a fraction such "
        "as 0.1 (default: 1/12 of the training set, 5000 for MNIST and 120 for digits)",
    )
    train.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=None,
        help=f"AdamW or SGD with momentum ({_default_help('optimizer')})",
    )
    train.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=None,
        help=f"learning-rate schedule, per step ({_default_help('schedule')})",
    )
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random rotation, scale, shift and elastic distortion of each training image, on "
        f"the device ({_default_help('augment')})",
    )
    train.add_argument(
        "--loss",
        choices=LOSSES,
        default=None,
        help="cross-entropy implementation: logloss (this package), torch, or fused "
        f"({_default_help('loss')})",
    )
    train.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        metavar="A",
        help="stop after the first epoch whose validation accuracy reaches A (0.98 or 98 for "
        "98%%; default: train all epochs)",
    )
    train.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        default=None,
        help="auto picks CUDA, then Apple MPS, then the CPU (default: auto)",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run folder for checkpoints and metrics "
        f"(default: {RUNS_DIR}/DATASET-YYYYmmdd-HHMMSS)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the interrupted run in --out DIR exactly where it stopped",
    )
    add_json_flag(train, "print a JSON summary on stdout")
    train.set_defaults(handler=run_train)

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


# --- train ------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """``(TrainConfig, explicit options)`` from the parsed command line."""
    from logloss.train_config import TrainConfig

    given: dict[str, Any] = {}
    for _, field, _, _ in _OPTIONS:
        if getattr(args, field) is not None:
            given[field] = getattr(args, field)
    extra = ("validation_size", "optimizer", "schedule", "augment", "loss", "device", "dataset")
    for field in extra:
        if getattr(args, field, None) is not None:
            given[field] = getattr(args, field)
    if args.target_accuracy is not None:
        value = args.target_accuracy
        if not 0 < value <= 100:
            raise CLIError(f"--target-accuracy must be in (0, 1] or (1, 100] (%), got {value}")
        given["target_accuracy"] = value / 100 if value > 1 else value
    try:
        return TrainConfig.preset(args.preset, **given), given
    except ValueError as error:
        raise CLIError(_with_option_names(str(error))) from None


def _with_option_names(message: str) -> str:
    """Name the command-line option, not the TrainConfig field: "batch_size must ..." ->
    "--batch-size must ...", as the user typed it."""
    field, _, rest = message.partition(" ")
    if rest and field.isidentifier() and field.islower():
        return f"--{field.replace('_', '-')} {rest}"
    return message


def _resume_config(args: argparse.Namespace, given: dict[str, Any]) -> Any:
    """The saved run's options with the given ones on top (train() refuses any change)."""
    from logloss import checkpoint as ckpt
    from logloss.train_config import TrainConfig

    if args.out is None:
        raise CLIError("--resume needs --out DIR: the folder of the run to continue")
    if args.preset != "default":
        raise CLIError("--resume continues with the saved options: drop --preset")
    saved = ckpt.read_metadata(args.out)["config"]
    return TrainConfig.from_dict({**saved, **given})


def run_train(args: argparse.Namespace) -> int:
    from logloss.training import train

    config, given = config_from_args(args)
    if args.resume:
        config = _resume_config(args, given)
    out_dir = args.out or RUNS_DIR / f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    reporter = RichReporter(stream=sys.stderr if args.json else sys.stdout)
    started = time.perf_counter()
    history = train(
        config, out_dir=out_dir, data_dir=args.data_dir, resume=args.resume, reporter=reporter
    )
    wall = time.perf_counter() - started
    if args.json:
        print(json.dumps(history_summary(history, wall), indent=2))
    return 130 if history.status == "interrupted" else 0


def history_summary(history: Any, wall_seconds: float) -> dict[str, Any]:
    """JSON-ready outcome of a run."""
    return {
        "status": history.status,
        "out_dir": str(history.out_dir),
        "device": history.device,
        "config": history.config.to_dict(),
        "epochs": [dataclasses.asdict(r) for r in history.records],
        "best_epoch": history.best_epoch,
        "initial_loss": history.initial_loss,
        "test": history.test,
        "train_seconds": history.elapsed,
        "wall_seconds": wall_seconds,
    }


class RichReporter:
    """Prints a run: device, the before/after sample, a live bar per epoch, summary lines."""

    def __init__(self, stream: Any = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self.progress: Any = None
        self.task: Any = None
        self.steps = 0
        self.epochs = 0

    def on_start(self, info: dict[str, Any]) -> None:
        arch = info["architecture"]
        widths = "-".join(map(str, [arch.input_size, *arch.hidden, arch.num_classes]))
        self.console.print(
            f"device: {info['device']} ({info['threads']} CPU threads) · network {widths} "
            f"({info['parameters']:,} parameters) · train {info['train']:,} / validation "
            f"{info['validation']:,} / test {info['test']:,} · run folder {info['out_dir']}"
        )
        if info["resumed_at"] is not None:
            epoch, step = info["resumed_at"]
            self.console.print(f"resuming at epoch {epoch}, step {step}")

    def on_sample(self, stage: str, explanation: Any, image: Any) -> None:
        """The sample's pixels as text, then the article's walkthrough of what the model says."""
        from logloss.data.render import image_to_text

        title = "Before training" if stage == "before" else "After training"
        self.console.print(f"\n[bold]{title}[/bold]: validation sample 0")
        self.console.print(image_to_text(image), markup=False)
        self.console.print(explanation.render() + "\n", markup=False)

    def on_warning(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}")

    def on_epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.steps, self.epochs = steps, epochs
        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,  # no bar in logs and pipes: summaries only
        )
        self.task = self.progress.add_task("train", total=steps, completed=first_step, status="")
        self.progress.start()

    def on_progress(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        status = f"loss {loss:.4f} · accuracy {accuracy:.2%} · {samples_per_s:,.0f} samples/s"
        self.progress.update(self.task, completed=step, status=status)

    def _stop_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_epoch_end(self, record: Any, is_best: bool) -> None:
        self._stop_bar()
        self.console.print(
            f"epoch {record.epoch}/{self.epochs}: train loss {record.train_loss:.4f} accuracy "
            f"{record.train_accuracy:.2%} · validation loss {record.val_loss:.4f} accuracy "
            f"{record.val_accuracy:.2%}{' (best)' if is_best else ''} · lr {record.lr:.2e} · "
            f"{record.seconds:.1f} s, {record.samples_per_second:,.0f} samples/s"
        )

    def on_end(self, history: Any) -> None:
        self._stop_bar()
        out = history.out_dir
        if history.status == "interrupted":
            self.console.print(
                f"interrupted: state saved in {out}; continue with: "
                f"logloss train --out {out} --resume"
            )
            return
        test = history.test
        self.console.print(
            f"{history.status.replace('_', ' ')} in {history.elapsed:.1f} s of training: test "
            f"accuracy {test['accuracy']:.2%} (mean loss {test['loss']:.4f}); best epoch "
            f"{history.best_epoch}: test accuracy {test['best_accuracy']:.2%}. Checkpoints in {out}"
        )


# --- predict ----------------------------------------------------------------------------------


def predict_images(checkpoint: Any, paths: list[Path]) -> list[dict[str, Any]]:
    """Classify image files with a loaded checkpoint; one JSON-ready dict per file."""
    import numpy as np

    from logloss.activations import softmax
    from logloss.preprocess import load_image, to_mnist

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
    from logloss.checkpoint import load_checkpoint
    from logloss.explain import render_bars

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
