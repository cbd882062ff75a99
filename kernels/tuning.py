"""Tile sizes, autotune configs and their pruning, and fp32 dot precision: the per-shape choices.

Key tiles are chosen by the launchers from the head dim and dtype; the query tile, warps and
pipeline stages are autotuned on a GPU (configs for H100/H200, benchmarked once per shape key) and
fixed under the interpreter. The budgets below were set by compiling every kernel for sm_90 with
Triton's compiler and ptxas (kernels/README.md) and are checked by tests/test_triton_kernels.py.
"""

from __future__ import annotations

import itertools

import torch
import triton

from .interpreter import INTERPRETED
from .utils import next_power_of_2

# Largest key tile a program holds on-chip; a longer key set is walked in tiles (online softmax in
# the forward, a loop over tiles in the backward). The interpreter uses the same tiles as a GPU, so
# CPU tests take the paths a GPU takes for the same shapes.
MAX_KEY_TILE = 128
# The smallest tile: every tl.dot operand dimension must be >= 16 or it does not compile on GPU.
MIN_TILE = 16
# Bytes of one key (or value) tile, which is also the size of the dK (or dV) accumulator per
# stage: 128 x 64 fp16. Larger tiles spill registers in the backward and overflow shared memory
# with pipelining in the forward.
KEY_TILE_BYTES = 16 * 1024
# fp32-equivalent values one thread may hold in registers, and bytes of shared memory a program
# may use (an H100 has 227 KB per block; the rest is slack for the compiler's own buffers).
REGISTER_BUDGET = 136
SHARED_BUDGET = 200 * 1024


def head_dim_tile(head_dim: int) -> int:
    """Head dims are padded (and masked) to a power of two >= 16, the smallest tl.dot operand size."""
    return max(MIN_TILE, next_power_of_2(head_dim))


