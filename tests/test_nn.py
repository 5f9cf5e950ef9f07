"""logloss.nn against torch.nn: the same constructor and call give the same loss and gradients,
in eager mode, under torch.compile (the fused losses as opaque custom ops) and under autocast.

With ``LOGLOSS_TEST_DEVICE=cuda`` (benchmarks/gpu_check.py) the models run on the GPU.
"""

from __future__ import annotations

import pytest
import torch

from logloss import nn as lnn
from test_fused import DEVICE

C = 40


def model_with(loss: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A linear layer and the loss, its weights seeded (so that two of them are equal)."""
    torch.manual_seed(seed)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(16, C)
            self.loss = loss

        def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self.loss(self.layer(x), target)

    return Model().to(DEVICE)


def data(soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 16, generator=gen)
    if soft:
        target = torch.softmax(torch.randn(24, C, generator=gen), dim=1)
    else:
        target = torch.randint(0, C, (24,), generator=gen)
        target[3] = -100
    return x.to(DEVICE), target.to(DEVICE)


def loss_and_grads(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor):
    loss = model(x, target)
    loss.sum().backward()
    return loss.detach(), [p.grad.clone() for p in model.layer.parameters()]


def assert_same(a, b, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    torch.testing.assert_close(a[0].float(), b[0].float(), rtol=rtol, atol=atol)
    for ga, gb in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol)


PYTORCH_OPTIONS = [
    {},
    {"reduction": "sum", "label_smoothing": 0.1},
    {"reduction": "none", "ignore_index": 3},
    {"weight": "rand", "label_smoothing": 0.2},
]


@pytest.mark.parametrize("cls", [lnn.CrossEntropyLoss, lnn.FusedCrossEntropyLoss])
@pytest.mark.parametrize("options", PYTORCH_OPTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_swapping_the_class_is_the_whole_change(cls, options: dict, soft: bool) -> None:
    options = dict(options)
    if options.get("weight") == "rand":
        options["weight"] = torch.rand(C, generator=torch.Generator().manual_seed(2)) + 0.5
    if soft:
        options.pop("ignore_index", None)
    x, target = data(soft)
    if not soft:  # the ignored row carries this call's ignore_index
        target = target.where(target != -100, options.get("ignore_index", -100))
    expected = loss_and_grads(model_with(torch.nn.CrossEntropyLoss(**options)), x, target)
    actual = loss_and_grads(model_with(cls(**options)), x, target)
    assert_same(actual, expected)


def test_the_class_weights_are_a_buffer_that_follows_the_module() -> None:
    loss = lnn.FusedCrossEntropyLoss(weight=torch.ones(C))
    assert "weight" in dict(loss.named_buffers())
    assert loss.to(torch.float64).weight.dtype == torch.float64
    assert "z_loss=0.0" in repr(loss)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "reduction": "sum"}])
def test_linear_module_matches_torch_linear_cross_entropy_loss(options: dict) -> None:
    if not hasattr(torch.nn, "LinearCrossEntropyLoss"):  # older torch (2.11) lacks the reference
        pytest.skip(f"torch {torch.__version__} has no nn.LinearCrossEntropyLoss to compare with")
    x, target = data()
    torch.manual_seed(3)
    theirs = torch.nn.LinearCrossEntropyLoss(16, C, bias=True, **options).to(DEVICE)
    ours = lnn.LinearCrossEntropyLoss(16, C, bias=True, **options).to(DEVICE)
    ours.linear.load_state_dict(theirs.linear.state_dict())
    results = []
    for module in (theirs, ours):
        loss = module(x, target)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in module.linear.parameters()]))
    assert_same(results[1], results[0])


def test_linear_module_can_take_a_tied_weight() -> None:
    x, target = data()
    embedding = torch.nn.Embedding(C, 16).to(DEVICE)
    loss = lnn.LinearCrossEntropyLoss(z_loss=1e-4)(x, target, embedding.weight)
    loss.backward()
    logits = x @ embedding.weight.detach().t()
    expected = torch.nn.functional.cross_entropy(logits, target)
    lse = torch.logsumexp(logits, 1)[target != -100]
    torch.testing.assert_close(loss.detach(), expected + 1e-4 * lse.square().mean())
    assert embedding.weight.grad is not None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: lnn.FusedCrossEntropyLoss(softcap=-1.0), "softcap=-1.0 must be > 0"),
        (lambda: lnn.FusedCrossEntropyLoss(z_loss=-1.0), "z_loss=-1.0 is negative"),
        (lambda: lnn.CrossEntropyLoss(size_average=True), "size_average and reduce"),
        (lambda: lnn.FusedCrossEntropyLoss(reduce=False), "size_average and reduce"),
        (lambda: lnn.CrossEntropyLoss(reduction="avg"), "reduction='avg'"),
        (lambda: lnn.LinearCrossEntropyLoss(4, 5, out_features=(2,)), "out_features"),
        (lambda: lnn.LinearCrossEntropyLoss(4, 5, options=object()), "chunk_size="),
        (lambda: lnn.LinearCrossEntropyLoss(4), "pass both in_features and num_classes"),
    ],
)
def test_modules_refuse_options_they_cannot_honour(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_linear_module_says_how_to_call_it() -> None:
    with pytest.raises(ValueError, match=r"call it as loss\(input, target\)"):
        lnn.LinearCrossEntropyLoss(4, 5)(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(5, 4))
    with pytest.raises(ValueError, match="pass the layer's weight"):
        lnn.LinearCrossEntropyLoss()(torch.randn(2, 4), torch.tensor([0, 1]))


FUSED_OPTIONS = [
    {"weight": "rand", "label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0},
    {"reduction": "none", "z_loss": 1e-2},
]


@pytest.fixture
def fresh_compile(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """torch.compile with a clean slate: dynamo reset, Inductor's caches in a fresh folder (a
    cached graph would not notice a changed custom op)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_compile")
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
@pytest.mark.parametrize("options", FUSED_OPTIONS)
def test_a_compiled_model_gives_the_same_loss_and_gradients(backend: str, options: dict) -> None:
    options = dict(options)
    if options.get("weight") == "rand":
        options["weight"] = torch.rand(C, generator=torch.Generator().manual_seed(2)) + 0.5
    x, target = data()
    eager = loss_and_grads(model_with(lnn.FusedCrossEntropyLoss(**options)), x, target)
    compiled = torch.compile(model_with(lnn.FusedCrossEntropyLoss(**options)), backend=backend)
    assert_same(loss_and_grads(compiled, x, target), eager)


