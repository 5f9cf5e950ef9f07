"""The row-kernel contract of logloss.fused.rows that a vocabulary-parallel loss builds on:
(a) ``lse_out``, (b) a given ``lse_in``, (c) ``RowOptions(shard=True)``.

Two "shards" hold the columns [0, 7) and [7, 16) of (5, 16) logits.  Each computes its rows'
lse (a); the global lse is their logsumexp (what an all-reduce gives); with it (b) and shard
targets (c), each shard's gradient is its columns of the full gradient and the shards' loss
rows add up to the full loss, checked against PyTorch in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from logloss.fused import cpu_kernel
from logloss.fused.dispatch import compute_rows
from logloss.fused.rows import RowOptions


@pytest.fixture(params=["native", "portable", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(cpu_kernel, "PORTABLE_ONLY", request.param == "portable")
    monkeypatch.setenv("LOGLOSS_FUSED_BACKEND", "torch" if request.param == "torch" else "auto")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_two_shards_give_the_full_loss_and_gradient(backend: str, dtype, eps: float) -> None:
    gen = torch.Generator().manual_seed(20)
    logits = torch.randn(5, 16, generator=gen, dtype=torch.float64) * 3
    target = torch.tensor([0, 6, 7, 15, -100])  # in shard 0, 0, 1, 1, ignored
    z = logits.to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    shards = [(0, 7), (7, 16)]
    lse_parts = []
    for c0, c1 in shards:  # (a) each shard's lse, no gradient
        lse = torch.empty(5, dtype=acc)
        opts = RowOptions(-100, eps, shard=True, n_classes=16)
        shard_target = torch.where(target == -100, -100, target - c0)
        compute_rows(
            z[:, c0:c1].contiguous(),
            shard_target,
            None,
            torch.empty(5, dtype=acc),
            opts,
            lse_out=lse,
        )
        lse_parts.append(lse)
    global_lse = torch.logsumexp(torch.stack(lse_parts), dim=0)  # what an all-reduce gives
    grads, losses = [], []
    for c0, c1 in shards:  # (b) + (c): the gradient with the global lse
        grad, loss = torch.empty(5, c1 - c0, dtype=dtype), torch.empty(5, dtype=acc)
        opts = RowOptions(-100, eps, scale=0.25, shard=True, n_classes=16)
        shard_target = torch.where(target == -100, -100, target - c0)
        compute_rows(z[:, c0:c1].contiguous(), shard_target, grad, loss, opts, lse_in=global_lse)
        grads.append(grad)
        losses.append(loss)
    x = z.double().requires_grad_()
    expected = F.cross_entropy(x, target, label_smoothing=eps, reduction="none")
    expected.backward(torch.full((5,), 0.25, dtype=torch.float64))
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(torch.cat(grads, dim=1).double(), x.grad, **tol)
    torch.testing.assert_close((losses[0] + losses[1]).double(), expected.detach(), **tol)
    valid = target != -100
    torch.testing.assert_close(
        global_lse[valid].double(), torch.logsumexp(x, 1)[valid].detach(), **tol
    )


def test_a_target_of_another_shard_is_an_error_without_shard_semantics() -> None:
    # the public functions reject such targets; the kernel itself marks the row NaN
    loss = torch.empty(2)
    compute_rows(torch.randn(2, 4), torch.tensor([1, 9]), None, loss, RowOptions(-100))
    assert loss[1].isnan()
    assert loss[0].isfinite()
