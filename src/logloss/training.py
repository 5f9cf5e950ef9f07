"""Train the article's dense network on MNIST: fast, reproducible, resumable.

Speed comes from doing nothing twice: the whole dataset is normalised once and kept as one
tensor on the device; a batch is a slice of a seeded permutation (no DataLoader, no per-sample
Python); gradients are dropped with ``set_to_none``; running loss and accuracy stay on the device
and are read only when the progress bar is redrawn.  With the default options (784-256-256-10,
AdamW, batch 256, a one-cycle schedule, 5 epochs) a 2-core CPU reaches about 98.2% test accuracy
in a few seconds.

Reproducibility: the model's initial weights and dropout come from ``torch.manual_seed(seed)``;
the shuffles and augmentations from a CPU ``torch.Generator`` seeded with ``seed`` (the same
order on every device).  Resuming restores all of them, so an interrupted run continues exactly
where it stopped.

``train`` reads top to bottom: settings, device, data, model, the initial view of one sample,
the loop, checkpoints, the final view.  It prints nothing itself; a :class:`Reporter` (the CLI's
shows rich progress bars) is told what happens.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from logloss import checkpoint as ckpt
from logloss.checkpoint import Normalization
from logloss.devices import configure_threads, pick_device, synchronize
from logloss.model import Architecture, DenseNet
from logloss.train_config import (
    LOSSES,
    OPTIMIZERS,
    PRESETS,
    SCHEDULES,
    TrainConfig,
    check_choice,
    parse_hidden,
)

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "PRESETS",
    "SCHEDULES",
    "EpochRecord",
    "History",
    "Reporter",
    "Score",
    "TrainConfig",
    "augment",
    "evaluate_model",
    "load_splits",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "parse_hidden",
    "pixel_normalization",
    "train",
]

EVAL_BATCH = 4096  # inference batch: big enough to be fast, small enough for any device


# --- data -------------------------------------------------------------------------------------


@dataclass
class Splits:
    """Train/validation/test inputs, normalised once, flattened (N, H*W), on the device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    normalization: Normalization


def load_splits(
    config: TrainConfig,
    device: torch.device,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> Splits:
    """Load the dataset, carve the validation set (seeded), normalise once, move to ``device``.

    Normalisation: ``x = (pixel / 255 - mean) / std`` with the mean and standard deviation of
    the training part's pixels (see :func:`pixel_normalization`), saved with the checkpoint.
    """
    from logloss.data import get_dataset, load_dataset, split_train_validation

    info = get_dataset(config.dataset)
    images, labels = load_dataset(config.dataset, "train", data_dir=data_dir, download=download)
    test_images, test_labels = load_dataset(
        config.dataset, "test", data_dir=data_dir, download=download
    )
    train_images, train_labels, val_images, val_labels = split_train_validation(
        images, labels, validation_size=config.validation_size, seed=config.seed
    )
    normalization = pixel_normalization(train_images)

    def inputs(x: np.ndarray) -> torch.Tensor:  # uint8 (N, H, W) -> float32 (N, H*W)
        flat = torch.from_numpy(np.ascontiguousarray(x).reshape(len(x), -1))
        return normalization.apply(flat.to(device))

    def targets(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64)).to(device)

    return Splits(
        train_x=inputs(train_images),
        train_y=targets(train_labels),
        val_x=inputs(val_images),
        val_y=targets(val_labels),
        test_x=inputs(test_images),
        test_y=targets(test_labels),
        input_shape=tuple(images.shape[1:]),
        classes=tuple(str(c) for c in info.classes),
        normalization=normalization,
    )


