"""How close to the float64 reference a result must be: the one rule the tests and the benchmarks
judge every backend (and every benchmark peer) by.

- float64 / float32: max |error| <= TOLERANCE[dtype] * max(1, max |reference|).
- float16 / bfloat16: the flash-attn rule. The error is at most twice the error of the same
  computation done by PyTorch in that low precision, both measured against float64; plus one unit of
  rounding of the dtype, so that a lucky exact low-precision run does not demand an exact kernel.
"""

from __future__ import annotations

import torch

TOLERANCE = {
    torch.float64: 1e-10,
    # fp32 accumulation over <= a few hundred terms; kernels sum in another order than PyTorch
    torch.float32: 2e-5,
}
HALF = (torch.float16, torch.bfloat16)


def max_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """max |actual - reference|, computed in float64 on the CPU."""
    return (actual.detach().to(torch.float64).cpu() - reference.detach().to(torch.float64).cpu()).abs().max().item()


def error_bound(dtype: torch.dtype, magnitude: float, lowp_error: float | None = None) -> tuple[float, str]:
    """(largest max |error| accepted, the rule in words) for a result of `dtype` whose float64
    reference has max |value| `magnitude`; `lowp_error` is PyTorch's own error in fp16/bf16."""
    if dtype in HALF:
        if lowp_error is None:
            raise ValueError("a float16/bfloat16 bound needs lowp_error, PyTorch's own error in that dtype")
        return 2 * lowp_error + torch.finfo(dtype).eps * max(1.0, magnitude), "2 x PyTorch's own low-precision error"
    return TOLERANCE[dtype] * max(1.0, magnitude), f"{TOLERANCE[dtype]} x max(1, |ref|)"
