"""FLOPs as `torch.utils.flop_counter.FlopCounterMode` counts them, split into attention and projections.

Counting runs on the meta device: modules and inputs are shapes only, so grids far too large to run
here are counted as well, and nothing is computed. The logo_attn ops count through the FLOP formulas
they register (their fakes serve the meta device); SDPA on meta tensors decomposes into its math
path, whose two batched matmuls (aten.bmm) count the same q.k and p.v FLOPs as a fused kernel. On
real CPU tensors FlopCounterMode would count nothing for SDPA at all: PyTorch registers no formula
for its CPU flash kernel, which is one more reason to count on meta.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

# Ops whose FLOPs are attention (attended pairs) rather than projections or convolutions.
ATTENTION_OPS = ("logo_attn.", "aten.bmm", "aten._scaled_dot_product", "aten._flash_attention", "aten._efficient_attention",
                 "flex_attention")
PROJECTION_OPS = ("aten.addmm", "aten.mm", "aten.linear")


def count_flops(fn: Callable[[], Tensor], *, backward: bool = False) -> dict[str, int]:
    """FLOPs per op name counted while `fn()` runs (and its backward from a ones gradient if `backward`).

    Returns ``{"attention": ..., "projection": ..., "other": ..., "total": ..., "<op>": ...}``.
    """
    with FlopCounterMode(display=False) as counter:
        out = fn()
        if backward:
            out.backward(torch.ones_like(out))
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    counts = {"attention": 0, "projection": 0, "other": 0}
    for name, flops in per_op.items():
        if name.startswith(ATTENTION_OPS):
            counts["attention"] += flops
        elif name.startswith(PROJECTION_OPS):
            counts["projection"] += flops
        else:
            counts["other"] += flops
    counts["total"] = sum(per_op.values())
    return {**counts, **per_op}
