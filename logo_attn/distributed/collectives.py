"""The communication of context parallelism: autograd Functions over torch.distributed's functional
collectives.

The functional collectives (``torch.distributed._functional_collectives``) are what
``torch.compile`` traces into its graph without a break; their own autograd support changed across
torch releases, so the Functions here call them with autograd off and write every backward out as
the adjoint collective: the adjoint of an all-gather is a reduce-scatter (sum), the adjoint of
handing frames to a neighbour is handing the gradient back. Every Function takes the group by name
(a plain string, which compiled graphs carry as a constant) and only static, per-rank sizes, so the
same code runs eagerly and compiled.

Token counts may differ between ranks (uneven splits, rank 0's prefix tokens): the collectives
need equal chunks, so each rank pads its chunk to the largest one and the receivers drop the
padding again (the counts are known everywhere, nothing about sizes is communicated).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from torch import Tensor

# torch 2.13 renamed the tensor-returning collectives (*_single) and deprecated the old names;
# torch 2.11 has only the old ones. Same signatures.
_all_gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor
_reduce_scatter = getattr(funcol, "reduce_scatter_single", None) or funcol.reduce_scatter_tensor


def _tokens_first(x: Tensor) -> Tensor:
    """(B, L, C) -> (L, B, C): the collectives concatenate and split along dim 0."""
    return x.transpose(0, 1).contiguous()


def gather_tokens(x: Tensor, counts: Sequence[int], group_name: str) -> Tensor:
    """Every rank's (B, counts[r], C) chunk, concatenated in rank order along dim 1, on every rank."""
    size = max(counts)
    chunk = _tokens_first(F.pad(x, (0, 0, 0, size - x.shape[1])))
    gathered = funcol.wait_tensor(_all_gather(chunk, 0, group_name))
    pieces = [gathered[r * size: r * size + n] for r, n in enumerate(counts)]
    return torch.cat(pieces).transpose(0, 1)


def reduce_scatter_tokens(grad: Tensor, counts: Sequence[int], rank: int, group_name: str) -> Tensor:
    """The adjoint of `gather_tokens`: this rank's chunk of the sum of every rank's (B, sum(counts), C)."""
    size = max(counts)
    padded = [F.pad(piece, (0, 0, 0, size - piece.shape[1])) for piece in grad.split(list(counts), dim=1)]
    summed = funcol.wait_tensor(_reduce_scatter(_tokens_first(torch.cat(padded, dim=1)), "sum", 0, group_name))
    return summed[: counts[rank]].transpose(0, 1)


class GatherTokens(torch.autograd.Function):
    """All-gather of per-rank token chunks forward, reduce-scatter (sum) of their gradients backward."""

    @staticmethod
    def forward(x: Tensor, counts: tuple[int, ...], rank: int, group_name: str) -> Tensor:
        return gather_tokens(x, counts, group_name)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.counts, ctx.rank, ctx.group_name = inputs

    @staticmethod
    def backward(ctx, grad: Tensor):
        return reduce_scatter_tokens(grad, ctx.counts, ctx.rank, ctx.group_name), None, None, None


def pass_frames(part: Tensor, step: int, rank: int, size: int, frames: int, group_name: str) -> Tensor:
    """Hand `part` (frames along dim 1; `frames` of them, or none on the rank that has no such
    neighbour) to rank ``rank + step`` and return what rank ``rank - step`` handed here (``frames``
    frames, or none). One all-to-all whose only non-empty splits are the neighbours'."""
    sends = 0 <= rank + step < size
    receives = 0 <= rank - step < size
    splits_in = [frames if sends and r == rank + step else 0 for r in range(size)]
    splits_out = [frames if receives and r == rank - step else 0 for r in range(size)]
    moved = part.movedim(1, 0).contiguous()
    received = funcol.wait_tensor(funcol.all_to_all_single(moved, splits_out, splits_in, group_name))
    return received.movedim(0, 1)


class PassFrames(torch.autograd.Function):
    """`pass_frames` forward; backward hands the gradient of what was received back the other way."""

    @staticmethod
    def forward(part: Tensor, step: int, rank: int, size: int, frames: int, group_name: str) -> Tensor:
        return pass_frames(part, step, rank, size, frames, group_name)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.step, ctx.rank, ctx.size, ctx.frames, ctx.group_name = inputs

    @staticmethod
    def backward(ctx, grad: Tensor):
        back = pass_frames(grad, -ctx.step, ctx.rank, ctx.size, ctx.frames, ctx.group_name)
        return back, None, None, None, None, None
