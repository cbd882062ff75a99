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


def _skip_nested_repatching() -> None:
    """Stop the interpreter re-patching triton.language at every call of a @triton.jit helper.

    A kernel launch patches the language modules its kernel sees once for the whole grid; Triton
    3.6 then repeats that patch (an ``inspect.getmembers`` sweep, ~1 ms) at every nested helper
    call, which was ~40% of the interpreted run time of these kernels. Here a helper call patches
    only language modules the running launch has not patched yet (e.g. ``tl.core`` for the helpers
    of ``tl.zeros``) and otherwise runs the rewritten function directly, as Triton's own call does
    after its patch. Only applied when Triton's interpreter has the structure this relies on.
    """
    import inspect

    import triton.language as tl
    from triton.runtime import interpreter

    launch = interpreter.GridExecutor.__call__
    device_call = interpreter.InterpretedFunction.__call__
    if getattr(device_call, "_logo_attn_fixed", False) or not hasattr(interpreter.InterpretedFunction, "rewrite"):
        return
    patched_by_launch: list[set[int]] = []  # language modules patched, per running launch
    seen: dict[object, frozenset[int]] = {}

    def languages(fn) -> frozenset[int]:
        if fn not in seen:
            seen[fn] = frozenset(id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core))
        return seen[fn]

    def launch_once(self, *args, **kwargs):
        patched_by_launch.append(set(languages(self.fn)))
        try:
            return launch(self, *args, **kwargs)
        finally:
            patched_by_launch.pop()

    def call_helper(self, *args, **kwargs):
        if not patched_by_launch:
            return device_call(self, *args, **kwargs)
        needed = languages(self.fn)
        if not needed <= patched_by_launch[-1]:
            interpreter._patch_lang(self.fn)
            patched_by_launch[-1] |= needed
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as error:
            raise interpreter.InterpreterError(repr(error)) from error

    call_helper._logo_attn_fixed = True
    interpreter.GridExecutor.__call__ = launch_once
    interpreter.InterpretedFunction.__call__ = call_helper


if INTERPRETED:
    _fix_interpreter_index()
    _skip_nested_repatching()

# Largest key tile a program holds on-chip; a longer key set is walked in tiles (online softmax in
# the forward, a loop over tiles in the backward). The interpreter uses the same tiles as a GPU, so
# CPU tests take the paths a GPU takes for the same shapes.
MAX_KEY_TILE = 128
# The smallest key tile: every tl.dot operand dimension must be >= 16 or it does not compile on GPU.
MIN_TILE = 16


def next_power_of_2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def head_dim_tile(head_dim: int) -> int:
    """Head dims are padded (and masked) to a power of two >= 16, the smallest tl.dot operand size."""
    return max(MIN_TILE, next_power_of_2(head_dim))


def attention_configs(block_q: tuple[int, ...], warps: tuple[int, ...], stages: tuple[int, ...]) -> list[triton.Config]:
    """Autotune configs over the query tile, warps and pipeline stages; one fixed config when interpreted.

    The interpreter's cost grows with the number of programs and loop trips, not with tile size, so
    its query tile is large; tests that need other tiles replace a kernel's `configs`.
    """
    if INTERPRETED:
        return [triton.Config({"BLOCK_Q": 64}, num_warps=4, num_stages=1)]
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
