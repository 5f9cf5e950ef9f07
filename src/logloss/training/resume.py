"""Where a run stands between two steps, and how ``--resume`` gets back there bit for bit.

``resume.safetensors`` holds a :class:`RunState` plus the model, optimiser, schedule and random
generators (:meth:`RunState.to_state`); :func:`saved_state` reads it back for a run that is not
complete and was saved with the same options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from logloss.training import run_folder
from logloss.training.config import TrainConfig


@dataclass
class RunState:
    """The position of a run: with the model, optimiser, schedule and generators, it is all that
    ``resume.safetensors`` holds.

    ``permutation`` and ``running`` are ``None`` at an epoch boundary; mid-epoch they are the
    epoch's shuffle (N,) and its running sums (loss and correct count on the device, ``seen``).
    """

    epoch: int = 0  # 0-based index of the epoch to run (= epochs completed at a boundary)
    step: int = 0  # steps of that epoch already done
    permutation: torch.Tensor | None = None
    running: dict[str, Any] | None = None
    best_accuracy: float = -1.0
    elapsed: float = 0.0  # training seconds so far (evaluation excluded)

    def to_state(self) -> dict[str, Any]:
        """This position as the JSON-and-tensor part of a resume state."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "permutation": self.permutation,
            "running": self.running,
            "best_accuracy": self.best_accuracy,
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_state(cls, saved: Mapping[str, Any]) -> RunState:
        """Inverse of :meth:`to_state` (extra keys of ``saved`` are ignored)."""
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls)})


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The global torch generator's state, the shuffle generator's, and CUDA's on CUDA."""
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(
    state: Mapping[str, torch.Tensor], generator: torch.Generator, device: torch.device
) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def saved_state(config: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """The resume state of an unfinished run in ``out_dir``, saved with the same options."""
    status = run_folder.read_metadata(out_dir).get("status")
    if status in ("finished", "target_reached"):
        raise ValueError(
            f"the run in {out_dir} is complete (status: {status}): nothing to resume; "
            "start a new run with another --out folder"
        )
    saved = run_folder.load_state(out_dir / run_folder.RESUME_FILE)
    check_resumable(saved["config"], config, out_dir)
    return saved


def check_resumable(saved: Mapping[str, Any], config: TrainConfig, out_dir: Path) -> None:
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
