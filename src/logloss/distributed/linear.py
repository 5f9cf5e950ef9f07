"""``vocab_parallel_linear_cross_entropy``: the loss of ``hidden @ weight.T`` with the weight's
rows (the classes) split across ranks, chunk by chunk of rows.

Per chunk of rows, each rank computes its logits z = h W_r^T + b_r (rows, V_r), their
statistics (the fused row kernel, one read), one all-gather of 3 x rows float64 numbers, and
the loss rows; when gradients are needed the kernel turns z into dL/dz in place (one read, one
write) and grad_h = z W_r (this rank's part), grad_W_r += z^T h and grad_b_r += sum z are
accumulated (the chunk steps of ``logloss.fused.linear``).  After the last chunk grad_h is
summed over the ranks (one all-reduce of N x H numbers).  So a rank holds at most one chunk of
its logits: peak O(chunk V_r + V_r H).  All gradients are made in the forward pass (three
matrix products per chunk, the minimum) and backward only scales them; for
``reduction="none"`` (per-row incoming gradients) or a second backward the chunks rerun in
backward from the saved per-row statistics, without a collective but the final all-reduce.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from logloss.distributed import checks
from logloss.distributed.cross_entropy import global_row_stats
from logloss.distributed.dtensor import local_part, unwrap
from logloss.distributed.group import all_reduce_sum
from logloss.distributed.plan import Plan, make_plan
from logloss.distributed.row_math import (
    STAT_DTYPE,
    RowStats,
    gradient_scales,
    reduce_losses,
    row_losses,
)
from logloss.distributed.shard_math import shard_gradient
from logloss.fused.dispatch import scale_in_place
from logloss.fused.linear import Grads, add_chunk_gradients, chunk_logits, gradient_buffers
from logloss.fused.rows import accumulator_dtype

_CHUNK_BYTES = 128 << 20  # default chunk: at most 128 MiB of float32 logits per rank ...
_MIN_CHUNK_ROWS = 256  # ... but at least 256 rows (matrix products slow down below ~512 rows)


def default_chunk_rows(n: int, largest_shard: int) -> int:
    """Rows per chunk: 128 MiB of float32 logits of the largest shard, a multiple of 64 rows
    (at least 256, at most N); the same on every rank, so all ranks run the same chunks."""
    rows = _CHUNK_BYTES // (4 * max(largest_shard, 1)) // 64 * 64
    return max(1, min(n, max(_MIN_CHUNK_ROWS, rows)))


def _pass(
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    plan: Plan,
    chunk: int,
    needs: tuple,
    saved: RowStats | None,
    grad_output: torch.Tensor | None,
) -> tuple[RowStats, Grads]:
    """One pass over the row chunks: (row statistics, gradients).

    Forward (``saved`` None): statistics through one all-gather per chunk and, for any of
    ``needs``, gradients for an incoming gradient of 1.  Backward rerun (``saved`` given):
    only the gradients, for ``grad_output`` (0-d, or (N,) for 'none').
    """
    hidden, weight, bias = inputs
    n = hidden.shape[0]
    table = None  # RowStats.stacked() of all rows, filled chunk by chunk in forward
    if saved is None:
        table = torch.empty(3, n, dtype=STAT_DTYPE, device=hidden.device)
    if grad_output is None:
        grad_output = torch.ones((), dtype=STAT_DTYPE, device=hidden.device)
    scales = gradient_scales(grad_output, plan.terms, plan.options.reduction)
    grads = gradient_buffers(hidden, weight, bias, needs)
    z_buf = torch.empty(min(chunk, n), weight.shape[0], dtype=hidden.dtype, device=hidden.device)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        h = hidden[r0:r1]  # (rows, H)
        z = chunk_logits(h, weight, bias, z_buf[: r1 - r0])  # (rows, V_r)
        if saved is None:
            stats = global_row_stats(z, plan, (r0, r1))
            table[:, r0:r1] = stats.stacked()
        else:
            stats = saved.rows(r0, r1)
        if any(needs):  # z becomes dL/dz in place, then the three products
            rows_scales = tuple(x if x.dim() == 0 else x[r0:r1] for x in scales)
            shard_gradient(z, plan, (r0, r1), stats, rows_scales, out=z)
            add_chunk_gradients(z, h, weight, grads, r0)
    if grads[0] is not None:  # every rank holds part of d loss / d hidden: sum them
        all_reduce_sum(grads[0], plan.layout.group, plan.layout.device)
    return (saved if table is None else RowStats(*table)), grads


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        plan: Plan,
        chunk: int,
        grad_enabled: bool,
    ) -> torch.Tensor:
        # needs_input_grad reflects requires_grad, not grad mode: no gradients under no_grad()
        needs = tuple(grad_enabled and bool(need) for need in ctx.needs_input_grad[:3])
        reduction = plan.options.reduction
        # reduction='none': the per-row incoming gradients come in backward, so rerun there
        needs_now = (False, False, False) if reduction == "none" else needs
        stats, grads = _pass((hidden, weight, bias), plan, chunk, needs_now, None, None)
        ctx.save_for_backward(hidden, weight, bias)
        ctx.plan, ctx.chunk, ctx.needs, ctx.stats, ctx.grads = plan, chunk, needs, stats, grads
        ce, zl = row_losses(stats, plan.terms, plan.options)
        return reduce_losses(ce, zl, plan.terms, reduction).to(hidden.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, [None, None, None]  # handed out once
        if any(need and g is None for need, g in zip(ctx.needs, grads, strict=True)):
            # reduction='none', or a second backward: rerun the chunks from the saved inputs
            inputs = ctx.saved_tensors
            _, grads = _pass(inputs, ctx.plan, ctx.chunk, ctx.needs, ctx.stats, grad_output)
        else:
            grads = [None if g is None else scale_in_place(g, grad_output) for g in grads]
        return (*grads, None, None, None)


_EXTRA_RULES: tuple[checks.Rule, ...] = (
    (("hidden_dim",), "the hidden size H", "every rank passes the same (N, H) hidden", str),
    (
        ("hidden_given", "hidden_dtype", "hidden_numel", "hidden_sum", "hidden_mix"),
        "hidden",
        "hidden must be replicated: the same (N, H) tensor on every rank",
        None,
    ),
    (("bias_given",), "whether bias_shard is given", "pass a bias shard on all ranks or none", str),
    (("chunk",), "chunk_size", checks.SAME_OPTIONS, str),
)


def _check_linear_inputs(hidden: Any, weight: Any, bias: Any) -> None:
    """weight_shard (V_r, H) and bias_shard (V_r,) with hidden's dtype and device."""
    h = checks.check_float_matrix(hidden, "hidden", "(N, H)")
    w = checks.check_float_matrix(weight, "weight_shard", "(V_r, H)")
    if w.shape[1] != h.shape[1] or w.dtype != h.dtype or w.device != h.device:
        raise ValueError(
            f"weight_shard must be ({w.shape[0]}, {h.shape[1]}) with hidden's dtype and device "
            f"({h.dtype}, {h.device}); got {tuple(w.shape)}, {w.dtype}, {w.device}"
        )
    if bias is not None and (
        not torch.is_tensor(bias)
        or tuple(bias.shape) != (w.shape[0],)
        or (bias.dtype, bias.device) != (h.dtype, h.device)
    ):
        got = (tuple(bias.shape), bias.dtype, bias.device) if torch.is_tensor(bias) else bias
        raise ValueError(
            f"bias_shard must be a ({w.shape[0]},) tensor of {h.dtype} on {h.device} (one bias "
            f"per row of weight_shard); got {got}"
        )