def pixel_normalization(images: np.ndarray) -> Normalization:
    """Mean and (population) standard deviation of uint8 pixels scaled to [0, 1], in float64.

    From the 256-bin histogram ``n_v`` (no float copy of the images):
    ``mean = sum_v n_v (v / 255) / N``, ``std = sqrt(sum_v n_v (v / 255 - mean)^2 / N)``, the
    same as ``np.mean``/``np.std`` of ``images / 255`` up to float64 rounding.

    Args:
        images: uint8 pixels, any shape, at least one.

    >>> pixel_normalization(np.array([[0, 255], [255, 255]], dtype=np.uint8))
    Normalization(mean=0.75, std=0.4330127018922193, divide_by=255.0)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.size == 0:
        raise ValueError(
            f"need uint8 pixels (at least one) for the normalisation, got {images.dtype} "
            f"of shape {images.shape}"
        )
    # (256,) exact counts; torch's bincount reads uint8 directly (NumPy's first widens to int64)
    pixels = torch.from_numpy(np.ascontiguousarray(images)).view(-1)
    counts = torch.bincount(pixels, minlength=256).double().numpy()
    values = np.arange(256, dtype=np.float64) / 255.0
    n = float(images.size)
    mean = float(counts @ values) / n
    std = math.sqrt(float(counts @ np.square(values - mean)) / n)
    return Normalization(mean=mean, std=std)


def augment(
    x: torch.Tensor,
    input_shape: tuple[int, int],
    background: float,
    config: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Distort a batch of images on the device: random affine map plus an elastic warp.

    Each sample gets a rotation in ±rotation degrees, a scale in 1 ± scale, a shift in ±shift
    pixels, and a smooth displacement field (a 4x4 grid of N(0, elastic²) pixel offsets,
    bicubically upsampled) in the spirit of Simard et al. (2003); pixels are resampled
    bilinearly, with the background filling what moves in from outside.  The random numbers
    come from ``generator`` on the CPU, so every device sees the same distortions.

    Args:
        x: normalised inputs (B, H*W).
        input_shape: (H, W).
        background: the normalised value of a blank pixel, ``-mean / std``.

    Returns:
        distorted inputs (B, H*W).
    """
    b = len(x)
    height, width = input_shape
    # (B, 4 + 32) uniform numbers in one call keeps the generator's use easy to follow.
    u = torch.rand(b, 4, generator=generator) * 2 - 1
    angle = u[:, 0] * math.radians(config.augment_rotation)
    scale = 1 + u[:, 1] * config.augment_scale
    shift = u[:, 2:4] * config.augment_shift
    elastic = torch.randn(b, 2, 4, 4, generator=generator) * config.augment_elastic
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Grid coordinates span [-1, 1] over the image: one pixel is 2 / size.
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0] * (2 / width)], 1),
            torch.stack([sin, cos, shift[:, 1] * (2 / height)], 1),
        ],
        1,
    ).to(x.device)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, height, width], align_corners=False)  # (B, H, W, 2)
    field = elastic.to(x.device) * torch.tensor([2 / width, 2 / height], device=x.device).view(
        1, 2, 1, 1
    )
    field = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)
    grid = grid + field.permute(0, 2, 3, 1)
    # Resample around the background so that zero padding means "blank paper".
    images = x.view(b, 1, height, width) - background
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.view(b, -1) + background


# --- loss and evaluation ----------------------------------------------------------------------


LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFunction:
    """The training loss ``(logits (B, C), target (B,)) -> mean cross-entropy``.

    ``logloss``: this package's :func:`logloss.losses.cross_entropy`; ``torch``:
    ``torch.nn.functional.cross_entropy``; ``fused``: :func:`logloss.fused.cross_entropy`.
    All three compute ``mean(logsumexp(z) - z[y])`` (with label smoothing if asked).
    """
    check_choice("loss", name, LOSSES)
    if name == "torch":
        function = F.cross_entropy
    elif name == "logloss":
        from logloss.losses import cross_entropy as function
    else:
        try:
            from logloss.fused import cross_entropy as function
        except ImportError as error:
            raise ValueError(
                f"--loss fused needs logloss.fused, which could not be imported ({error}); "
                "use --loss logloss or --loss torch"
            ) from None

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return function(logits, target, label_smoothing=label_smoothing)

    return loss


