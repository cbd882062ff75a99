"""Context parallelism: one clip's token grid sharded along time over the ranks of a process group.

`TimeSharding` splits the ``(F, H, W)`` grid at window boundaries; the layers
(`LocalGlobalAttention`, `LOGOBlock`, `WindowAttention3D`, `SwinBlock3D`, and `LOGOFormer` of the
application) take it as ``cp=`` and compute the one-process function on each rank's shard. Local
attention and pooling need no communication; global attention all-gathers the M pooled tokens
(forward) and reduce-scatters their gradients (backward); shifted windows exchange ``s_f`` frames
with one neighbour. The transport is torch.distributed's functional collectives
(`logo_attn.distributed.collectives`).

Not to be confused with `logo_attn.logoformer.distributed`, the training's process set-up (device,
DDP process group).
"""

from .sharding import GATHER_MODES, TimeSharding

__all__ = ["TimeSharding", "GATHER_MODES"]
