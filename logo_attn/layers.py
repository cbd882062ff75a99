"""LocalGlobalAttention, the LOGO-Former layer built on the three ops, and the blocks around it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import backends, reference
from .checks import as_grid, as_window, check_attention_dropout, check_heads, check_prefix_tokens
from .distributed import TimeSharding
from .geometry import clip_window
from .ops import global_attention, local_attention, window_pool

__all__ = ["LocalGlobalAttention", "LOGOBlock", "Block", "Mlp"]


class LocalGlobalAttention(nn.Module):
    """Local window attention followed by global attention over window-pooled keys (LOGO-Former).

    With ``x = [X_prefix ; X_grid]`` of shape ``(B, P + F*H*W, dim)`` (P = ``num_prefix_tokens``,
    e.g. a CLS token, then the grid tokens in row-major (F, H, W) order), the layer computes the
    paper's eqs. (1) and (3)-(6):

        Y_grid = X_grid + Proj_l(MSA_local(LN_1(X_grid)))          (1)  attention inside each window
        Y      = [X_prefix ; Y_grid]
        Q      = W_Q LN_q(Y)                                       (3)  every token queries
        K, V   = W_{K,V} LN_kv([Y_prefix ; Pool(Y_grid)])          (4), (5)
        out    = Y + Proj_g(softmax(Q K^T / sqrt(d)) V)            (6)

    CLS treatment (the paper leaves it open): prefix tokens skip local attention (they belong to
    no window) and pass through it unchanged; in the global step they query every key and are
    themselves keys beside the pooled windows, so the CLS token reads the whole clip and every
    grid token reads the CLS token. ``Pool`` is ``"avg"`` (``window_pool``: the mean of each
    window's tokens, border windows averaging only their own) or ``"conv"`` (a depthwise Conv3d with
    kernel = stride = window over the grid zero-padded to whole windows).

    Argument names follow timm's ``Attention``. ``attn_drop`` drops attention probabilities; no
    kernel backend implements that, so while training with ``attn_drop > 0`` the layer computes
    attention with the PyTorch reference (and warns once at construction if a kernel backend was
    asked for explicitly).

    Args:
        dim: token width; ``dim % num_heads == 0``.
        num_heads: attention heads, shared by both steps.
        window: ``(f, h, w)`` of the local windows and of the pooling.
        pool: ``"avg"`` or ``"conv"``.
        num_prefix_tokens: tokens before the grid (CLS, registers).
        qkv_bias: bias in the q/k/v projections.
        attn_drop, proj_drop: dropout on attention probabilities and on both output projections.
        norm_layer: the LN of eqs. (1), (3)-(5).
        backend: op backend, see ``logo_attn.available_backends()``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        window: Sequence[int] = (2, 7, 7),
        pool: str = "avg",
        num_prefix_tokens: int = 0,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        num_heads = check_heads(dim, num_heads)
        if pool not in ("avg", "conv"):
            raise ValueError(f"pool must be 'avg' or 'conv', got {pool!r}")
        backends.check_name(backend)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = as_window(window)
        self.pool = pool
        self.num_prefix_tokens = check_prefix_tokens(num_prefix_tokens)
        self.attn_drop = check_attention_dropout(attn_drop, backend)
        self.backend = backend

        self.norm_local = norm_layer(dim)
        self.local_qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.local_proj = nn.Linear(dim, dim)
        self.norm_q = norm_layer(dim)
        self.norm_kv = norm_layer(dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pool_conv = (
            nn.Conv3d(dim, dim, kernel_size=self.window, stride=self.window, groups=dim) if pool == "conv" else None
        )

    def _heads(self, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        """(B, L, parts*dim) -> `parts` strided (B, L, heads, head_dim) views, no copy."""
        return x.unflatten(-1, (parts, self.num_heads, self.head_dim)).unbind(2)

    def _dropout_active(self) -> bool:
        return self.training and self.attn_drop > 0

    def _local(self, q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int, int]) -> Tensor:
        if self._dropout_active():
            window = clip_window(grid, self.window)
            return reference.local_attention_with_lse(q, k, v, grid, window, dropout_p=self.attn_drop)[0]
        return local_attention(q, k, v, grid, self.window, backend=self.backend)

    def _global(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self._dropout_active():
            return reference.global_attention_with_lse(q, k, v, dropout_p=self.attn_drop)[0]
        return global_attention(q, k, v, backend=self.backend)

    def _pool(self, y_grid: Tensor, grid: tuple[int, int, int]) -> Tensor:
        if self.pool_conv is None:
            return window_pool(y_grid, grid, self.window, backend=self.backend)
        B, _, C = y_grid.shape
        volume = y_grid.transpose(1, 2).reshape(B, C, *grid)
        pad = []
        for size, win in zip(reversed(grid), reversed(self.window)):
            pad += [0, (-size) % win]
        return self.pool_conv(F.pad(volume, pad)).flatten(2).transpose(1, 2)

    def forward(self, x: Tensor, grid: Sequence[int], cp: TimeSharding | None = None) -> Tensor:
        """x: (B, num_prefix_tokens + F*H*W, dim); grid: (F, H, W). Returns the same shape.

        With ``cp`` (a `logo_attn.distributed.TimeSharding` of `grid`), each rank passes its own shard
        of x (``cp.shard(x, prefix=num_prefix_tokens)``: the prefix tokens on rank 0) and gets its
        shard of the one-process output; `grid` stays the whole clip's."""
        grid = as_grid(grid)
        sharded = cp is not None and cp.sharded
        local_grid = cp.check_layer(grid, self.window, "LocalGlobalAttention") if cp is not None else grid
        P = cp.local_prefix(self.num_prefix_tokens) if cp is not None else self.num_prefix_tokens
        expected = P + local_grid[0] * local_grid[1] * local_grid[2]
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != expected or x.shape[2] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            where = f" (this rank's shard of {grid}, frames {cp.frame_range})" if cp is not None else ""
            raise ValueError(
                f"LocalGlobalAttention: x must be (B, num_prefix_tokens + F*H*W, dim) = (B, {P} + "
                f"{expected - P}, {self.dim}) for grid {local_grid}{where}, got {shape}"
            )
        x_prefix, x_grid = x[:, :P], x[:, P:]

        # eq. (1): local attention inside windows, grid tokens only (a shard holds whole windows)
        q, k, v = self._heads(self.local_qkv(self.norm_local(x_grid)), 3)
        local = self._local(q, k, v, local_grid).flatten(2)
        y_grid = x_grid + self.proj_drop(self.local_proj(local))
        y = torch.cat([x_prefix, y_grid], dim=1) if P else y_grid

        # eqs. (3)-(6): every token attends to the prefix tokens and the pooled windows
        summary = self._pool(y_grid, local_grid)
        if P:
            summary = torch.cat([x_prefix, summary], dim=1)
        (q,) = self._heads(self.q(self.norm_q(y)), 1)
        if sharded:  # the keys of every rank: gathered (see TimeSharding)
            attend = self._global if self._dropout_active() else None
            out = cp.global_attention(q, summary, self._keys, self.window, self.num_prefix_tokens, self.backend,
                                      attend).flatten(2)
        else:
            out = self._global(q, *self._keys(summary)).flatten(2)
        return y + self.proj_drop(self.proj(out))

    def _keys(self, summary: Tensor) -> tuple[Tensor, Tensor]:
        """eqs. (4), (5): K and V of the prefix tokens and the pooled windows."""
        return self._heads(self.kv(self.norm_kv(summary)), 2)


class Mlp(nn.Module):
    """timm's Mlp: Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """A transformer block around any attention layer that carries its own residual, eq. (7):
    ``x = attn(x, grid); x = x + MLP(LN(x))``. The attention layers are `LocalGlobalAttention` and
    the baselines of `logo_attn.baselines`."""

    def __init__(self, attn: nn.Module, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 norm_layer: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.attn = attn
        self.norm = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor, grid: Sequence[int], cp: TimeSharding | None = None) -> Tensor:
        """`cp`: a `logo_attn.distributed.TimeSharding`, for attention layers that take one (the MLP
        is per token: it runs on each rank's shard as it is)."""
        x = self.attn(x, grid) if cp is None else self.attn(x, grid, cp=cp)
        return x + self.mlp(self.norm(x))


class LOGOBlock(Block):
    """One LOGO-Former block: `LocalGlobalAttention` (which carries the residuals of eqs. (1) and
    (6)) followed by the MLP of eq. (7)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        window: Sequence[int] = (2, 7, 7),
        mlp_ratio: float = 4.0,
        pool: str = "avg",
        num_prefix_tokens: int = 0,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        backend: str = "auto",
    ) -> None:
        attn = LocalGlobalAttention(
            dim, num_heads, window, pool, num_prefix_tokens, qkv_bias, attn_drop, proj_drop, norm_layer, backend
        )
        super().__init__(attn, dim, mlp_ratio, proj_drop, norm_layer)