def _check_chunk(chunk_size: Any) -> int:
    """A positive int, or 0 for None (the default, chosen once the shard sizes are known)."""
    if chunk_size is None:
        return 0
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    return chunk_size


def _local_facts(
    tensors: tuple[Any, Any, Any, Any, Any], options: dict, chunk_size: Any, found: dict
) -> checks.Facts:
    """This rank's own checks (raising ValueError), for :func:`checks.check_call`."""
    hidden, weight, bias, target, class_weight = tensors
    _check_linear_inputs(hidden, weight, bias)
    found["chunk"] = _check_chunk(chunk_size)
    facts = checks.common_facts(hidden, "hidden", target, class_weight, options, found)
    return {
        **facts,
        "classes": weight.shape[0],
        "hidden_dim": hidden.shape[1],
        **checks.tensor_facts(hidden, "hidden"),
        "bias_given": int(bias is not None),
        "chunk": found["chunk"],
    }


_EXTRA_NAMES = tuple(dict.fromkeys(name for names, *_ in _EXTRA_RULES for name in names))


def vocab_parallel_linear_cross_entropy(
    hidden: torch.Tensor,
    weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    bias_shard: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    class_weight: torch.Tensor | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ W.T + b`` where W's rows (the classes) are split across the
    ranks of ``group``, without gathering or materialising the (N, V) logits.

    The loss is :func:`vocab_parallel_cross_entropy` of the logits z = hidden W^T + b (W and b
    the shards in rank order); the options mean the same (``class_weight`` is its ``weight``).
    Rows go through in chunks: per chunk each rank computes its (rows, V_r) logits, and the
    three gradients are accumulated in the forward pass (three matrix products per chunk, the
    minimum); grad_hidden is summed over the ranks (one all-reduce), grad_weight_shard and
    grad_bias_shard stay local.  Peak memory per rank: a chunk of logits plus the weight shard's
    gradient, O(chunk V_r + V_r H).

    Args:
        hidden: (N, H) floating, the same on every rank (checked by checksums); or a
            Replicate() DTensor.
        weight_shard: (V_r, H) this rank's rows of the (V, H) output weight, hidden's dtype and
            device; or a DTensor placed Shard(0) on a 1-D mesh (e.g. the weight of a
            ``ColwiseParallel`` layer): then the loss is a Replicate() DTensor.
        target: (N,) global class indices in [0, V) or ``ignore_index``, the same on every rank.
        bias_shard: optional (V_r,), this rank's part of the bias (or a Shard(0) DTensor).
        group: the process group (default: the default group; None with DTensor inputs).
        ignore_index, reduction, label_smoothing: as in ``F.cross_entropy``.
        class_weight: (V,) class weights, the same on every rank, or None.
        z_loss, softcap: as in :func:`vocab_parallel_cross_entropy`.
        chunk_size: rows per chunk (the same on every rank); default: 128 MiB of float32
            logits of the largest shard, at least 256 rows.

    Returns:
        The loss in ``hidden``'s dtype, identical on every rank: (N,) for ``"none"``, else a
        scalar.
    """
    weight, group, wrap = unwrap(weight_shard, 0, "weight_shard", group)
    tensors = (
        local_part(hidden, None, "hidden"),
        weight,
        local_part(bias_shard, 0, "bias_shard"),
        local_part(target, None, "target"),
        local_part(class_weight, None, "class_weight"),
    )
    options = {
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
    }
    layout, loss_options, checked_target = checks.check_call(
        lambda found: _local_facts(tensors, options, chunk_size, found),
        _EXTRA_NAMES,
        _EXTRA_RULES,
        group,
    )
    local_hidden, bias = tensors[0], tensors[2]
    plan = make_plan(layout, loss_options, checked_target, accumulator_dtype(local_hidden))
    n = local_hidden.shape[0]
    chunk = _check_chunk(chunk_size) or default_chunk_rows(n, max(layout.sizes))
    loss = _VocabParallelLinearCrossEntropy.apply(
        local_hidden.contiguous(), weight, bias, plan, chunk, torch.is_grad_enabled()
    )
    return wrap(loss)
