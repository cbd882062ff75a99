"""The C++ extension (`logo_attn._C`) as a backend: CPU kernels always, CUDA kernels when built with nvcc.

The extension declares its ops with TORCH_LIBRARY under the ``logo_attn_C`` namespace and registers
CPU/CUDA implementations with TORCH_LIBRARY_IMPL, so one call serves both the "cpu" and the "cuda"
backend: the dispatcher picks the kernel from the tensors' device. Importing this module raises
ImportError when the extension was not built.
"""

import torch  # must precede loading _C: the extension links against libtorch

from . import _C  # registers torch.ops.logo_attn_C.*

_ops = torch.ops.logo_attn_C


def has_cuda_kernels() -> bool:
    """Whether the extension was built with its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("logo_attn_C::local_attn_fwd", "CUDA")


def _capabilities() -> dict:
    """The extension's own declaration (the constants its argument checks use), per device type."""
    declared = {}
    for device, cap in _C.capabilities().items():
        declared[device] = {
            "device": device,
            "dtypes": tuple(cap["dtypes"]),
            "max_head_dim": cap["max_head_dim"] or None,  # 0: no limit
        }
    return declared


# What the kernels compute, per device type: {"device", "dtypes" (torch dtype names), "max_head_dim"
# (None: no limit)}; "cuda" only when the CUDA kernels were built.
CAPABILITIES = _capabilities()


def local_attn_fwd(q, k, v, grid, window, shift, bias, scale):
    return tuple(_ops.local_attn_fwd(q, k, v, grid, window, shift, bias, scale))


def local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad):
    """(dq, dk, dv, dbias); dbias is None unless bias is given and bias_grad is set."""
    dq, dk, dv, dbias = _ops.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad)
    return dq, dk, dv, dbias if bias is not None and bias_grad else None


def global_attn_fwd(q, k, v, scale):
    return tuple(_ops.global_attn_fwd(q, k, v, scale))


def global_attn_bwd(dout, q, k, v, out, lse, scale):
    return tuple(_ops.global_attn_bwd(dout, q, k, v, out, lse, scale))


def window_pool_fwd(x, grid, window):
    return _ops.window_pool_fwd(x, grid, window)


def window_pool_bwd(dout, grid, window):
    return _ops.window_pool_bwd(dout, grid, window)
