"""The dense network: shapes, parameter count, logits, architecture checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from logloss.training.model import Architecture, DenseNet, check_state_dict


def test_parameter_count_matches_the_formula():
    # sum over layers of (inputs + 1) * outputs: 784-256-256-10
    expected = (784 + 1) * 256 + (256 + 1) * 256 + (256 + 1) * 10
    net = DenseNet(Architecture(hidden=(256, 256)))
    assert sum(p.numel() for p in net.parameters()) == expected == 269_322


def test_logits_equal_the_written_out_network():
    torch.manual_seed(0)
    net = DenseNet(Architecture(hidden=(5, 4), input_shape=(3, 3), num_classes=6)).double()
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    l1, l2, l3 = (m for m in net.layers if isinstance(m, torch.nn.Linear))
    h = torch.relu(x.reshape(7, 9) @ l1.weight.T + l1.bias)
    h = torch.relu(h @ l2.weight.T + l2.bias)
    expected = h @ l3.weight.T + l3.bias  # logits: no softmax inside the model
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net(x.reshape(7, 9)), expected, rtol=1e-12, atol=1e-12)


def test_untrained_logits_are_small_so_the_loss_starts_near_ln_c():
    torch.manual_seed(1)
    net = DenseNet(Architecture(hidden=(256, 256)))
    x = torch.rand(512, 28, 28)  # pixel-like inputs
    loss = F.cross_entropy(net(x), torch.randint(0, 10, (512,)))
    assert abs(loss.item() - torch.log(torch.tensor(10.0)).item()) < 0.15


def test_dropout_layers_are_placed_after_each_hidden_layer():
    net = DenseNet(Architecture(hidden=(8, 8), dropout=0.25))
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == [
        "Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"
    ]  # fmt: skip
    net.eval()
    x = torch.randn(4, 28, 28)
    torch.testing.assert_close(net(x), net(x))  # eval mode: dropout off, deterministic


def test_architecture_round_trips_through_json_dict():
    arch = Architecture(input_shape=(8, 8), hidden=(32, 16), num_classes=10, dropout=0.1)
    data = arch.to_dict()
    assert data == {
        "kind": "dense",
        "input_shape": [8, 8],
        "hidden": [32, 16],
        "num_classes": 10,
        "dropout": 0.1,
    }
    assert Architecture.from_dict(data) == arch
    assert arch.input_size == 64


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden": (0,)}, "hidden layer widths must be whole numbers from 1 to 16,384"),
        ({"num_classes": 1}, "num_classes must be at least 2"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"input_shape": (0, 28)}, "input_shape must be positive"),
        # issue 13, item 3: types are checked, never rounded or overflowed
        ({"hidden": (256.7,)}, r"whole numbers from 1 to 16,384, got \[256.7\]"),
        ({"hidden": (float("inf"), 256)}, r"whole numbers .* got \[inf, 256\]"),
        ({"hidden": (True,)}, "whole numbers"),
        ({"hidden": "256"}, "hidden must be a list of 0 to 16 layer widths"),
        ({"num_classes": 10.0}, "num_classes must be at least 2 and at most 1000, got 10.0"),
        ({"dropout": "0.1"}, r"dropout must be a number in \[0, 1\), got '0.1'"),
        ({"dropout": float("nan")}, r"dropout must be in \[0, 1\)"),
        ({"input_shape": (28.0, 28)}, "input_shape must be positive sizes"),
    ],
)
def test_bad_architectures_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        Architecture(**changes)


def test_unknown_architecture_kind_or_field_is_an_error():
    with pytest.raises(ValueError, match="unsupported architecture kind 'conv'"):
        Architecture.from_dict({"kind": "conv"})
    with pytest.raises(ValueError, match=r"unknown architecture field\(s\) \['layers'\]"):
        Architecture.from_dict({"kind": "dense", "layers": 3})


def test_mismatched_weights_are_explained():
    small = DenseNet(Architecture(hidden=(32,)))
    other = DenseNet(Architecture(hidden=(64,))).state_dict()
    with pytest.raises(
        ValueError, match=r"layers.1.weight has shape \[64, 784\], the architecture"
    ):
        check_state_dict(small, other, "x.safetensors")
    deeper = DenseNet(Architecture(hidden=(32, 32))).state_dict()
    with pytest.raises(ValueError, match=r"unexpected \['layers.5.bias', 'layers.5.weight'\]"):
        check_state_dict(small, deeper, "x.safetensors")
    check_state_dict(
        small, DenseNet(Architecture(hidden=(32,))).state_dict(), "ok"
    )  # same shapes: no error


def test_densenet_keeps_its_architecture():
    arch = Architecture(hidden=(3,))
    assert DenseNet(arch).architecture is arch