class Score(NamedTuple):
    """Accuracy (fraction correct) and mean cross-entropy in nats."""

    accuracy: float
    loss: float


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = EVAL_BATCH,
) -> Score:
    """Accuracy and mean cross-entropy of ``model`` on normalised inputs, in eval mode.

    ``loss = (1/N) sum_i (logsumexp(z_i) - z_i[y_i])``, summed per batch in float64 and divided
    by N once (as pytorch/examples does), so the batch size does not change the result.

    Args:
        model: returns logits (B, C).
        inputs: normalised inputs (N, ...) on the model's device.
        labels: int64 class indices (N,) on the same device.

    Returns:
        :class:`Score` ``(accuracy, loss)``; a plain tuple unpacks it.

    >>> model = nn.Linear(2, 2, bias=False)
    >>> _ = model.weight.data.copy_(torch.eye(2))
    >>> accuracy, loss = evaluate_model(model, torch.eye(2)[[0, 0]], torch.tensor([0, 1]))
    >>> accuracy, round(loss, 6)  # (ln(1 + e^-1) + ln(1 + e)) / 2
    (0.5, 0.813262)
    """
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need as many labels as inputs (and at least one): {len(inputs)} vs {len(labels)}"
        )
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(inputs[start : start + batch_size]).float()
        target = labels[start : start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").double().cpu()
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    return Score(correct / len(labels), float(total_loss) / len(labels))


# --- optimiser and schedule -------------------------------------------------------------------


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with Nesterov momentum."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step learning-rate schedule: one-cycle (warm up to lr, anneal), cosine, or none."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


# --- what a run reports -----------------------------------------------------------------------


@dataclass
class EpochRecord:
    """One line of ``metrics.jsonl``."""

    epoch: int  # 1-based
    train_loss: float  # running mean over the epoch's batches (augmented, dropout on)
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float  # learning rate at the end of the epoch
    seconds: float  # this epoch's training time (evaluation excluded)
    elapsed: float  # training time since the start of the run
    samples_per_second: float


@dataclass
class History:
    """What ``train`` returns: per-epoch records and the run's outcome."""

    config: TrainConfig
    out_dir: Path
    records: list[EpochRecord] = field(default_factory=list)
    status: str = "running"  # finished | target_reached | interrupted
    initial_loss: float = math.nan
    best_epoch: int | None = None
    test: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def best_val_accuracy(self) -> float:
        return max((r.val_accuracy for r in self.records), default=math.nan)

    @property
    def elapsed(self) -> float:
        return self.records[-1].elapsed if self.records else 0.0


class Reporter:
    """Receives a run's events; this base class ignores them (the CLI prints them)."""

    def on_start(self, info: Mapping[str, Any]) -> None:
        """Device, dataset sizes, parameter count, output folder, resume point."""

    def on_sample(self, stage: str, explanation: Any, image: np.ndarray) -> None:
        """``stage`` is ``"before"`` or ``"after"``; ``explanation`` a logloss Explanation."""

    def on_warning(self, message: str) -> None:
        """Something the user should know (e.g. an initial loss far from ln C)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        """An epoch (1-based) of ``steps`` batches begins, at ``first_step`` when resumed."""

    def on_progress(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        """Running train loss and accuracy after ``step`` batches of the current epoch."""

    def on_epoch_end(self, record: EpochRecord, is_best: bool) -> None:
        """An epoch finished and was checkpointed."""

    def on_end(self, history: History) -> None:
        """Training stopped (finished, reached the target, or interrupted and saved)."""


# --- Ctrl-C -----------------------------------------------------------------------------------


class StopFlag:
    """Set by the first Ctrl-C (the loop saves and returns); a second Ctrl-C interrupts."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextmanager
def stop_on_interrupt() -> Iterator[StopFlag]:
    """Turn SIGINT into a flag that the training loop checks between steps.

    A step is never cut in half (which could leave the optimiser half-updated); the loop saves
    a consistent state at the next step boundary.  Only the main thread can install handlers;
    elsewhere the flag simply never gets set by a signal.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the run ----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of what produced a checkpoint."""
    import safetensors

    from logloss import __version__

    return {
        "logloss": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _view_sample(model: nn.Module, splits: Splits, index: int = 0) -> Any:
    """The article's view of one validation sample: logits, softmax, loss (eval mode)."""
    from logloss.explain import explain

    with torch.no_grad():
        was_training = model.training
        model.eval()
        logits = model(splits.val_x[index : index + 1]).double().cpu().numpy()[0]
        model.train(was_training)
    return explain(logits, int(splits.val_y[index]))


def _sample_image(splits: Splits, index: int = 0) -> np.ndarray:
    """The sample's uint8 pixels, undoing the normalisation (for display)."""
    n = splits.normalization
    x = splits.val_x[index].cpu().double() * n.std + n.mean
    return (
        np.clip(np.round(x.numpy() * n.divide_by), 0, 255)
        .astype(np.uint8)
        .reshape(splits.input_shape)
    )


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(
    state: Mapping[str, torch.Tensor], generator: torch.Generator, device: torch.device
) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_resumable(saved: Mapping[str, Any], config: TrainConfig, out_dir: Path) -> None:
    """Refuse to resume with options that differ from the saved run's (except the device)."""
    stored = TrainConfig.from_dict(saved)
    differ = [
        f"{f.name} (saved {getattr(stored, f.name)!r}, given {getattr(config, f.name)!r})"
        for f in dataclasses.fields(TrainConfig)
        if f.name != "device" and getattr(stored, f.name) != getattr(config, f.name)
    ]
    if differ:
        raise ValueError(
            f"cannot resume the run in {out_dir} with different options: {'; '.join(differ)}. "
            "Resume with the saved options (omit them), or start a new run with another --out"
        )


class Parts(NamedTuple):
    """What a run trains with: the model and everything whose state ``--resume`` restores."""

    model: DenseNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffle: torch.Generator  # CPU: the same order and augmentations on every device
    device: torch.device


@dataclass
class RunState:
    """Where a run stands between two steps; with :class:`Parts` and the :class:`History`, it is
    all that ``resume.safetensors`` holds.

    ``permutation`` and ``running`` are ``None`` at an epoch boundary; mid-epoch they are the
    epoch's shuffle (N,) and its running sums (loss and correct count on the device, ``seen``).
    """

    epoch: int = 0  # 0-based index of the epoch to run (= epochs completed at a boundary)
    step: int = 0  # steps of that epoch already done
    permutation: torch.Tensor | None = None
    running: dict[str, Any] | None = None
    best_accuracy: float = -1.0
    elapsed: float = 0.0  # training seconds so far (evaluation excluded)

    def to_state(self, config: TrainConfig, parts: Parts, history: History) -> dict[str, Any]:
        """The nested state that :func:`logloss.checkpoint.save_state` writes."""
        return {
            "config": config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "permutation": self.permutation,
            "running": self.running,
            "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
            "rng": _rng_state(parts.shuffle, parts.device),
            "best_accuracy": self.best_accuracy,
            "best_epoch": history.best_epoch,
            "elapsed": self.elapsed,
            "initial_loss": history.initial_loss,
            "records": [dataclasses.asdict(r) for r in history.records],
        }

    @classmethod
    def from_state(cls, saved: Mapping[str, Any], parts: Parts, history: History) -> RunState:
        """Inverse of :meth:`to_state`: restores ``parts`` and ``history`` in place."""
        parts.model.load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        if parts.scheduler is not None:
            parts.scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"], parts.shuffle, parts.device)
        history.records = [EpochRecord(**r) for r in saved["records"]]
        history.initial_loss = saved["initial_loss"]
        history.best_epoch = saved["best_epoch"]
        return cls(
            epoch=saved["epoch"],
            step=saved["step"],
            permutation=saved["permutation"],
            running=saved["running"],
            best_accuracy=saved["best_accuracy"],
            elapsed=saved["elapsed"],
        )


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    should_stop: Callable[[int], bool] | None = None,
    download: bool = True,
) -> History:
    """Train a dense network as ``config`` says, checkpointing into ``out_dir``.

    Args:
        config: the options; with ``resume``, they must equal the saved run's (device aside).
        out_dir: the run folder (see :mod:`logloss.checkpoint` for its files). A new run
            creates it if missing and refuses one that already holds a run (a
            ``checkpoint.json`` or ``resume.safetensors``); other files in it are left alone.
        data_dir: where to find the dataset (see :func:`logloss.data.load_dataset`).
        resume: continue the run saved in ``out_dir``.
        reporter: receives progress events (default: silent).
        should_stop: called after every step with the number of steps done so far; returning
            True stops like Ctrl-C does (save, then return with ``status="interrupted"``).
        download: whether missing data may be downloaded.

    Returns:
        :class:`History`.
    """
    reporter = reporter or Reporter()
    out_dir = Path(out_dir)
    history = History(config=config, out_dir=out_dir)

    # Settings and device.
    device = pick_device(config.device)
    threads = configure_threads(device)
    history.device = str(device)
    saved_state = _saved_state(config, out_dir) if resume else None
    if not resume and any((out_dir / n).exists() for n in (ckpt.METADATA_FILE, ckpt.RESUME_FILE)):
        raise ValueError(
            f"{out_dir} already holds a training run: pass --resume to continue it, or choose "
            "another --out folder"
        )

    # Data: whole splits as tensors on the device, normalised once.
    splits = load_splits(config, device, data_dir=data_dir, download=download)
    n_train = len(splits.train_y)
    steps_per_epoch = math.ceil(n_train / config.batch_size)

    # Model, optimiser, schedule, loss, random generators.
    torch.manual_seed(config.seed)
    architecture = Architecture(
        splits.input_shape, config.hidden, len(splits.classes), config.dropout
    )
    model = DenseNet(architecture).to(device)
    optimizer = make_optimizer(config, model)
    parts = Parts(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer, config.epochs * steps_per_epoch),
        shuffle=torch.Generator().manual_seed(config.seed),
        device=device,
    )
    loss_fn = make_loss(config.loss, config.label_smoothing)

    info = {"architecture": architecture.to_dict(), "normalization": splits.normalization.to_dict()}
    metadata: dict[str, Any] = {
        "format": ckpt.FORMAT,
        "format_version": ckpt.FORMAT_VERSION,
        **info,
        "config": config.to_dict(),
        "seed": config.seed,
        "dataset": config.dataset,
        "classes": list(splits.classes),
        "versions": versions(),
        "device": str(device),
        "threads": threads,
        "sizes": {"train": n_train, "validation": len(splits.val_y), "test": len(splits.test_y)},
        "files": dict(ckpt.WEIGHT_FILES),
        "status": "running",
    }

    # Where to start: fresh, or exactly where the saved run stopped.
    if saved_state is not None:
        state = RunState.from_state(saved_state, parts, history)
        metadata = {**ckpt.read_metadata(out_dir), "device": str(device), "status": "running"}
    else:
        state = RunState()

    reporter.on_start(
        {
            "device": str(device),
            "threads": threads,
            "train": n_train,
            "validation": len(splits.val_y),
            "test": len(splits.test_y),
            "parameters": sum(p.numel() for p in model.parameters()),
            "architecture": architecture,
            "out_dir": str(out_dir),
            "resumed_at": (state.epoch + 1, state.step) if saved_state is not None else None,
        }
    )

    def save_resume_state() -> None:
        """Everything needed to continue exactly at (state.epoch, state.step)."""
        ckpt.save_state(out_dir / ckpt.RESUME_FILE, state.to_state(config, parts, history))

    if saved_state is None:
        # The untrained model's view (softmax near 1/C each, loss near ln C); then keep the
        # untrained weights, and be resumable at once.
        _initial_view(model, splits, history, reporter)
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save_weights(out_dir / ckpt.WEIGHT_FILES["initial"], model, info)
        save_resume_state()
        ckpt.write_metadata(out_dir, metadata)

    def finish(status: str) -> History:
        history.status = status
        metadata["status"] = status
        if history.records:
            metadata["last"] = dataclasses.asdict(history.records[-1])
            metadata["best"] = dataclasses.asdict(history.records[history.best_epoch - 1])
        if history.test:
            metadata["test"] = history.test
        metadata["initial_loss"] = history.initial_loss
        metadata["elapsed_seconds"] = state.elapsed
        ckpt.write_metadata(out_dir, metadata)
        reporter.on_end(history)
        return history

    # The loop: one epoch = one seeded permutation of the training set, sliced into batches.
    with stop_on_interrupt() as stop:

        def wants_stop(steps_done: int) -> bool:
            return bool(stop) or (should_stop is not None and should_stop(steps_done))

        for epoch in range(state.epoch, config.epochs):
            state.epoch = epoch
            stopping, seconds, samples = _run_epoch(
                parts, splits, config, state, loss_fn, reporter, wants_stop
            )
            state.elapsed += seconds
            if stopping and state.step < steps_per_epoch:
                # Mid-epoch: save the exact position; at an epoch's end, finish it first.
                save_resume_state()
                ckpt.save_weights(out_dir / ckpt.WEIGHT_FILES["last"], model, info)
                return finish("interrupted")

            # End of epoch: validate, record, checkpoint.
            validation = evaluate_model(model, splits.val_x, splits.val_y)
            running = state.running
            seen = running["seen"]
            record = EpochRecord(
                epoch=epoch + 1,
                train_loss=float(running["loss"]) / seen,
                train_accuracy=int(running["correct"]) / seen,
                val_loss=validation.loss,
                val_accuracy=validation.accuracy,
                lr=optimizer.param_groups[0]["lr"],
                seconds=seconds,
                elapsed=state.elapsed,
                samples_per_second=samples / max(seconds, 1e-9),
            )
            history.records.append(record)
            is_best = validation.accuracy > state.best_accuracy
            if is_best:
                state.best_accuracy, history.best_epoch = validation.accuracy, epoch + 1
                ckpt.save_weights(out_dir / ckpt.WEIGHT_FILES["best"], model, info)
            ckpt.save_weights(out_dir / ckpt.WEIGHT_FILES["last"], model, info)
            state.epoch, state.step, state.permutation, state.running = epoch + 1, 0, None, None
            save_resume_state()
            ckpt.write_metrics(out_dir, [dataclasses.asdict(r) for r in history.records])
            reporter.on_epoch_end(record, is_best)
            reached = config.target_accuracy is not None
            if reached and validation.accuracy >= config.target_accuracy:
                return _final(model, splits, history, "target_reached", finish, reporter)
            if (stopping or stop) and epoch + 1 < config.epochs:
                return finish("interrupted")

    return _final(model, splits, history, "finished", finish, reporter)


