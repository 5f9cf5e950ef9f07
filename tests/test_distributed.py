"""logloss.distributed across 2 and 3 processes (gloo on 127.0.0.1), against single-process PyTorch.

Each world runs every case of ``_distributed_cases.py`` once (one start-up per world keeps the
suite short); the tests below assert on what each rank measured: the normwise relative error of
the loss and of its own part of each gradient against ``F.cross_entropy`` (or
``loss_parallel()``) on the gathered inputs, and the messages of the errors every rank raised.
"""

from __future__ import annotations

import math

import pytest
import torch

from _distributed_world import run_world
from logloss.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
WORLDS = (2, 3)


@pytest.fixture(scope="module", params=WORLDS, ids=lambda w: f"world{w}")
def world(request: pytest.FixtureRequest) -> list[dict]:
    """Every rank's results for a world of ``request.param`` processes."""
    return run_world(request.param)


def _measured(world: list[dict], prefix: str) -> list[tuple[str, int, dict]]:
    cases = [
        (name, r, result) for r, results in enumerate(world) for name, result in results.items()
    ]
    found = [case for case in cases if case[0].startswith(prefix)]
    assert found, f"no case {prefix}*"
    return found


@pytest.mark.parametrize(
    "prefix",
    [
        "ce-",
        "big-",
        "inf-",
        "nan-ignored",
        "empty-shard",
        "lopsided",
        "linear-",
        "dtensor-",
        "after-errors",
    ],
)
def test_matches_single_process_pytorch(world: list[dict], prefix: str) -> None:
    for name, rank, result in _measured(world, prefix):
        tol = TOLERANCE[result["dtype"]]
        for metric in result.keys() - {"dtype", "ignored_grad", "placements", "value"}:
            assert result[metric] <= tol, f"{name}, rank {rank}: {metric} error {result[metric]}"
        assert result.get("ignored_grad", 0.0) == 0.0, f"{name}, rank {rank}: ignored rows"
        assert result.get("placements", 1.0) == 1.0, f"{name}, rank {rank}: DTensor placements"


def test_all_ignored(world: list[dict]) -> None:
    """mean over no rows is NaN and sum is 0, as PyTorch; the gradient is exactly 0."""
    for name, rank, result in _measured(world, "all-ignored"):
        if "mean" in name:
            assert math.isnan(result["value"]), (name, rank)
        else:
            assert result["value"] == 0.0, (name, rank)
        assert result["loss"] == 0.0, (name, rank)  # the same as PyTorch's
        assert result["ignored_grad"] == 0.0, (name, rank)


# Bad inputs on one rank (or all): every rank raises the same ValueError.
EXPECTED_ERRORS = {
    "err-target-shape": "rank 1 of {P}: target must have shape (8,) to match logits_shard (8, ",
    "err-target-dtype": "target's dtype differs across ranks (rank 0: int64, rank 1: int32",
    "err-target-float": "rank {last} of {P}: target must hold integer class indices",
    "err-target-values": "target differs across ranks (rank 0 vs rank 1)",
    "err-logits-dtype": "the dtype differs across ranks (rank 0: float32",
    "err-logits-1d": "rank 0 of {P}: logits_shard must be a 2-D floating tensor",
    "err-logits-list": "rank 1 of {P}: logits_shard must be a torch.Tensor",
    "err-rows": "the number of rows N differs across ranks (rank 0: 7, rank 1: 8",
    "err-options": "reduction differs across ranks (rank 0: 'mean', rank 1: 'sum'",
    "err-target-range": "target value 1001 at index [2] is not a class index",
    "err-weight-length": "weight has 1000 entries but the shards hold 1001 classes",
    "err-softcap": "softcap must be a finite number > 0; got 0.0",
    "err-linear-hidden": "hidden differs across ranks",
    "err-linear-hidden-size": "rank 1 of {P}: weight_shard must be",
    "err-linear-chunk": "chunk_size differs across ranks (rank 0: 4, rank 1: 5",
    "err-dtensor-replicated": "placed Replicate(); logloss.distributed needs Shard(1)",
}


@pytest.mark.parametrize("case", sorted(EXPECTED_ERRORS))
def test_bad_input_raises_the_same_error_on_every_rank(world: list[dict], case: str) -> None:
    messages = {results[case]["error"] for results in world}
    assert len(messages) == 1, messages
    (message,) = messages
    expected = EXPECTED_ERRORS[case].format(P=len(world), last=len(world) - 1)
    assert message is not None
    assert expected in message


def test_uninitialised_group_says_how_to_initialise() -> None:
    assert not torch.distributed.is_initialized()
    z, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"call torch\.distributed\.init_process_group\("):
        vocab_parallel_cross_entropy(z, t)
    with pytest.raises(ValueError, match="needs an initialised process group"):
        vocab_parallel_linear_cross_entropy(z, torch.zeros(3, 3), t)
