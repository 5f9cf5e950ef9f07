"""The steps of logloss.distributed in one process: shards simulated by splitting the logits.

The per-shard steps (``shard_math``: the fused row kernel, or ``shard_torch`` with class
weights) and the per-row steps (``row_math``) are plain functions of local tensors, so the
whole computation of P ranks can be replayed here: every shard's statistics, stacked as the
all-gather would, combined, reduced; every shard's gradient, concatenated.  Hypothesis draws
shapes, splits (empty shards included), options and extremes; the reference is PyTorch's
F.cross_entropy (plus z-loss and softcap composed of torch ops) in float64.  The collectives
themselves are tested in test_distributed.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _distributed_cases import float64_leaf, reference, rel_err
from logloss.distributed import shard_torch
from logloss.distributed.checks import checksums
from logloss.distributed.group import ShardLayout
from logloss.distributed.linear import default_chunk_rows
from logloss.distributed.plan import ELSEWHERE, make_plan
from logloss.distributed.row_math import (
    LossOptions,
    combine_row_stats,
    gradient_scales,
    reduce_losses,
    row_losses,
)
from logloss.distributed.shard_math import shard_gradient, shard_row_stats
from logloss.fused import cpu_kernel, rows
from logloss.fused.rows import accumulator_dtype


@pytest.fixture(params=["native", "portable", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The row kernel's backend for float32 shards: C (AVX-512 where the CPU has it), the C
    kernel's portable loops, or the torch rows."""
    monkeypatch.setattr(cpu_kernel, "PORTABLE_ONLY", request.param == "portable")
    monkeypatch.setenv("LOGLOSS_FUSED_BACKEND", "torch" if request.param == "torch" else "auto")
    return request.param


def simulate(z: torch.Tensor, t: torch.Tensor, sizes: list[int], grad_output, **kw):
    """(loss, gradient of the logits) as P ranks holding the column blocks ``sizes`` compute
    them; ``kw``: LossOptions fields (ignore_index, reduction, smoothing, ...)."""
    opts = LossOptions(n_classes=z.shape[1], **kw)
    layouts = [ShardLayout(None, r, tuple(sizes), z.device) for r in range(len(sizes))]
    plans = [make_plan(layout, opts, t, accumulator_dtype(z)) for layout in layouts]
    blocks = z.split(sizes, dim=1)
    gathered = torch.stack(
        [shard_row_stats(b, p.local_target, p.shard) for b, p in zip(blocks, plans, strict=True)]
    )
    terms = plans[0].terms
    stats = combine_row_stats(gathered, terms, opts)
    ce, zl = row_losses(stats, terms, opts)
    loss = reduce_losses(ce, zl, terms, opts.reduction)
    scales = gradient_scales(grad_output, terms, opts.reduction)
    grads = []
    for b, p in zip(blocks, plans, strict=True):
        g = torch.empty_like(b)
        shard_gradient(b, p, (0, z.shape[0]), stats, scales, g)
        grads.append(g)
    return loss, torch.cat(grads, dim=1)


