"""Launch plumbing shared by the kernels: interpreter detection, autotune configs, input handling.

Under Triton's interpreter (TRITON_INTERPRET=1, read once when the kernels are defined) every
kernel gets one small fixed config, so CPU tests do not spend their time autotuning; on a GPU the
configs below are benchmarked once per shape key (they target H100/H200: up to 8 warps, up to 3
pipeline stages, tiles no larger than what fits the 228 KB of shared memory of an SM).
"""

from __future__ import annotations

import contextlib
import itertools

import torch
import triton

from ..backends import triton_interpreted

INTERPRETED = triton_interpreted()


def _fix_interpreter_index() -> None:
    """Let a runtime scalar bound a `for` loop under the interpreter with NumPy >= 2.4.

    The interpreter holds scalars as 1-element arrays and converts them with ``int(array)``, which
    NumPy 2.4 turned into a TypeError (triton-lang/triton#9171, fixed upstream after Triton 3.6 by
    converting with ``.squeeze()``). The same conversion is installed here, in the interpreter only;
    compiled GPU kernels never take this path.
    """
    from triton.runtime import interpreter

    patch_tensor = interpreter._patch_lang_tensor
    if getattr(patch_tensor, "_logo_attn_fixed", False):
        return

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    patched._logo_attn_fixed = True
    interpreter._patch_lang_tensor = patched


if INTERPRETED:
    _fix_interpreter_index()

# Largest key tile a program holds on-chip; a longer key set is walked in tiles (online softmax in
# the forward, a loop over tiles in the backward). Small under the interpreter so that CPU tests hit
# the multi-tile paths with small windows.
MAX_KEY_TILE = 32 if INTERPRETED else 128
# The smallest key tile: every tl.dot operand dimension must be >= 16 or it does not compile on GPU.
MIN_TILE = 16


def next_power_of_2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def head_dim_tile(head_dim: int) -> int:
    """Head dims are padded (and masked) to a power of two >= 16, the smallest tl.dot operand size."""
    return max(MIN_TILE, next_power_of_2(head_dim))


def attention_configs(block_q: tuple[int, ...], warps: tuple[int, ...], stages: tuple[int, ...]) -> list[triton.Config]:
    """Autotune configs over the query tile, warps and pipeline stages; one fixed config when interpreted."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_Q": MIN_TILE}, num_warps=1, num_stages=1)]
    return [
        triton.Config({"BLOCK_Q": bq}, num_warps=w, num_stages=s) for bq, w, s in itertools.product(block_q, warps, stages)
    ]


def prune_block_q(configs, named_args, **kwargs):
    """Keep the configs whose query tile is no larger than the key tile (larger only pads rows)."""
    block_k = kwargs.get("BLOCK_K", named_args.get("BLOCK_K"))
    kept = [c for c in configs if c.kwargs["BLOCK_Q"] <= block_k]
    return kept or configs[:1]


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for fp32 inputs, following PyTorch's own matmul setting.

    fp32 attention computes its dots in full fp32 ("ieee") unless the user allowed TF32 for
    matmuls (``torch.backends.cuda.matmul.allow_tf32`` / ``torch.set_float32_matmul_precision``),
    the same contract ``torch.matmul`` and SDPA follow. fp16/bf16 dots ignore the setting.
    """
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The kernels take any strides but need unit stride along the last dim (coalesced rows).

    A stride-0 gradient from ``.sum()`` or a transposed view fails that; only then is it copied.
    """
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def device_guard(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
