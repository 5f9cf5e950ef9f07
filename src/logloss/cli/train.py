"""``logloss train``: parse, call :func:`logloss.training.train`, print its progress.

Torch and rich are imported inside the handler (after the options are checked) so that
``logloss --help`` and argument errors stay fast; :mod:`logloss.training.config` and
:mod:`logloss.training.launch` have no torch.

Under torchrun every process runs this command; rank 0 prints.  An error every rank meets alike
(options, a batch that does not split over the processes, a rank's missing data, which the
library passes to rank 0) is rank 0's one line; the other ranks exit with the same status,
silently.  A process that loses the others says so itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logloss.cli import CLIError, add_json_flag, print_json
from logloss.cli.data import add_data_arguments
from logloss.data.render import image_to_text
from logloss.insight.explain import explain
from logloss.training.config import (
    LOSSES,
    OPTIMIZERS,
    PRESETS,
    SCHEDULES,
    TrainConfig,
    parse_validation_size,
)
from logloss.training.launch import (
    BACKENDS,
    DEFAULT_TIMEOUT,
    Launch,
    check_batch_split,
    pick_backend,
)

if TYPE_CHECKING:
    from logloss.training.history import EpochRecord, History, SampleView

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
    try:
        return parse_validation_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _default_help(field: str) -> str:
    """ "default: X; best preset: Y" for the help of option ``field``."""
    default = getattr(TrainConfig(), field)
    best = PRESETS["best"].get(field)
    text = f"default: {','.join(map(str, default)) if isinstance(default, tuple) else default}"
    if best is not None:
        text += f"; best preset: {','.join(map(str, best)) if isinstance(best, tuple) else best}"
    return text


def register(subparsers: Any) -> None:
    """Add ``logloss train``."""

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
    _add_training_options(train)
    _add_run_options(train)
    add_json_flag(train, "print a JSON summary on stdout")
    train.set_defaults(handler=run_train)


def _add_training_options(train: argparse.ArgumentParser) -> None:
    """The options of :class:`~logloss.training.config.TrainConfig`, defaults from the preset."""
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


def _add_run_options(train: argparse.ArgumentParser) -> None:
    """When to stop, where to run, where to write, whether to resume."""
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
    train.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="under torchrun: the process group's backend (default: gloo on the CPU, nccl on CUDA)",
    )
    train.add_argument(
        "--dist-timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="under torchrun: seconds a process waits for the others (to meet, and at every "
        f"exchange) before it fails (default: {DEFAULT_TIMEOUT:g})",
    )


def _seconds(text: str) -> float:
    """argparse type of --dist-timeout: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """``(TrainConfig, explicit options)`` from the parsed command line."""
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


def _resume_config(args: argparse.Namespace, given: dict[str, Any]) -> TrainConfig:
    """The saved run's options with the given ones on top (train() refuses any change)."""
    if args.out is None:
        raise CLIError("--resume needs --out DIR: the folder of the run to continue")
    if args.preset != "default":
        raise CLIError("--resume continues with the saved options: drop --preset")
    from logloss.training.run_folder import read_metadata  # torch: after the option checks

    saved = read_metadata(args.out)["config"]
    return TrainConfig.from_dict({**saved, **given})


def run_train(args: argparse.Namespace) -> int:
    try:
        launch = Launch.from_environment()
    except ValueError as error:
        raise CLIError(str(error)) from None
    try:
        return _train(args, launch)
    except (CLIError, ValueError):
        if launch.is_main:
            raise
        return 2  # rank 0 prints the error: the same one, or this rank's, passed to it


