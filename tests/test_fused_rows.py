"""The row-kernel contract of logloss.fused.rows that a vocabulary-parallel loss builds on:
(a) ``lse_out``, (b) a given ``lse_in``, (c) ``RowOptions(shard=True)``.

Logits are split into two "shards" of columns.  Each computes its rows' lse (a, float64); the
global lse is their logsumexp (what an all-reduce gives); with it (b) and shard targets (c),
each shard's gradient is its columns of the full gradient and the shards' loss rows add up to
the full loss, checked against PyTorch in float64.
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


def split_rows(
    z: torch.Tensor, target: torch.Tensor, cuts: list[int], eps: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(global lse (n,) float64, sum of the shards' loss rows (n,), gradient (n, c)) of rows
    whose columns are split at ``cuts``, each shard computed alone as (a), then (b) + (c)."""
    n, c = z.shape
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    shards = list(zip([0, *cuts], [*cuts, c], strict=True))
    targets = [torch.where(target == -100, -100, target - c0) for c0, _ in shards]
    lse_parts = []
    for (c0, c1), shard_target in zip(shards, targets, strict=True):  # (a) no gradient
        lse = torch.empty(n, dtype=torch.float64)
        opts = RowOptions(-100, eps, shard=True, n_classes=c)
        part = z[:, c0:c1].contiguous()
        compute_rows(part, shard_target, None, torch.empty(n, dtype=acc), opts, lse_out=lse)
        lse_parts.append(lse)
    global_lse = torch.logsumexp(torch.stack(lse_parts), dim=0)  # what an all-reduce gives
    grads, loss = [], torch.zeros(n, dtype=torch.float64)
    for (c0, c1), shard_target in zip(shards, targets, strict=True):  # (b) + (c)
        grad, part_loss = torch.empty(n, c1 - c0, dtype=z.dtype), torch.empty(n, dtype=acc)
        opts = RowOptions(-100, eps, scale=scale, shard=True, n_classes=c)
        part = z[:, c0:c1].contiguous()
        compute_rows(part, shard_target, grad, part_loss, opts, lse_in=global_lse)
        grads.append(grad)
        loss += part_loss.double()
    return global_lse, loss, torch.cat(grads, dim=1)


def pytorch_rows(
    z: torch.Tensor, target: torch.Tensor, eps: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lse, loss rows, d(sum scale loss)/dz) of F.cross_entropy on ``z`` in float64."""
    x = z.double().requires_grad_()
    expected = F.cross_entropy(x, target, label_smoothing=eps, reduction="none")
    expected.backward(torch.full(target.shape, scale, dtype=torch.float64))
    return torch.logsumexp(x, 1).detach(), expected.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_two_shards_give_the_full_loss_and_gradient(backend: str, dtype, eps: float) -> None:
    gen = torch.Generator().manual_seed(20)
    logits = torch.randn(5, 16, generator=gen, dtype=torch.float64) * 3
    target = torch.tensor([0, 6, 7, 15, -100])  # in shard 0, 0, 1, 1, ignored
    z = logits.to(dtype)
    global_lse, loss, grad = split_rows(z, target, [7], eps, 0.25)
    lse, expected, expected_grad = pytorch_rows(z, target, eps, 0.25)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(grad.double(), expected_grad, **tol)
    torch.testing.assert_close(loss, expected, **tol)
    valid = target != -100
    torch.testing.assert_close(global_lse[valid], lse[valid], **tol)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_shards_of_float32_logits_near_1e4_keep_float32_accuracy(backend: str, eps: float) -> None:
    """Logits of 1e4 with near ties on both shards, float32: lse, loss rows and gradient to
    float32 accuracy of the float64 reference on the same values.

    Regression: lse_out and lse_in were float32 for float32 logits, and an lse of 1e4 rounded
    to float32 is off by up to half an ulp, 4.9e-4: so was every probability exp(z - lse).
    """
    gen = torch.Generator().manual_seed(21)
    logits = torch.randn(6, 1001, generator=gen, dtype=torch.float64) * 3
    logits[:, 5], logits[:, 700], logits[:, 900] = 10000.3, 10000.0, 9999.6
    target = torch.tensor([5, 5, 700, 900, 3, -100])
    z = logits.float()
    global_lse, loss, grad = split_rows(z, target, [500], eps, 1.0)
    lse, expected, expected_grad = pytorch_rows(z, target, eps, 1.0)
    valid = target != -100
    # float64 lse: m + log(sum of float32 exps), ~1e-7 absolute; rounded to float32 it was 5e-4
    assert (global_lse[valid] - lse[valid]).abs().max() <= 1e-6
    # the loss rows near the ties are ~1 (lse - z_t), to 1e-6 relative; p to 1e-6 of 1
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert (grad.double() - expected_grad).abs().max() <= 1e-6


def test_a_target_of_another_shard_is_an_error_without_shard_semantics() -> None:
    # the public functions reject such targets; the kernel itself marks the row NaN
    loss = torch.empty(2)
    compute_rows(torch.randn(2, 4), torch.tensor([1, 9]), None, loss, RowOptions(-100))
    assert loss[1].isnan()
    assert loss[0].isfinite()
