"""What each rank of a test world runs (``python _distributed_cases.py RANK WORLD PORT DIR``).

Every rank builds the same full inputs from a seed, passes its own columns (or weight rows) to
logloss.distributed, computes the single-process PyTorch reference on the whole inputs in
float64, and records the normwise relative error of the loss and of its own part of each
gradient: max |ours - reference| / max |reference| (inf when NaN/inf do not fall on the same
entries).  Bad-input cases record the message of the ValueError each rank raised.  The results
go to DIR/rank<R>.json; tests/test_distributed.py asserts on them.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import loss_parallel

from logloss._atomic import write_text_atomic
from logloss._json import dumps
from logloss.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

V = 1001  # uneven over 2 and 3 ranks


def split(v: int, world: int) -> list[int]:
    """Shard sizes differing by at most one, larger first (as torch.tensor_split)."""
    return [v // world + (1 if r < v % world else 0) for r in range(world)]


def columns(rank: int, sizes: list[int]) -> slice:
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def draw(seed: int, n: int, v: int, dtype: torch.dtype, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, v, generator=g, dtype=torch.float64) * scale).to(dtype)
    return z, torch.randint(v, (n,), generator=g)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref| over finite entries; inf if the non-finite entries differ."""
    a, b = ours.detach().double(), ref.detach().double()
    for kind in (torch.isnan, torch.isposinf, torch.isneginf):
        if not torch.equal(kind(a), kind(b)):
            return float("inf")
    finite = torch.isfinite(b)
    if not finite.any():
        return 0.0
    diff = (a[finite] - b[finite]).abs().max()
    return float(diff / b[finite].abs().max().clamp(min=1e-300))


def float64_leaf(x: torch.Tensor) -> torch.Tensor:
    """A float64 copy of ``x`` that requires grad (never ``x`` itself)."""
    return x.detach().to(torch.float64, copy=True).requires_grad_()


def reference(z: torch.Tensor, t: torch.Tensor, **kw: Any) -> torch.Tensor:
    """F.cross_entropy of f = cap tanh(z / cap) (or z) plus the z-loss lam lse^2 (not weighted;
    mean over non-ignored rows), composed of plain PyTorch operations."""
    cap, lam = kw.pop("softcap", None), kw.pop("z_loss", 0.0)
    f = cap * torch.tanh(z / cap) if cap else z
    ce = F.cross_entropy(f, t, **kw)
    if not lam:
        return ce
    valid = t != kw.get("ignore_index", -100)
    zl = torch.where(valid, lam * torch.logsumexp(f, dim=1) ** 2, 0.0)
    reduction = kw.get("reduction", "mean")
    if reduction == "none":
        return ce + zl
    return ce + (zl.sum() if reduction == "sum" else zl.sum() / valid.sum())


def incoming(loss: torch.Tensor, seed: int) -> torch.Tensor:
    """An incoming gradient other than 1: random per row for 'none', 0.75 for a scalar."""
    if loss.dim() == 0:
        return torch.tensor(0.75, dtype=loss.dtype)
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(loss.shape, generator=g, dtype=torch.float64).to(loss.dtype)


def ce_errors(rank: int, world: int, z, t, sizes=None, seed: int = 0, **kw) -> dict[str, Any]:
    """Loss and own-gradient errors of vocab_parallel_cross_entropy against the reference."""
    sizes = sizes or split(z.shape[1], world)
    cols = columns(rank, sizes)
    local = z[:, cols].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(local, t, **kw)
    grad_in = incoming(loss, seed)
    loss.backward(grad_in)
    full = float64_leaf(z)
    weight = kw.pop("weight", None)
    ref = reference(full, t, weight=None if weight is None else weight.double(), **kw)
    ref.backward(grad_in.double())
    valid = t != kw.get("ignore_index", -100)
    ignored_grad = local.grad[~valid].abs().max() if (~valid).any() else torch.tensor(0.0)
    return {
        "dtype": str(z.dtype).removeprefix("torch."),
        "loss": rel_err(loss, ref),
        "grad": rel_err(local.grad[valid], full.grad[valid][:, cols]),
        "ignored_grad": float(ignored_grad),
        "value": float(loss) if loss.dim() == 0 else None,
    }