def _train(args: argparse.Namespace, launch: Launch) -> int:
    """Check what concerns the processes before loading torch; train; print (rank 0)."""
    config, given = config_from_args(args)
    if args.resume:
        config = _resume_config(args, given)
    check_batch_split(config.batch_size, launch.world_size)
    if args.backend is not None and config.device != "auto":
        pick_backend(args.backend, config.device.split(":", 1)[0])
    from logloss.training.ddp import ProcessGroupError  # torch: after the option checks
    from logloss.training.loop import train  # torch: after the option checks

    out_dir = args.out or RUNS_DIR / f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    reporter = RichReporter(stream=sys.stderr if args.json else sys.stdout)
    started = time.perf_counter()
    try:
        history = train(
            config,
            out_dir=out_dir,
            data_dir=args.data_dir,
            resume=args.resume,
            reporter=reporter,
            backend=args.backend,
            timeout=args.dist_timeout,
        )
    except ProcessGroupError as error:
        print(f"logloss: error: {error}{_resume_hint(out_dir)}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    if args.json and launch.is_main:
        print_json(history_summary(history, wall))
    return 130 if history.status == "interrupted" else 0


def _resume_hint(out_dir: Path) -> str:
    """How to continue a run whose processes lost each other, if it saved anything."""
    from logloss.training.run_folder import holds_run  # torch: loaded by now anyway

    if not holds_run(out_dir):
        return ""
    return (
        f"; {out_dir} keeps the state saved at the last epoch's end (or at the start): continue "
        f"with: torchrun ... -m logloss train --out {out_dir} --resume"
    )


def history_summary(history: History, wall_seconds: float) -> dict[str, Any]:
    """JSON-ready outcome of a run."""
    return {
        "status": history.status,
        "out_dir": str(history.out_dir),
        "device": history.device,
        "config": history.config.to_dict(),
        "epochs": [dataclasses.asdict(r) for r in history.records],
        "best_epoch": history.best_epoch,
        "initial_loss": history.initial_loss,
        "initial_accuracy": history.initial_accuracy,
        "test": history.test,
        "train_seconds": history.elapsed,
        "wall_seconds": wall_seconds,
    }


class RichReporter:
    """Prints a run: device, the before/after sample, a live bar per epoch, summary lines."""

    def __init__(self, stream: Any = None) -> None:
        from rich.console import Console  # rich: only when training prints

        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self.progress: Any = None
        self.task: Any = None
        self.steps = 0
        self.epochs = 0
        self.processes = 1

    def on_start(self, info: dict[str, Any]) -> None:
        arch = info["architecture"]
        widths = "-".join(map(str, [arch.input_size, *arch.hidden, arch.num_classes]))
        processes = info["processes"]
        self.processes = processes["world_size"]
        threads = f"{info['threads']} CPU threads"
        if processes["backend"] is not None:
            plural = "s" if info["threads"] > 1 else ""
            threads = (
                f"{info['threads']} CPU thread{plural} in each of {self.processes} processes, "
                f"{processes['backend']}"
            )
        self.console.print(
            f"device: {info['device']} ({threads}) · network {widths} "
            f"({info['parameters']:,} parameters) · train {info['train']:,} / validation "
            f"{info['validation']:,} / test {info['test']:,} · run folder {info['out_dir']}"
        )
        if info["resumed_at"] is not None:
            epoch, step = info["resumed_at"]
            self.console.print(f"resuming at epoch {epoch}, step {step}")

    def on_sample(self, stage: str, view: SampleView) -> None:
        """The sample's pixels as text, then the article's walkthrough of what the model says."""
        title = "Before training" if stage == "before" else "After training"
        self.console.print(f"\n[bold]{title}[/bold]: validation sample 0")
        self.console.print(image_to_text(view.image), markup=False)
        explanation = explain(view.logits, view.target)
        self.console.print(explanation.render() + "\n", markup=False)

    def on_warning(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}")

    def on_epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        from rich.progress import (  # rich: only when training prints
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
        )

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

    def on_epoch_end(self, record: EpochRecord, is_best: bool) -> None:
        self._stop_bar()
        self.console.print(
            f"epoch {record.epoch}/{self.epochs}: train loss {record.train_loss:.4f} accuracy "
            f"{record.train_accuracy:.2%} · validation loss {record.val_loss:.4f} accuracy "
            f"{record.val_accuracy:.2%}{' (best)' if is_best else ''} · lr {record.lr:.2e} · "
            f"{record.seconds:.1f} s, {record.samples_per_second:,.0f} samples/s"
        )

    def on_end(self, history: History) -> None:
        self._stop_bar()
        out = history.out_dir
        if history.status == "interrupted":
            command = f"logloss train --out {out} --resume"
            if self.processes > 1:  # any number of processes that divides the batch size will do
                command = f"torchrun --nproc-per-node {self.processes} -m {command}"
            self.console.print(f"interrupted: state saved in {out}; continue with: {command}")
            return
        test, epochs = history.test, len(history.records)
        self.console.print(
            f"{history.status.replace('_', ' ')} in {history.elapsed:.1f} s of training. Last "
            f"epoch ({epochs}): test accuracy {test['accuracy']:.2%} (mean loss "
            f"{test['loss']:.4f}). Best validation epoch ({history.best_epoch}): test accuracy "
            f"{test['best_accuracy']:.2%} (mean loss {test['best_loss']:.4f}); evaluate, "
            f"explain, report, predict and serve use these best weights (--which last for the "
            f"last). Checkpoints in {out}"
        )
