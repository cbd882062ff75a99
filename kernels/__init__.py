"""Triton kernels of logo_attn, installed as ``logo_attn.kernels`` (never import as top-level ``kernels``).

The "triton" backend: the six functions of the backend protocol (`logo_attn.backends`), one file
per op (`local_attn.py`, `global_attn.py`, `window_pool.py`), each holding its kernels and launchers;
`relative_bias.py` holds the kernel of the local op's bias gradient. The local op takes shifted
windows and a relative-position bias:

    local_attn_fwd(q, k, v, grid, window, shift, bias, scale)                            -> (out, lse)
    local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad) -> (dq, dk, dv, dbias)
"""

from .global_attn import global_attn_bwd, global_attn_fwd
from .local_attn import local_attn_bwd, local_attn_fwd
from .window_pool import window_pool_bwd, window_pool_fwd

# What these kernels compute (read by logo_attn.backends); under TRITON_INTERPRET=1 they also run on
# CPU tensors, which the dispatcher decides.
CAPABILITY = {"device": "cuda", "dtypes": ("float16", "bfloat16", "float32"), "max_head_dim": 128}

__all__ = [
    "local_attn_fwd", "local_attn_bwd", "global_attn_fwd", "global_attn_bwd", "window_pool_fwd", "window_pool_bwd",
]
