"""Drop-in ``torch.nn`` cross-entropy modules: swapping the class is the whole change.

- :class:`CrossEntropyLoss`: ``torch.nn.CrossEntropyLoss``'s constructor and call, computed by
  :func:`logloss.losses.cross_entropy` (the article's math, plain torch operations).
- :class:`FusedCrossEntropyLoss`: the same constructor and call, computed by
  :func:`logloss.fused.cross_entropy` (gradient made in forward), with its extra options
  (z-loss, softcap, classes last, the lse) as keywords.
- :class:`LinearCrossEntropyLoss`: ``torch.nn.LinearCrossEntropyLoss``'s constructor and call
  (it holds the output layer), computed by :func:`logloss.fused.linear_cross_entropy`; or,
  built without ``in_features``/``num_classes``, it takes the layer's weight at each call (a
  tied embedding).

Options a module cannot honour are refused when it is built (``ValueError``), never ignored:
PyTorch's deprecated ``size_average``/``reduce``, ``out_features``, chunking ``options``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from logloss import fused, losses
from logloss.fused.checks import check_options


def _refuse_legacy(size_average: Any, reduce: Any) -> None:
    if size_average is not None or reduce is not None:
        raise ValueError(
            "size_average and reduce are deprecated in PyTorch and not supported here; use "
            "reduction='mean', 'sum' or 'none'"
        )


class CrossEntropyLoss(nn.Module):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`logloss.losses.cross_entropy`.

    >>> loss = CrossEntropyLoss(label_smoothing=0.1)
    >>> round(loss(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])).item(), 4)
    0.3365
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: Any = None,
        ignore_index: int = -100,
        reduce: Any = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        _refuse_legacy(size_average, reduce)
        check_options(reduction, label_smoothing, 0.0, None)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return losses.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class FusedCrossEntropyLoss(nn.Module):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`logloss.fused.cross_entropy`.

    The keyword-only options are :func:`logloss.fused.cross_entropy`'s; with ``return_lse`` or
    ``return_z_loss`` a call returns a :class:`logloss.fused.LossOutput`.

    >>> loss = FusedCrossEntropyLoss(z_loss=1e-4)
    >>> round(loss(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])).item(), 4)
    0.1703
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: Any = None,
        ignore_index: int = -100,
        reduce: Any = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        class_dim: int = 1,
        return_lse: bool = False,
        return_z_loss: bool = False,
        inplace_backward: bool = False,
    ) -> None:
        super().__init__()
        _refuse_legacy(size_average, reduce)
        check_options(reduction, label_smoothing, z_loss, softcap)
        self.register_buffer("weight", weight)
        self.options = {
            "ignore_index": ignore_index,
            "reduction": reduction,
            "label_smoothing": label_smoothing,
            "z_loss": z_loss,
            "softcap": softcap,
            "class_dim": class_dim,
            "return_lse": return_lse,
            "return_z_loss": return_z_loss,
            "inplace_backward": inplace_backward,
        }

    def forward(self, input: Tensor, target: Tensor) -> Tensor | fused.LossOutput:
        return fused.cross_entropy(input, target, weight=self.weight, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class LinearCrossEntropyLoss(nn.Module):
    """``torch.nn.LinearCrossEntropyLoss`` computed by :func:`logloss.fused.linear_cross_entropy`.

    ``LinearCrossEntropyLoss(in_features, num_classes, bias=...)`` holds the output layer
    (``self.linear``) and is called as ``loss(input, target)``; built without them it holds
    none and is called as ``loss(input, target, linear_weight, linear_bias)`` (e.g. a tied
    embedding's weight).  ``weight`` is the class weights, as in PyTorch.

    >>> loss = LinearCrossEntropyLoss(4, 10)
    >>> loss(torch.zeros(3, 4), torch.tensor([0, 5, 9])).item() == torch.tensor(10.0).log().item()
    True
    """

    def __init__(
        self,
        in_features: int | None = None,
        num_classes: int | None = None,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
        reduction: str = "mean",
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: Any = None,
        z_loss: float = 0.0,
        softcap: float | None = None,
        shift_labels: bool = False,
        chunk_size: int | None = None,
        accum_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _refuse_unsupported(out_features, options, in_features, num_classes)
        check_options(reduction, label_smoothing, z_loss, softcap)
        self.linear = None
        if in_features is not None:
            self.linear = nn.Linear(in_features, num_classes, bias=bias, device=device, dtype=dtype)
        self.register_buffer("weight", weight)
        self.options = {
            "ignore_index": -100 if ignore_index is None else ignore_index,
            "reduction": reduction,
            "label_smoothing": label_smoothing,
            "z_loss": z_loss,
            "softcap": softcap,
            "shift_labels": shift_labels,
            "chunk_size": chunk_size,
            "accum_dtype": accum_dtype,
        }

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        linear_weight: Tensor | None = None,
        linear_bias: Tensor | None = None,
    ) -> Tensor | fused.LossOutput:
        if (linear_weight is None) == (self.linear is None):
            raise ValueError(
                "LinearCrossEntropyLoss built with in_features and num_classes holds its output "
                "layer: call it as loss(input, target); built without them, pass the layer's "
                "weight: loss(input, target, linear_weight, linear_bias)"
            )
        if self.linear is not None:
            linear_weight, linear_bias = self.linear.weight, self.linear.bias
        return fused.linear_cross_entropy(
            input,
            linear_weight,
            target,
            bias=linear_bias,
            class_weight=self.weight,
            **self.options,
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def _refuse_unsupported(
    out_features: Any, options: Any, in_features: Any, num_classes: Any
) -> None:
    """``LinearCrossEntropyLoss``'s PyTorch arguments it cannot honour."""
    if tuple(out_features) != ():
        raise ValueError(
            f"out_features={out_features!r}: K-dimensional outputs are not supported; flatten "
            "the extra dimensions into the batch (input (N, H), target (N,))"
        )
    if options is not None:
        raise ValueError(
            "options (torch.nn.LinearCrossEntropyOptions) configures PyTorch's own chunking; "
            "here use chunk_size= and accum_dtype="
        )
    if (in_features is None) != (num_classes is None):
        raise ValueError(
            "pass both in_features and num_classes (the module holds the output layer) or "
            f"neither (the layer's weight comes with each call); got in_features={in_features!r}"
            f", num_classes={num_classes!r}"
        )