@pytest.mark.usefixtures("fresh_compile")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_a_compiled_linear_loss_gives_the_same_loss_and_gradients(reduction: str) -> None:
    x, target = data()
    results = []
    for wrap in (lambda m: m, lambda m: torch.compile(m, backend="aot_eager")):
        torch.manual_seed(4)
        module = lnn.LinearCrossEntropyLoss(16, C, bias=True, z_loss=1e-3, reduction=reduction)
        module = module.to(DEVICE)
        loss = wrap(module)(x, target)
        loss.sum().backward()
        results.append((loss.detach(), [p.grad for p in module.linear.parameters()]))
    assert_same(results[1], results[0])


@pytest.mark.usefixtures("fresh_compile")
def test_inplace_backward_under_compile_runs_eagerly_with_the_same_results() -> None:
    x, target = data()
    eager = loss_and_grads(model_with(lnn.FusedCrossEntropyLoss()), x, target)
    compiled = torch.compile(
        model_with(lnn.FusedCrossEntropyLoss(inplace_backward=True)), backend="aot_eager"
    )
    assert_same(loss_and_grads(compiled, x, target), eager)


def test_autocast_gives_pytorch_autocast_loss_and_gradients() -> None:
    # under bfloat16 autocast the layer's logits are bfloat16; PyTorch's cross_entropy then
    # runs in float32: the loss is float32, the gradient the float32 one rounded to bfloat16
    x, target = data()
    results = []
    for loss in (
        torch.nn.CrossEntropyLoss(label_smoothing=0.1),
        lnn.FusedCrossEntropyLoss(label_smoothing=0.1),
    ):
        model = model_with(loss)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            value = model(x, target)
        assert value.dtype == torch.float32
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in model.layer.parameters()]))
    assert_same(results[1], results[0], rtol=2e-2, atol=1e-3)


def test_autocast_linear_loss_casts_as_a_linear_layer_does() -> None:
    x, target = data()
    results = []
    for fused_loss in (False, True):
        torch.manual_seed(5)
        module = lnn.LinearCrossEntropyLoss(16, C, bias=True).to(DEVICE)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            if fused_loss:
                value = module(x, target)
            else:
                value = torch.nn.functional.cross_entropy(module.linear(x), target)
        assert value.dtype == torch.float32
        value.backward()
        assert module.linear.weight.grad.dtype == torch.float32
        results.append((value.detach(), [p.grad for p in module.linear.parameters()]))
    assert_same(results[1], results[0], rtol=2e-2, atol=1e-3)
