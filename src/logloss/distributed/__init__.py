"""Cross-entropy over a vocabulary split across processes: never gather, never materialise.

When the output layer of a model is split by class across the ranks of a process group (tensor
parallelism: rank r holds rows [offset_r, offset_r + V_r) of the output weight, so columns of
the logits), these losses exchange only O(N) numbers per rank over ``torch.distributed`` (any
backend: gloo on CPU, NCCL on CUDA):

- :func:`vocab_parallel_cross_entropy`: from this rank's (N, V_r) logits (or a DTensor placed
  Shard(1), as ``loss_parallel()`` takes);
- :func:`vocab_parallel_linear_cross_entropy`: from the replicated hidden states and this rank's
  (V_r, H) weight rows, chunk by chunk, never holding more than a chunk of local logits.

See docs/vocab-parallel.md.
"""

from logloss.distributed.cross_entropy import vocab_parallel_cross_entropy
from logloss.distributed.linear import vocab_parallel_linear_cross_entropy

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]
