"""TimeSharding: one clip's (F, H, W) token grid split along time over the ranks of a process group."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..checks import as_grid, as_int, as_window
from ..geometry import clip_window
from ..ops import global_attention
from . import split
from .collectives import GatherTokens, PassFrames

__all__ = ["TimeSharding", "GATHER_MODES"]

GATHER_MODES = ("input", "kv")


def _resolve_group(group, mesh_dim) -> dist.ProcessGroup:
    """A ProcessGroup from a ProcessGroup, a 1-D DeviceMesh, or a DeviceMesh and one of its dims."""
    if isinstance(group, dist.ProcessGroup):
        if mesh_dim is not None:
            raise TypeError("time sharding: mesh_dim is only for a DeviceMesh group")
        return group
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(group, DeviceMesh):
        if mesh_dim is None and group.ndim != 1:
            raise ValueError(f"time sharding: a {group.ndim}-D DeviceMesh needs mesh_dim (the context dimension)")
        return group.get_group(mesh_dim if mesh_dim is not None else 0)
    raise TypeError(f"time sharding: group must be a torch.distributed ProcessGroup or DeviceMesh, got "
                    f"{type(group).__name__}")


class TimeSharding:
    """The time sharding of one clip's ``(F, H, W)`` token grid over the ranks of `group`.

    Rank r owns the grid frames ``frames[r]`` = ``[start, stop)``, cut at multiples of the temporal
    window f (see `logo_attn.distributed.split`): whole windows spread evenly, the trailing partial
    window with the last rank; ``frame_counts`` chooses the split instead (same rules, checked).
    Prefix tokens (CLS, registers) belong to rank 0. A rank's shard of ``(B, P + F*H*W, C)`` tokens
    is ``(B, P_r + (stop - start)*H*W, C)``, P_r = P on rank 0 and 0 elsewhere (`shard`).

    Layers given ``cp=sharding`` compute the one-process function on their shards: local attention
    and pooling need nothing from other ranks; global attention all-gathers the pooled tokens
    (``gather="input"``: the pooled, un-normalised tokens, each rank projecting all M of them to K
    and V, or ``gather="kv"``: each rank's own K and V, twice the bytes and no repeated
    projection); shifted windows hand ``s_f`` frames to the neighbour before and back after.
    Backward sends the adjoint (reduce-scatter, the frames' gradients back). Parameter gradients of
    a rank cover its own tokens: their sum over the group is the one-process gradient (DDP over the
    whole world, or over a data x context DeviceMesh, adds them up).

    Construction is collective: every rank of `group` must build the same sharding (the grid,
    window and split are compared across the group, a mismatch raises ValueError on every rank).
    On a group of one rank the layers take their one-process path.

    Args:
        group: a ProcessGroup, a 1-D DeviceMesh, or a DeviceMesh with `mesh_dim`.
        grid: ``(F, H, W)`` of the whole clip.
        window: ``(f, h, w)``; only f matters for the cuts (clipped to the grid).
        frame_counts: optional frames per rank.
        gather: ``"input"`` or ``"kv"`` (see above).
        mesh_dim: the DeviceMesh dimension (name or index) to shard over.
    """

    def __init__(self, group, grid: Sequence[int], window: Sequence[int], *, frame_counts: Sequence[int] | None = None,
                 gather: str = "input", mesh_dim: int | str | None = None) -> None:
        if gather not in GATHER_MODES:
            raise ValueError(f"time sharding: gather must be one of {GATHER_MODES}, got {gather!r}")
        self.group = _resolve_group(group, mesh_dim)
        self.size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.group_name = self.group.group_name
        self.gather = gather
        refusal = None
        try:  # checked before the collective below, which every rank must reach even with bad arguments
            self.grid = as_grid(grid)
            self.window = clip_window(self.grid, as_window(window))
            self.frames = self._split(frame_counts)
        except (TypeError, ValueError) as error:
            refusal = error
        self._seed = self._agree(refusal)
        self._draws = 0

    def _split(self, frame_counts: Sequence[int] | None) -> list[tuple[int, int]]:
        f = self.window[0]
        if frame_counts is None:
            return split.split_frames(self.grid[0], f, self.size)
        counts = [as_int(c, "frame_counts") for c in frame_counts]
        if len(counts) != self.size:
            raise ValueError(f"time sharding: frame_counts has {len(counts)} entries for {self.size} ranks")
        return split.check_frames(counts, self.grid[0], f)

    def _agree(self, refusal: Exception | None) -> int:
        """Compare (grid, window, split) across the group, so that a rank built differently fails
        here on every rank instead of hanging in a later collective; returns rank 0's random seed,
        shared so that stochastic-depth masks agree (see `same_random`)."""
        if self.size == 1:
            if refusal is not None:
                raise refusal
            return 0
        length = 1 + 6 + 2 * self.size
        if refusal is None:
            mine = [1, *self.grid, *self.window, *(s for r in self.frames for s in r)]
        else:
            mine = [0] * length
        seed = torch.initial_seed() % 2**62 if self.rank == 0 else 0  # reproducible, draws nothing
        mine = torch.tensor([*mine, seed], dtype=torch.int64)
        every = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(every, mine, group=self.group)
        if refusal is not None:
            raise refusal
        for rank, theirs in enumerate(every):
            if not theirs[0]:
                raise ValueError(f"time sharding: rank {rank} of the group refused its arguments (its own error says "
                                 f"why), so rank {self.rank} cannot shard either")
            if not torch.equal(theirs[:-1], mine[:-1]):
                raise ValueError(f"time sharding: rank {rank} has grid, window, frame ranges {theirs[1:-1].tolist()} but "
                                 f"rank {self.rank} has {mine[1:-1].tolist()}; every rank of the group must shard the "
                                 "same grid the same way")
        return int(every[0][-1])

    # ---- geometry of this rank ---------------------------------------------------------------

    @property
    def sharded(self) -> bool:
        """False on a group of one rank: layers then run their one-process path."""
        return self.size > 1

    @property
    def frame_range(self) -> tuple[int, int]:
        return self.frames[self.rank]

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    @property
    def is_last(self) -> bool:
        return self.rank == self.size - 1

    def local_frames(self) -> int:
        start, stop = self.frame_range
        return stop - start

    def local_grid(self) -> tuple[int, int, int]:
        return self.local_frames(), self.grid[1], self.grid[2]

    def local_prefix(self, prefix: int) -> int:
        return prefix if self.is_first else 0

    def check_layer(self, grid: Sequence[int], window: Sequence[int], who: str) -> tuple[int, int, int]:
        """The local grid for a layer of this (global) `grid` and `window`; refuses a grid other than
        the sharding's and a temporal window the cuts do not respect."""
        grid = as_grid(grid)
        if grid != self.grid:
            raise ValueError(f"{who}: grid {grid} is not the grid {self.grid} of its time sharding (cp); pass the "
                             "whole clip's grid, each rank its own shard of the tokens")
        f = clip_window(grid, window)[0]
        cuts = [start for start, _ in self.frames[1:]]
        if any(c % f for c in cuts):
            raise ValueError(f"{who}: the time sharding cuts the frames at {cuts}, not all multiples of this layer's "
                             f"temporal window {f}")
        return self.local_grid()

    def check_local_grid(self, local_grid: Sequence[int], window: Sequence[int], who: str) -> tuple[int, int, int]:
        """The clip's grid for a layer handed this rank's ``(frames, H, W)`` block; refuses a block
        that is not this rank's shard of the sharding's grid."""
        if tuple(local_grid) != self.local_grid():
            raise ValueError(f"{who}: rank {self.rank} holds frames {self.frame_range} of grid {self.grid}, i.e. a "
                             f"{self.local_grid()} block, got a {tuple(local_grid)} block")
        self.check_layer(self.grid, window, who)
        return self.grid

    # ---- tokens ------------------------------------------------------------------------------

    def _token_range(self, prefix: int) -> tuple[int, int]:
        start, stop = self.frame_range
        plane = self.grid[1] * self.grid[2]
        return (0 if self.is_first else prefix + start * plane), prefix + stop * plane

    def _check_tokens(self, x: Tensor, expected: int, what: str) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != expected:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"time sharding: {what} must be (B, {expected}, C) on rank {self.rank}, got {shape}")

    def shard(self, x: Tensor, prefix: int = 0) -> Tensor:
        """This rank's tokens of ``(B, prefix + F*H*W, C)``: a slice (a view), no communication."""
        prefix = as_int(prefix, "prefix")
        self._check_tokens(x, prefix + math.prod(self.grid), f"shard's x (prefix {prefix} + grid {self.grid})")
        lo, hi = self._token_range(prefix)
        return x[:, lo:hi]

    def shard_frames(self, x: Tensor, dim: int = 1) -> Tensor:
        """This rank's frames of a tensor with the F frames along `dim` (clips (B, T, 3, H, W), Swin's
        (B, D, H, W, C)): a view."""
        if not isinstance(x, Tensor) or x.dim() <= dim or x.shape[dim] != self.grid[0]:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"time sharding: shard_frames' x needs the grid's {self.grid[0]} frames along dim {dim}, "
                             f"got {shape}")
        start, stop = self.frame_range
        return x.narrow(dim, start, stop - start)

    def token_counts(self, prefix: int = 0) -> tuple[int, ...]:
        plane = self.grid[1] * self.grid[2]
        return tuple((stop - start) * plane + (prefix if r == 0 else 0) for r, (start, stop) in enumerate(self.frames))

    def gather_tokens(self, x: Tensor, counts: Sequence[int]) -> Tensor:
        """Every rank's ``(B, counts[r], C)`` chunk in rank order, on every rank; backward sums the
        gradients over the group and returns each rank its own chunk's."""
        self._check_tokens(x, counts[self.rank], "the gathered chunk")
        if not self.sharded:
            return x
        return GatherTokens.apply(x, tuple(counts), self.rank, self.group_name)

    def unshard(self, y: Tensor, prefix: int = 0) -> Tensor:
        """The whole ``(B, prefix + F*H*W, C)`` from every rank's shard, on every rank (all-gather;
        its backward is the reduce-scatter)."""
        return self.gather_tokens(y, self.token_counts(as_int(prefix, "prefix")))

    def broadcast_prefix(self, x: Tensor, prefix: int) -> Tensor:
        """Rank 0's first `prefix` tokens of its shard `x`, on every rank (e.g. the CLS token)."""
        counts = (prefix,) + (0,) * (self.size - 1)
        return self.gather_tokens(x[:, : self.local_prefix(prefix)], counts)

    # ---- global attention --------------------------------------------------------------------

    def pooled_counts(self, window: Sequence[int], prefix: int) -> tuple[int, ...]:
        """Keys each rank contributes to global attention: its pooled windows (rank 0: plus the prefix)."""
        window = clip_window(self.grid, window)
        plane = -(-self.grid[1] // window[1]) * -(-self.grid[2] // window[2])
        counts = []
        for r, frames in enumerate(self.frames):
            first, stop = split.window_range(frames, window[0])
            counts.append((stop - first) * plane + (prefix if r == 0 else 0))
        return tuple(counts)

    def global_attention(self, q: Tensor, summary: Tensor, kv, window: Sequence[int], prefix: int,
                         backend: str = "auto", attend=None) -> Tensor:
        """Global attention of this rank's queries `q` (B, L, heads, d) over every rank's keys.

        `summary` is this rank's ``[prefix ; pooled windows]`` (B, P_r + M_r, C); ``kv(t)`` maps such
        tokens to ``(k, v)`` of shape (B, L, heads, d) (the layer's norm and projection); `attend`
        replaces the op (the layer's dropout path)."""
        counts = self.pooled_counts(window, prefix)
        if self.gather == "input":
            k, v = kv(self.gather_tokens(summary, counts))
        else:
            k, v = kv(summary)
            heads = k.shape[2:]
            both = self.gather_tokens(torch.cat([k.flatten(2), v.flatten(2)], dim=2), counts)
            k, v = (t.unflatten(2, heads) for t in both.chunk(2, dim=2))
        if attend is not None:
            return attend(q, k, v)
        return global_attention(q, k, v, backend=backend)

    # ---- shifted windows ---------------------------------------------------------------------

    def to_shifted(self, x: Tensor, shift: int, dim: int = 1) -> Tensor:
        """This rank's frames (along `dim`) -> its shifted domain: hand the first `shift` frames to the
        previous rank, append the next rank's first `shift` frames."""
        if not self.sharded or shift == 0:
            return x
        x = x.movedim(dim, 1)
        head = x[:, :shift] if not self.is_first else x[:, :0]
        received = PassFrames.apply(head, -1, self.rank, self.size, shift, self.group_name)
        kept = x if self.is_first else x[:, shift:]
        return torch.cat([kept, received], dim=1).movedim(1, dim)

    def from_shifted(self, y: Tensor, shift: int, dim: int = 1) -> Tensor:
        """The inverse of `to_shifted`: hand the outputs of the next rank's frames back to it."""
        if not self.sharded or shift == 0:
            return y
        y = y.movedim(dim, 1)
        tail = y.shape[1] - (0 if self.is_last else shift)
        received = PassFrames.apply(y[:, tail:], 1, self.rank, self.size, shift, self.group_name)
        return torch.cat([received, y[:, :tail]], dim=1).movedim(1, dim)

    def local_shift(self, shift: Sequence[int]) -> tuple[int, int, int]:
        """The shift of the op this rank runs on its shifted domain (temporal: see `split.local_shift`)."""
        return split.local_shift(self.rank, shift[0]), shift[1], shift[2]

    def time_padding(self, window: Sequence[int]) -> int:
        """Zero frames a zero-padding layer appends here: the clip's padding, on the last rank only."""
        return -self.grid[0] % clip_window(self.grid, window)[0] if self.is_last else 0

    # ---- randomness --------------------------------------------------------------------------

    @contextlib.contextmanager
    def same_random(self) -> Iterator[None]:
        """Draw the same random numbers on every rank of the group inside this block (stochastic
        depth masks a whole sample, so the ranks of one clip must agree): the global RNG is forked
        and seeded from a seed the group shares and a count of the draws so far."""
        if not self.sharded:
            yield
            return
        self._draws += 1
        seed = (self._seed + self._draws) % 2**63
        devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []  # this rank's GPU only
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(seed)
            if devices:
                torch.cuda.manual_seed(seed)
            yield
