"""Fused cross-entropy for large class counts: loss and gradient in one pass over the logits.

``cross_entropy`` and ``linear_cross_entropy`` (public functions: :mod:`.api`; the checks of
their arguments: :mod:`.checks`) run on autograd Functions that make the gradient in forward
(:mod:`.autograd`; under ``torch.compile``, custom ops: :mod:`.compiled`),
over row kernels that share one contract (:mod:`.rows`): a C kernel on CPU (:mod:`.cpu_kernel`,
``_kernel.c``), a Triton kernel on CUDA (:mod:`.triton_kernel`), the same math in torch elsewhere;
:mod:`.dispatch` picks one.  See docs/fused.md.
"""

from logloss.fused.api import LossOutput, cross_entropy, linear_cross_entropy
from logloss.fused.buffers import empty_cache
from logloss.fused.dispatch import kernel_status

__all__ = ["LossOutput", "cross_entropy", "empty_cache", "kernel_status", "linear_cross_entropy"]