# --------------------------------------------------------------------------------------------
# Cases: each returns {"dtype", "loss", "grad", ...} errors, or {"error": message}.
# --------------------------------------------------------------------------------------------


def ce_cases(rank: int, world: int) -> dict[str, dict]:
    """Every reduction, smoothing, ignore_index, class weights, z-loss, softcap; float64/32."""
    results = {}
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        z, t = draw(1, 64, V, dtype)
        t[::7] = -100
        weight = torch.rand(V, generator=torch.Generator().manual_seed(2), dtype=dtype)
        for reduction in ("mean", "sum", "none"):
            for label_smoothing in (0.0, 0.1):
                key = f"ce-{reduction}-eps{label_smoothing}-{name}"
                results[key] = ce_errors(
                    rank, world, z, t, reduction=reduction, label_smoothing=label_smoothing
                )
                results[f"{key}-weight"] = ce_errors(
                    rank,
                    world,
                    z,
                    t,
                    reduction=reduction,
                    label_smoothing=label_smoothing,
                    weight=weight,
                )
        results[f"ce-zloss-softcap-{name}"] = ce_errors(
            rank, world, z, t, z_loss=1e-3, softcap=4.0, label_smoothing=0.05, reduction="none"
        )
        results[f"ce-zloss-mean-{name}"] = ce_errors(rank, world, z, t, z_loss=1e-2)
        results[f"ce-ignore-7-{name}"] = ce_errors(rank, world, z, t.clamp(min=7), ignore_index=7)
    return results


def extreme_cases(rank: int, world: int) -> dict[str, dict]:
    """Logits of +-1e4, -inf (some, a shard's whole row, the target's, a whole row), +inf,
    NaN in an ignored row, every row ignored, a rank with no classes, very uneven shards."""
    sizes = split(V, world)
    results = {}
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        z, t = draw(3, 48, V, dtype, scale=1e4)
        results[f"big-{name}"] = ce_errors(rank, world, z, t, label_smoothing=0.1)
        z, t = draw(9, 48, V, dtype)
        z[:, 5], z[:, 700], z[:, 900] = 1e4 + 0.25, 1e4, 1e4 - 0.5  # near ties on two ranks
        t[:8] = 5
        results[f"big-ties-{name}"] = ce_errors(
            rank, world, z, t, reduction="none", label_smoothing=0.1
        )
        z, t = draw(4, 48, V, dtype)
        z[torch.rand(z.shape, generator=torch.Generator().manual_seed(5)) < 0.2] = -torch.inf
        z[0, : sizes[0]] = -torch.inf  # rank 0's columns of row 0
        t[1] = 3
        z[1, 3] = -torch.inf  # the target's logit: loss inf
        z[2] = -torch.inf  # a whole row: NaN, as in PyTorch
        z[3, 500] = torch.inf  # +inf: NaN row, as in PyTorch
        for reduction in ("none", "mean"):
            results[f"inf-{reduction}-{name}"] = ce_errors(rank, world, z, t, reduction=reduction)
        results[f"inf-smoothing-{name}"] = ce_errors(
            rank, world, z, t, reduction="none", label_smoothing=0.2
        )
        z, t = draw(6, 16, V, dtype)
        z[5] = torch.nan
        t[5] = -100
        results[f"nan-ignored-{name}"] = ce_errors(rank, world, z, t)
        results[f"all-ignored-mean-{name}"] = ce_errors(rank, world, z, torch.full_like(t, -100))
        results[f"all-ignored-sum-{name}"] = ce_errors(
            rank, world, z, torch.full_like(t, -100), reduction="sum"
        )
    z, t = draw(7, 16, world - 1, torch.float64)  # the last rank holds no class
    results["empty-shard"] = ce_errors(rank, world, z, t, label_smoothing=0.1)
    z, t = draw(8, 16, V, torch.float64)
    lopsided = [1] + [0] * (world - 2) + [V - 1]  # rank 0 one class, the last all the rest
    results["lopsided"] = ce_errors(rank, world, z, t, sizes=lopsided, reduction="sum")
    return results


