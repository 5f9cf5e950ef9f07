"""DTensor interop: logits sharded on the class dimension in, a replicated loss out.

A model parallelised with PyTorch's tensor-parallel API (``ColwiseParallel(use_local_output=
False)`` on the output layer) produces logits as a DTensor placed ``Shard(1)`` on a 1-D device
mesh.  ``loss_parallel()`` computes its loss by dispatching ``F.cross_entropy``'s operations on
it; logloss takes its local tensor (``to_local()``, differentiable, so the gradient comes back as
a DTensor with the same placement), the mesh's process group, and returns the loss as a
``Replicate()`` DTensor, as ``loss_parallel()`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


def is_dtensor(x: object) -> bool:
    """True for a DTensor (without importing DTensor's machinery when nobody has)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(x, module.DTensor)


def _mesh_group(x: Any, group: dist.ProcessGroup | None, name: str) -> dist.ProcessGroup:
    """The process group of a DTensor's 1-D mesh (``group`` must be None or that group)."""
    mesh = x.device_mesh
    if mesh.ndim != 1:
        raise ValueError(
            f"{name} is a DTensor on a {mesh.ndim}-D device mesh; logloss.distributed takes a "
            "1-D mesh (slice the tensor-parallel dimension: mesh['tp'])"
        )
    mesh_group = mesh.get_group()
    if group is not None and group is not mesh_group:
        raise ValueError(
            f"group= names another process group than {name}'s device mesh; leave group=None "
            "with DTensor inputs (the mesh gives the group)"
        )
    return mesh_group


def _require_placement(x: Any, dim: int | None, name: str) -> None:
    """``x`` placed Shard(dim) (or Replicate() for ``dim=None``) on its 1-D mesh."""
    placement = x.placements[0]
    ok = placement.is_replicate() if dim is None else placement.is_shard(dim % x.dim())
    if not ok:
        want = "Replicate()" if dim is None else f"Shard({dim})"
        raise ValueError(
            f"{name} is a DTensor placed {placement!r}; logloss.distributed needs {want} "
            "(redistribute it, or pass local tensors and group=)"
        )


def local_part(x: Any, dim: int | None, name: str) -> Any:
    """The local tensor of a DTensor placed Shard(dim) (Replicate() for None); others as is."""
    if not is_dtensor(x):
        return x
    _require_placement(x, dim, name)
    return x.to_local()


def unwrap(
    sharded: Any, dim: int, name: str, group: dist.ProcessGroup | None
) -> tuple[Any, dist.ProcessGroup | None, Callable[[torch.Tensor], Any]]:
    """(local tensor, group, wrap) for the sharded input ``sharded`` (logits on dim 1, or a
    weight on dim 0); ``wrap`` turns the loss into a Replicate() DTensor when ``sharded`` is a
    DTensor, and is the identity otherwise."""
    if not is_dtensor(sharded):
        return sharded, group, lambda loss: loss
    # lazy: DTensor's machinery is imported only for DTensor inputs (is_dtensor needs none)
    from torch.distributed.tensor import DTensor, Replicate

    mesh_group = _mesh_group(sharded, group, name)
    local = local_part(sharded, dim, name)
    mesh = sharded.device_mesh
    return local, mesh_group, lambda loss: DTensor.from_local(loss, mesh, [Replicate()])