def _saved_state(config: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """The resume state of an unfinished run in ``out_dir``, saved with the same options."""
    status = ckpt.read_metadata(out_dir).get("status")
    if status in ("finished", "target_reached"):
        raise ValueError(
            f"the run in {out_dir} is complete (status: {status}): nothing to resume; "
            "start a new run with another --out folder"
        )
    saved = ckpt.load_state(out_dir / ckpt.RESUME_FILE)
    _check_resumable(saved["config"], config, out_dir)
    return saved


def _initial_view(model: nn.Module, splits: Splits, history: History, reporter: Reporter) -> None:
    """Show the untrained model's view of one sample; record (and check) its validation loss."""
    reporter.on_sample("before", _view_sample(model, splits), _sample_image(splits))
    history.initial_loss = evaluate_model(model, splits.val_x, splits.val_y).loss
    classes = len(splits.classes)
    uniform = math.log(classes)
    if abs(history.initial_loss - uniform) > 0.25 * uniform:
        reporter.on_warning(
            f"the untrained model's mean validation loss is {history.initial_loss:.3f}, far "
            f"from ln {classes} = {uniform:.3f}: the initial logits are not small, so training "
            "starts from confident guesses (check the initialisation)"
        )


def _run_epoch(
    parts: Parts,
    splits: Splits,
    config: TrainConfig,
    state: RunState,
    loss_fn: LossFunction,
    reporter: Reporter,
    wants_stop: Callable[[int], bool],
) -> tuple[bool, float, int]:
    """Train epoch ``state.epoch`` from step ``state.step`` to its end, or until asked to stop.

    Starts a new epoch (a fresh permutation from ``parts.shuffle``, zero running sums) when
    ``state.permutation`` is ``None``; advances ``state.step`` and the running sums in place.

    Returns:
        ``(stopping, seconds, samples)``: whether a stop was asked for (after the last step
        done), the training time of this call (the device synchronised), and the samples seen.
    """
    model, optimizer, scheduler, shuffle, device = parts
    n_train = len(splits.train_y)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    background = -splits.normalization.mean / splits.normalization.std  # a blank pixel
    if state.permutation is None:
        state.permutation = torch.randperm(n_train, generator=shuffle)
        state.step = 0
        # Running sums stay on the device: reading them forces a sync.
        state.running = {
            "loss": torch.zeros((), device=device),
            "correct": torch.zeros((), dtype=torch.int64, device=device),
            "seen": 0,
        }
    else:
        state.running = {
            k: v.to(device) if torch.is_tensor(v) else v for k, v in state.running.items()
        }
    running = state.running
    order = state.permutation.to(device)
    refresh = max(1, steps_per_epoch // 40)  # redraw the bar about 40 times an epoch
    reporter.on_epoch_start(state.epoch + 1, config.epochs, steps_per_epoch, state.step)
    model.train()
    synchronize(device)
    started = time.perf_counter()
    seen_at_start = running["seen"]
    stopping = False

    for step in range(state.step, steps_per_epoch):
        batch = order[step * config.batch_size : (step + 1) * config.batch_size]
        x, y = splits.train_x[batch], splits.train_y[batch]  # (B, H*W), (B,)
        if config.augment:
            x = augment(x, splits.input_shape, background, config, shuffle)
        logits = model(x)  # (B, C)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state.step = step + 1

        running["loss"] += loss.detach() * len(y)
        running["correct"] += (logits.detach().argmax(dim=1) == y).sum()
        running["seen"] += len(y)
        if (step + 1) % refresh == 0 or step + 1 == steps_per_epoch:
            seen = running["seen"]
            rate = (seen - seen_at_start) / max(time.perf_counter() - started, 1e-9)
            reporter.on_progress(
                step + 1, float(running["loss"]) / seen, int(running["correct"]) / seen, rate
            )
        stopping = wants_stop(state.epoch * steps_per_epoch + step + 1)
        if stopping:
            break

    synchronize(device)
    return stopping, time.perf_counter() - started, running["seen"] - seen_at_start


def _final(
    model: nn.Module,
    splits: Splits,
    history: History,
    status: str,
    finish: Callable[[str], History],
    reporter: Reporter,
) -> History:
    """Test accuracy of the last and the best weights, then the trained model's view."""
    last = evaluate_model(model, splits.test_x, splits.test_y)
    history.test = {"accuracy": last.accuracy, "loss": last.loss}
    if history.best_epoch is not None and history.best_epoch != len(history.records):
        state, _ = ckpt.load_weights(history.out_dir / ckpt.WEIGHT_FILES["best"])
        best_model = DenseNet(model.architecture).to(next(model.parameters()).device)
        best_model.load_state_dict(state)
        best = evaluate_model(best_model, splits.test_x, splits.test_y)
    else:
        best = last
    history.test.update(best_accuracy=best.accuracy, best_loss=best.loss)
    reporter.on_sample("after", _view_sample(model, splits), _sample_image(splits))
    return finish(status)
