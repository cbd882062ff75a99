"""The C++ extension (`logo_attn._C`) as a backend: CPU kernels always, CUDA kernels when built with nvcc.

The extension declares its ops with TORCH_LIBRARY under the ``logo_attn_C`` namespace and registers
CPU/CUDA implementations with TORCH_LIBRARY_IMPL, so one call serves both the "cpu" and the "cuda"
backend: the dispatcher picks the kernel from the tensors' device. Importing this module raises
ImportError when the extension was not built.
"""

import torch  # must precede loading _C: the extension links against libtorch

from . import _C  # noqa: F401  (registers torch.ops.logo_attn_C.*)

_ops = torch.ops.logo_attn_C


def has_cuda_kernels() -> bool:
    """Whether the extension was built with its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("logo_attn_C::local_attn_fwd", "CUDA")


# What the kernels compute, per device (read by logo_attn.backends); "cuda" only with the CUDA kernels.
CAPABILITIES = {
    "cpu": {"device": "cpu", "dtypes": ("bfloat16", "float32", "float64"), "max_head_dim": None, "shift_bias": False},
}
if has_cuda_kernels():
    CAPABILITIES["cuda"] = {"device": "cuda", "dtypes": ("float16", "bfloat16", "float32"), "max_head_dim": 256,
                            "shift_bias": False}


def local_attn_fwd(q, k, v, grid, window, shift, bias, scale):
    return tuple(_ops.local_attn_fwd(q, k, v, grid, window, scale))


def local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad):
    return (*_ops.local_attn_bwd(dout, q, k, v, out, lse, grid, window, scale), None)


def global_attn_fwd(q, k, v, scale):
    return tuple(_ops.global_attn_fwd(q, k, v, scale))


def global_attn_bwd(dout, q, k, v, out, lse, scale):
    return tuple(_ops.global_attn_bwd(dout, q, k, v, out, lse, scale))


def window_pool_fwd(x, grid, window):
    return _ops.window_pool_fwd(x, grid, window)


def window_pool_bwd(dout, grid, window):
    return _ops.window_pool_bwd(dout, grid, window)