@st.composite
def problems(draw: st.DrawFn) -> dict:
    n, v = draw(st.integers(1, 12)), draw(st.integers(1, 40))
    cuts = sorted(draw(st.lists(st.integers(0, v), min_size=0, max_size=3)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, v], strict=True)]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    z = torch.randn(n, v, generator=g, dtype=torch.float64) * scale
    if draw(st.booleans()):
        z[torch.rand(n, v, generator=g) < 0.3] = -torch.inf
    t = torch.randint(v, (n,), generator=g)
    t[torch.rand(n, generator=g) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = -100
    weight = torch.rand(v, generator=g, dtype=torch.float64) if draw(st.booleans()) else None
    options = {
        "ignore_index": -100,
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "smoothing": draw(st.sampled_from([0.0, 0.1, 1.0])),
        "z_loss": draw(st.sampled_from([0.0, 1e-3])),
        # a cap in proportion to the logits: at |z| > ~18 cap every 1 - tanh^2 underflows to
        # rounding noise, and a gradient made only of that is compared with noise
        "softcap": draw(st.sampled_from([None, 3.0 * scale])),
        "class_weight": weight,
    }
    return {"z": z, "t": t, "sizes": sizes, "options": options}


def reference_and_grad(z, t, grad_output, options):
    full = float64_leaf(z)
    opts = dict(options)
    ref = reference(
        full,
        t,
        weight=opts.pop("class_weight"),
        label_smoothing=opts.pop("smoothing"),
        **opts,
    )
    ref.backward(grad_output)
    return ref, full.grad


@settings(max_examples=80, deadline=None)
@given(problems(), st.sampled_from([1 << 18, 5]))
def test_simulated_ranks_match_pytorch_float64(problem: dict, chunk: int) -> None:
    """Any split of the classes (empty shards too), any row chunking, every option."""
    z, t, sizes, options = problem["z"], problem["t"], problem["sizes"], problem["options"]
    shape = (z.shape[0],) if options["reduction"] == "none" else ()
    grad_output = torch.linspace(-1.0, 2.0, z.shape[0], dtype=torch.float64).reshape(shape or -1)
    grad_output = grad_output if shape else torch.tensor(0.5, dtype=torch.float64)
    ref, ref_grad = reference_and_grad(z, t, grad_output, options)
    old = shard_torch.CHUNK_ELEMENTS, rows.ROW_CHUNK_ELEMENTS
    shard_torch.CHUNK_ELEMENTS = rows.ROW_CHUNK_ELEMENTS = chunk
    try:
        loss, grad = simulate(z, t, sizes, grad_output, **options)
    finally:
        shard_torch.CHUNK_ELEMENTS, rows.ROW_CHUNK_ELEMENTS = old
    # 1e-10 (the float64 bound): the gradient a p - b of a saturated row (p ~ 1) is
    # a difference of O(1) terms; normwise 1e-12 of its tiny value is below float64's reach
    assert rel_err(loss, ref) <= 1e-10
    valid = t != -100
    assert rel_err(grad[valid], ref_grad[valid]) <= 1e-10
    assert not grad[~valid].any()


@settings(max_examples=40, deadline=None)
@given(problems())
def test_simulated_ranks_match_pytorch_float32(problem: dict) -> None:
    """float32 shards through the fused C kernel (the torch passes with class weights): any
    split, every option and extreme, within float32 accuracy of float64 PyTorch on the same
    values (normwise, 1e-5 relative)."""
    z, t, sizes, options = problem["z"].float(), problem["t"], problem["sizes"], problem["options"]
    weight = options["class_weight"]
    options = options | {"class_weight": None if weight is None else weight.float()}
    shape = (z.shape[0],) if options["reduction"] == "none" else ()
    grad_output = torch.linspace(-1.0, 2.0, z.shape[0], dtype=torch.float64).reshape(shape or -1)
    grad_output = grad_output if shape else torch.tensor(0.5, dtype=torch.float64)
    ref, ref_grad = reference_and_grad(z, t, grad_output, options | {"class_weight": weight})
    loss, grad = simulate(z, t, sizes, grad_output, **options)
    assert rel_err(loss, ref) <= 1e-5
    valid = t != -100
    # an entry A p - b of a saturated row (p ~ 1) cancels terms of the size s (w + 2 lam lse):
    # float32 keeps 1e-5 of those, not of the difference (PyTorch's float32 neither)
    floor = _cancelled_terms(z[valid], t[valid], grad_output, options, weight)
    assert rel_err(grad[valid], ref_grad[valid]) <= 1e-5 or (
        (grad[valid].double() - ref_grad[valid]).abs().max() <= 1e-5 * floor
    )
    assert not grad[~valid].any()


def _cancelled_terms(z, t, grad_output, options, weight) -> float:
    """max over rows of |s| (w_max + 2 lam |lse|), the terms a gradient entry is a difference of
    (s: the incoming gradient over the mean's denominator)."""
    if not t.numel():
        return 0.0
    w = weight[t].sum().item() if weight is not None else float(t.numel())
    n = w if options["reduction"] == "mean" else 1.0
    s = float(grad_output.abs().max()) / max(n, 1e-300)
    lse = torch.logsumexp(z.double(), dim=1).abs()
    lse = lse[lse.isfinite()].max().item() if lse.isfinite().any() else 0.0
    w_max = 1.0 if weight is None else float(weight.max())
    return s * (w_max + 2.0 * options["z_loss"] * lse * max(n, 1.0) / max(t.numel(), 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_float32(dtype: torch.dtype) -> None:
    """Shards of float32/bfloat16/float16 logits: loss within float32 accuracy of the float64
    reference on the same values, gradient within one rounding to ``dtype`` (half an ulp of
    its largest entry) of it."""
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(16, 3000, generator=g, dtype=torch.float64) * 4).to(dtype)
    t = torch.randint(3000, (16,), generator=g)
    options = {"ignore_index": -100, "reduction": "mean", "smoothing": 0.1, "z_loss": 1e-3}
    options |= {"softcap": 10.0, "class_weight": None}
    one = torch.tensor(1.0, dtype=torch.float64)
    ref, ref_grad = reference_and_grad(z, t, one, options)
    loss, grad = simulate(z, t, [1000, 1200, 800], one, **options)
    assert loss.dtype == torch.float64  # the per-row steps; the public function casts back
    assert grad.dtype == dtype
    assert rel_err(loss, ref) <= 2e-6
    assert rel_err(grad, ref_grad) <= torch.finfo(dtype).eps / 2 + 2e-6


@pytest.mark.parametrize(
    ("dtype", "weighted"), [(torch.float32, False), (torch.float32, True), (torch.float64, False)]
)
def test_all_minus_inf_shard_row(dtype: torch.dtype, weighted: bool) -> None:
    """A row whose columns in one shard are all -inf: that shard's lse is -inf and it adds
    nothing, not a NaN (the kernel path; the torch path with class weights or float64)."""
    z = torch.tensor([[-torch.inf, -torch.inf, 1.0, 2.0]], dtype=dtype)
    weight = torch.ones(4, dtype=dtype) if weighted else None
    opts = LossOptions(-100, "mean", 0.0, 0.0, None, weight, 4)
    layouts = [ShardLayout(None, r, (2, 2), z.device) for r in (0, 1)]
    plans = [make_plan(layout, opts, torch.tensor([3]), accumulator_dtype(z)) for layout in layouts]
    assert plans[0].local_target.item() == ELSEWHERE
    first = shard_row_stats(z[:, :2], plans[0].local_target, plans[0].shard)
    hi, lo, loss = first[:, 0].tolist()
    assert (hi + lo, loss) == (-torch.inf, 0.0)
    second = shard_row_stats(z[:, 2:], plans[1].local_target, plans[1].shard)
    stats = combine_row_stats(torch.stack([first, second]), plans[0].terms, opts)
    exact = z.double()
    assert stats.lse.item() == pytest.approx(torch.logsumexp(exact, dim=1).item(), rel=1e-7)
    expected = torch.nn.functional.cross_entropy(exact, torch.tensor([3]))
    assert stats.ce.item() == pytest.approx(expected.item(), rel=1e-7)


@pytest.mark.parametrize("weighted", [False, True])
def test_near_ties_at_1e4_keep_float32_accuracy(backend: str, weighted: bool) -> None:
    """Logits of 1e4 with several near the max, float32: probabilities to 1e-6 relative.

    Regression: a log-sum-exp rounded to one float32 number (lse = max + log-sum) is off by up
    to half an ulp of 1e4 (4.9e-4), and so was every probability (1.5e-4 relative measured);
    the statistics carry the lse in float64 and the kernels split it (see fused/rows.py).
    """
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(64, 1001, generator=g, dtype=torch.float64) * 3).float()
    z[:, 5], z[:, 700], z[:, 900] = 10000.3, 10000.0, 9999.6
    t = torch.randint(1001, (64,), generator=g)
    t[:8] = 5  # loss ~0.6: lse - f_y must not lose 5e-4 either
    options = {"ignore_index": -100, "reduction": "none", "smoothing": 0.1, "z_loss": 0.0}
    weight = torch.rand(1001, generator=g) + 0.5 if weighted else None
    options |= {"softcap": None, "class_weight": weight}
    grad_output = torch.ones(64, dtype=torch.float64)
    float64_weight = None if weight is None else weight.double()
    ref, ref_grad = reference_and_grad(
        z, t, grad_output, options | {"class_weight": float64_weight}
    )
    loss, grad = simulate(z, t, [500, 501], grad_output, **options)
    assert rel_err(loss[:8], ref[:8]) <= 1e-6
    assert rel_err(grad, ref_grad) <= 1e-6


def test_checksums_tell_tensors_apart() -> None:
    """Equal tensors give equal checksums; one changed bit or two swapped rows do not."""
    g = torch.Generator().manual_seed(1)
    for x in (
        torch.randn(6, 5, generator=g, dtype=torch.float64),
        torch.randn(6, 5, generator=g).to(torch.bfloat16),
        torch.randint(1000, (6,), generator=g),
        torch.randint(200, (6, 3), generator=g).to(torch.uint8),
    ):
        assert checksums(x) == checksums(x.clone())
        flipped = x.clone()
        flipped.view(-1)[3] += 1
        assert checksums(flipped) != checksums(x)
        swapped = x[[1, 0, 2, 3, 4, 5]]
        assert checksums(swapped)[1] != checksums(x)[1]


@pytest.mark.parametrize(
    ("n", "largest_shard", "rows"),
    [(8192, 32768, 1024), (8192, 65536, 512), (8192, 1 << 20, 256), (100, 10, 100)],
)
def test_default_chunk_rows(n: int, largest_shard: int, rows: int) -> None:
    """128 MiB of float32 logits per chunk (2^27 / 4 / 32768 = 1024 rows), at least 256, <= N."""
    assert default_chunk_rows(n, largest_shard) == rows