def key_tile(head_dim: int, dtype: torch.dtype) -> int:
    """The largest key tile for this head dim and dtype: 128 for fp16 d <= 64, 64 for d = 128, ..."""
    fitting = KEY_TILE_BYTES // (head_dim_tile(head_dim) * dtype.itemsize)
    return max(MIN_TILE, min(MAX_KEY_TILE, fitting))


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for fp32 inputs, following PyTorch's own matmul setting.

    fp32 attention computes its dots in full fp32 ("ieee") unless the user allowed TF32 for
    matmuls (``torch.backends.cuda.matmul.allow_tf32`` / ``torch.set_float32_matmul_precision``),
    the same contract ``torch.matmul`` and SDPA follow. fp16/bf16 dots ignore the setting.
    """
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def attention_configs(block_q: tuple[int, ...], warps: tuple[int, ...], stages: tuple[int, ...]) -> list[triton.Config]:
    """Autotune configs over the query tile, warps and pipeline stages; one fixed config when interpreted.

    The interpreter's cost grows with the number of programs and loop trips, not with tile size, so
    its query tile is large; tests that need other tiles replace a kernel's `configs`.
    """
    if INTERPRETED:
        return [triton.Config({"BLOCK_Q": 64}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_Q": bq}, num_warps=w, num_stages=s)
        for bq, w, s in itertools.product(block_q, warps, stages)
    ]


def _element_bytes(named_args) -> int:
    """Bytes per element of the kernel's tensors (the first tensor argument's); 2 if none is given."""
    for value in named_args.values():
        if hasattr(value, "element_size"):
            return value.element_size()
    return 2


def config_pruner(registers, shared, loops_over_keys: bool, packed_extra=lambda bq, bk, bd, nb: 0):
    """An autotune `early_config_prune` keeping configs within the register and shared-memory budgets.

    registers(BLOCK_Q, BLOCK_K, BLOCK_D, bytes) estimates the fp32-equivalent values a program keeps
    in registers (accumulators and scores in fp32, dot operands at `bytes` per element);
    shared(BLOCK_Q, BLOCK_K, BLOCK_D, bytes, stages) its shared memory. A query tile larger than the
    key tile only pads rows, and pipeline stages only help a loop that walks several key tiles.
    packed_extra(...) is added for packed windows (WINDOWS_PER_GROUP > 1), whose kernel also holds
    the per-window pass that a tile with a NaN/Inf takes.
    """

    def prune(configs, named_args, **kwargs):
        block_k, block_d, nbytes = kwargs["BLOCK_K"], kwargs["BLOCK_D"], _element_bytes(named_args)
        one_trip = loops_over_keys and kwargs["SINGLE_KEY_TILE"]
        has_bias = bool(kwargs.get("HAS_BIAS"))

        def per_thread(config):
            block_q = config.kwargs["BLOCK_Q"]
            values = registers(block_q, block_k, block_d, nbytes)
            if kwargs.get("WINDOWS_PER_GROUP", 1) > 1:
                values += packed_extra(block_q, block_k, block_d, nbytes)
            if has_bias:
                # the gathered bias: a 64-bit address tile, int32 table offsets, the slot coordinates
                # both tiles carry from the nominal window's start, and a score tile per pipeline
                # stage (fitted to ptxas's counts for sm_90, tests/test_triton_kernels.py: at 3 + stages
                # the bf16 d = 128 forward at BLOCK_Q 32, BLOCK_K 64, 4 warps spilled 152 bytes)
                values += (5 + config.num_stages) * block_q * block_k
            return values / (32 * config.num_warps)

        kept = [
            c for c in configs
            if c.kwargs["BLOCK_Q"] <= block_k and per_thread(c) <= REGISTER_BUDGET
            and shared(c.kwargs["BLOCK_Q"], block_k, block_d, nbytes, c.num_stages) <= SHARED_BUDGET
            and not (one_trip and c.num_stages > 1)
        ]
        lightest = min(kept or configs, key=lambda c: (per_thread(c), c.num_stages))
        if nbytes == 4 and kwargs["DOT_PRECISION"] == "ieee":
            # Full-precision fp32 dots run on CUDA cores and keep whole operand rows in registers,
            # beyond what the estimate models: only the lightest config (an accuracy path, not a fast one).
            return [lightest]
        return kept or [lightest]

    return prune


ATTENTION_FWD_CONFIGS = attention_configs(block_q=(32, 64, 128), warps=(4, 8), stages=(1, 2, 3))
ATTENTION_BWD_CONFIGS = attention_configs(block_q=(16, 32, 64), warps=(4, 8), stages=(1, 2))

# Forward: scores and output accumulator in fp32, the query tile as a dot operand; shared memory
# holds the query tile and K and V tiles per pipeline stage.
prune_attention_fwd = config_pruner(
    registers=lambda bq, bk, bd, nb: bq * bk + bq * bd + bq * bd * nb / 4,
    shared=lambda bq, bk, bd, nb, stages: nb * (bq * bd + stages * 2 * bk * bd),
    loops_over_keys=True,
    packed_extra=lambda bq, bk, bd, nb: bk * bd,  # fitted to ptxas's counts for sm_90 (bf16, d = 128, bias)
)
# dK/dV: two accumulators, the K and V tiles, the q, dO and O tiles, scores and score gradients;
# shared memory holds K and V, the q, dO, O tiles per stage and the transposed P and dS.
prune_attention_dkdv = config_pruner(
    registers=lambda bq, bk, bd, nb: 2 * bk * bd + (2 * bk + 3 * bq) * bd * nb / 4 + 2 * bq * bk,
    shared=lambda bq, bk, bd, nb, stages: nb * (2 * bk * bd + stages * 3 * bq * bd + 2 * bq * bk),
    loops_over_keys=False,
    packed_extra=lambda bq, bk, bd, nb: bk * bd,  # fitted to ptxas's counts for sm_90 (bf16, d = 128)
)
# dQ: one accumulator, the q and dO tiles, scores and score gradients; K and V tiles per stage.
prune_attention_dq = config_pruner(
    registers=lambda bq, bk, bd, nb: bq * bd + 2 * bq * bd * nb / 4 + 2 * bq * bk,
    shared=lambda bq, bk, bd, nb, stages: nb * (2 * bq * bd + stages * 2 * bk * bd + bq * bk),
    loops_over_keys=True,
)