def linear_errors(rank: int, world: int, dtype: torch.dtype, seed: int, **kw) -> dict[str, Any]:
    """vocab_parallel_linear_cross_entropy against F.cross_entropy(hidden @ W.T + b)."""
    g = torch.Generator().manual_seed(seed)
    n, h_dim = 150, 24
    hidden = torch.randn(n, h_dim, generator=g, dtype=torch.float64).to(dtype)
    weight = torch.randn(V, h_dim, generator=g, dtype=torch.float64).to(dtype)
    bias = torch.randn(V, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randint(V, (n,), generator=g)
    t[::9] = -100
    cols = columns(rank, split(V, world))
    h = hidden.clone().requires_grad_()
    w, b = weight[cols].clone().requires_grad_(), bias[cols].clone().requires_grad_()
    loss = vocab_parallel_linear_cross_entropy(h, w, t, bias_shard=b, **kw)
    grad_in = incoming(loss, seed)
    loss.backward(grad_in, retain_graph=True)
    first = (h.grad.clone(), w.grad.clone(), b.grad.clone())
    h.grad, w.grad, b.grad = None, None, None
    loss.backward(grad_in)  # a second backward reruns the chunks: the same gradients
    ref_in = [float64_leaf(x) for x in (hidden, weight, bias)]
    kw.pop("chunk_size", None)
    class_weight = kw.pop("class_weight", None)
    ref = reference(ref_in[0] @ ref_in[1].T + ref_in[2], t, weight=class_weight, **kw)
    ref.backward(grad_in.double())
    refs = (ref_in[0].grad, ref_in[1].grad[cols], ref_in[2].grad[cols])
    errors = {"dtype": str(dtype).removeprefix("torch."), "loss": rel_err(loss, ref)}
    for name, ours, again, expected in zip(
        ("hidden", "weight", "bias"), first, (h.grad, w.grad, b.grad), refs, strict=True
    ):
        errors[f"grad_{name}"] = rel_err(ours, expected)
        errors[f"second_{name}"] = rel_err(again, expected)
    return errors


def linear_cases(rank: int, world: int) -> dict[str, dict]:
    """Chunks that do and do not divide N, every reduction, smoothing with class weights."""
    class_weight = torch.rand(V, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    return {
        "linear-mean-float64": linear_errors(rank, world, torch.float64, 10, chunk_size=64),
        "linear-sum-float64": linear_errors(
            rank, world, torch.float64, 11, reduction="sum", chunk_size=50, label_smoothing=0.1
        ),
        "linear-none-float64": linear_errors(
            rank, world, torch.float64, 12, reduction="none", z_loss=1e-3, softcap=6.0
        ),
        "linear-weights-float64": linear_errors(
            rank, world, torch.float64, 13, class_weight=class_weight, label_smoothing=0.1
        ),
        "linear-mean-float32": linear_errors(rank, world, torch.float32, 14, chunk_size=32),
    }


def dtensor_cases(rank: int, world: int) -> dict[str, dict]:
    """DTensor logits placed Shard(1) against loss_parallel() on the same DTensor; a weight
    DTensor placed Shard(0) for the linear loss."""
    mesh = init_device_mesh("cpu", (world,))
    results = {}
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        z, t = draw(20, 40, V, dtype)
        t[::5] = -100
        weight = torch.rand(V, generator=torch.Generator().manual_seed(21), dtype=dtype)
        # loss_parallel's backward fails with class weights and an ignored target (it gathers
        # the weight at index -100; torch 2.13): the weighted case has no ignored row
        for key, kw, target in (
            ("mean", {}, t),
            ("sum", {"reduction": "sum"}, t),
            ("none", {"reduction": "none"}, t),
            ("weight", {"weight": weight}, t.clamp(min=0)),
        ):
            ours_in = distribute_tensor(z, mesh, [Shard(1)]).requires_grad_()
            theirs_in = distribute_tensor(z, mesh, [Shard(1)]).requires_grad_()
            ours = vocab_parallel_cross_entropy(ours_in, target, **kw)
            ours.sum().backward()
            with loss_parallel():
                theirs = F.cross_entropy(theirs_in, target, **kw)
                theirs.sum().backward()
            results[f"dtensor-{key}-{name}"] = {
                "dtype": name,
                "loss": rel_err(ours.full_tensor(), theirs.full_tensor()),
                "grad": rel_err(ours_in.grad.to_local(), theirs_in.grad.to_local()),
                "placements": float(
                    isinstance(ours, DTensor)
                    and ours.placements == (Replicate(),)
                    and ours_in.grad.placements == (Shard(1),)
                ),
            }
    g = torch.Generator().manual_seed(22)
    hidden, weight = (
        torch.randn(30, 8, generator=g, dtype=torch.float64),
        torch.randn(V, 8, generator=g, dtype=torch.float64),
    )
    t = torch.randint(V, (30,), generator=g)
    w_in = distribute_tensor(weight, mesh, [Shard(0)]).requires_grad_()
    h_in = hidden.clone().requires_grad_()
    loss = vocab_parallel_linear_cross_entropy(h_in, w_in, t)
    loss.backward()
    ref_h, ref_w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = F.cross_entropy(ref_h @ ref_w.T, t)
    ref.backward()
    cols = columns(rank, split(V, world))
    results["dtensor-linear-float64"] = {
        "dtype": "float64",
        "loss": rel_err(loss.full_tensor(), ref),
        "grad_hidden": rel_err(h_in.grad, ref_h.grad),
        "grad_weight": rel_err(w_in.grad.to_local(), ref_w.grad[cols]),
        "placements": float(w_in.grad.placements == (Shard(0),)),
    }
    return results


def raised(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        call()
    except ValueError as exc:
        return {"error": str(exc)}
    return {"error": None}


def error_cases(rank: int, world: int) -> dict[str, dict]:
    """One rank (or all) with a bad input: every rank should raise the same ValueError; then a
    correct call still works (nobody was left inside a collective)."""
    z, t = draw(30, 8, V, torch.float32)
    local = z[:, columns(rank, split(V, world))]
    last = world - 1
    g = torch.Generator().manual_seed(31)
    hidden = torch.randn(8, 4, generator=g)
    weight = torch.randn(V, 4, generator=g)[columns(rank, split(V, world))]
    vpce, vplce = vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
    calls = {
        "err-target-shape": lambda: vpce(local, t[:-1] if rank == 1 else t),
        "err-target-dtype": lambda: vpce(local, t.int() if rank == 1 else t),
        "err-target-float": lambda: vpce(local, t.float() if rank == last else t),
        "err-target-values": lambda: vpce(local, t.flip(0) if rank == 1 else t),
        "err-logits-dtype": lambda: vpce(local.double() if rank == last else local, t),
        "err-logits-1d": lambda: vpce(local[0] if rank == 0 else local, t),
        "err-logits-list": lambda: vpce(local.tolist() if rank == 1 else local, t),
        "err-rows": lambda: vpce(local[:-1] if rank == 0 else local, t[:-1] if rank == 0 else t),
        "err-options": lambda: vpce(local, t, reduction="sum" if rank == 1 else "mean"),
        "err-target-range": lambda: vpce(local, t.clone().index_fill_(0, torch.tensor([2]), V)),
        "err-weight-length": lambda: vpce(local, t, weight=torch.ones(V - 1)),
        "err-softcap": lambda: vpce(local, t, softcap=0.0),
        "err-linear-hidden": lambda: vplce(hidden + rank, weight, t),
        "err-linear-hidden-size": lambda: vplce(hidden, weight[:, :3] if rank == 1 else weight, t),
        "err-linear-chunk": lambda: vplce(hidden, weight, t, chunk_size=4 + rank),
        "err-dtensor-replicated": lambda: vpce(
            distribute_tensor(z, init_device_mesh("cpu", (world,)), [Replicate()]), t
        ),
    }
    results = {name: raised(call) for name, call in calls.items()}
    results["after-errors"] = ce_errors(rank, world, z.double(), t)
    return results


def main(argv: list[str]) -> None:
    rank, world, port, folder = int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=30)
    store = dist.TCPStore("127.0.0.1", port, world, False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    try:
        results: dict[str, dict] = {}
        for cases in (ce_cases, extreme_cases, linear_cases, dtensor_cases, error_cases):
            results.update(cases(rank, world))
    finally:
        dist.destroy_process_group()
    write_text_atomic(folder / f"rank{rank}.json", dumps(results))


if __name__ == "__main__":
    main(sys.argv)
