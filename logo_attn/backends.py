"""Which backends this install has, how ``backend="auto"`` chooses, and why the others cannot run.

A backend is a module exposing the six functions of the backend protocol (see `PROTOCOL`), all on
real tensors, all returning freshly allocated contiguous tensors:

    local_attn_fwd(q, k, v, grid, window, shift, bias, scale)                        -> (out, lse)
    local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad) -> (dq, dk, dv, dbias)
    global_attn_fwd(q, k, v, scale)                                                  -> (out, lse)
    global_attn_bwd(dout, q, k, v, out, lse, scale)                                  -> (dq, dk, dv)
    window_pool_fwd(x, grid, window)                                                 -> out
    window_pool_bwd(dout, grid, window)                                              -> dx

q/k/v are (B, N, heads, d) with any strides, lse is (B, heads, N) in fp32 (fp64 for fp64 inputs);
window is clipped to the grid and shift zeroed on clipped axes; dbias is None unless a bias is
given and bias_grad is set. Each module declares what it computes beside its code, as a plain dict
``CAPABILITY = {"device": "cuda" | "cpu" | None, "dtypes": (names...), "max_head_dim": int | None}`` (the
C++ adapter one per device, read from the extension itself); this module
only reads them. Like xformers' ``not_supported_reasons``, every refusal comes with a sentence
saying why.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass

import torch

NAMES = ("auto", "triton", "cuda", "cpu", "torch")
PROTOCOL = (
    "local_attn_fwd", "local_attn_bwd", "global_attn_fwd", "global_attn_bwd", "window_pool_fwd", "window_pool_bwd",
)

# Module implementing the protocol, per backend. "cpu" and "cuda" share the C++ extension: the
# dispatcher picks the kernel by the tensors' device.
MODULES = {"torch": "logo_attn.reference", "triton": "logo_attn.kernels", "cpu": "logo_attn._cpp",
           "cuda": "logo_attn._cpp"}

# The order "auto" tries, per device type; the reference always closes the list.
AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}


@dataclass(frozen=True)
class Capability:
    """What a backend computes: device type (None: any), dtypes and the largest head dim its kernels
    hold (None: any)."""

    device: str | None
    dtypes: tuple[torch.dtype, ...]
    max_head_dim: int | None

    @classmethod
    def from_declaration(cls, declared: dict) -> Capability:
        dtypes = tuple(getattr(torch, name) for name in declared["dtypes"])
        return cls(declared["device"], dtypes, declared["max_head_dim"])


@dataclass(frozen=True)
class BackendStatus:
    available: bool
    reason: str


def triton_interpreted() -> bool:
    """True when Triton kernels run under the interpreter (TRITON_INTERPRET=1, read when they are defined)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _module(backend: str):
    """The backend's protocol module, or the sentence saying why it cannot be imported."""
    if backend == "triton" and importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton)"
    try:
        module = importlib.import_module(MODULES[backend])
    except ImportError as error:
        if backend in ("cpu", "cuda"):
            return importlib.import_module("logo_attn._extension").status().problem or f"logo_attn._C failed to import: {error}"
        return f"{MODULES[backend]} failed to import: {error}"
    missing = [name for name in PROTOCOL if not hasattr(module, name)]
    if missing:
        return f"{MODULES[backend]} does not implement {', '.join(missing)}"
    return module


@functools.cache
def capability(backend: str) -> Capability | None:
    """What `backend` computes, as its module declares it; None when the module cannot be imported
    or (the C++ extension without its CUDA kernels) declares nothing for that backend."""
    module = _module(backend)
    if isinstance(module, str):
        return None
    declared = module.CAPABILITIES.get(backend) if backend in ("cpu", "cuda") else module.CAPABILITY
    return None if declared is None else Capability.from_declaration(declared)


def _install_problem(backend: str) -> str | None:
    """Why the backend cannot run on any tensor of this install, or None."""
    module = _module(backend)
    if isinstance(module, str):
        return module
    if backend == "cuda":
        if torch.version.cuda is None:
            return "the CUDA extension needs a PyTorch with CUDA, and this one is CPU-only (torch.version.cuda is None)"
        if capability("cuda") is None:
            return importlib.import_module("logo_attn._extension").cuda_kernels_problem()
    return None


def _device_problem(backend: str, device_type: str) -> str | None:
    """Why the backend cannot run on tensors of this device type, or None."""
    wanted = capability(backend).device
    if wanted is None or wanted == device_type:
        return None
    if backend == "triton" and device_type == "cpu":
        if not triton_interpreted():
            return "Triton runs on CPU tensors only under its interpreter: set TRITON_INTERPRET=1 before importing logo_attn"
        return _interpreter_problem()
    return f"backend {backend!r} runs on {wanted} tensors, got {device_type} tensors"


@functools.cache
def _interpreter_problem() -> str | None:
    """Triton <= 3.6's interpreter cannot run a loop with a runtime bound under NumPy >= 2.4
    (triton-lang/triton#9171); refuse rather than patch Triton. Measured: 3.6.0 fails with NumPy
    2.4.6 and 2.5.5, while 3.7.1, 3.8.0 and 3.9.0 run the interpreter suites with both."""
    import numpy
    import triton

    def version(text: str) -> tuple[int, int]:
        return tuple(int(part) for part in text.split(".")[:2])

    if version(triton.__version__) <= (3, 6) and version(numpy.__version__) >= (2, 4):
        return (
            f"Triton {triton.__version__}'s interpreter fails with NumPy {numpy.__version__} "
            "(triton-lang/triton#9171): install numpy<2.4 or a newer Triton"
        )
    return None


def _input_problem(backend: str, device_type: str, dtype: torch.dtype, head_dim: int) -> str | None:
    """Why the backend cannot compute this dtype or head dim, or None."""
    cap = capability(backend)
    if dtype not in cap.dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in cap.dtypes)
        return f"backend {backend!r} computes {names}, got {str(dtype).removeprefix('torch.')}"
    if backend == "triton" and device_type == "cpu" and dtype == torch.bfloat16:
        return "Triton's interpreter computes bfloat16 tl.dot wrongly; use float16/float32 on CPU or a GPU"
    if cap.max_head_dim is not None and head_dim > cap.max_head_dim:
        return f"backend {backend!r} supports head_dim up to {cap.max_head_dim}, got {head_dim}"
    return None


@functools.cache
def device_capability(index: int) -> tuple[int, int]:
    """The compute capability of CUDA device `index`, asked once."""
    return tuple(torch.cuda.get_device_capability(index))


def _arch_problem(backend: str, device_type: str, capability: tuple[int, int] | None) -> str | None:
    """Why the CUDA extension has no kernel image for this GPU (compute capability; the current
    device's for None), or None: the dispatcher refuses here rather than the launch failing."""
    if backend != "cuda" or device_type != "cuda":
        return None
    if capability is None:
        if not torch.cuda.is_available():
            return None  # no GPU to ask; a CUDA tensor cannot exist then
        capability = device_capability(torch.cuda.current_device())
    extension = importlib.import_module("logo_attn._extension")
    return extension.arch_problem(capability, extension.cuda_archs())


def why_not(backend: str, device_type: str, dtype: torch.dtype, head_dim: int,
            capability: tuple[int, int] | None = None) -> str | None:
    """The first reason `backend` cannot run on these inputs, or None when it can. `capability` is
    the compute capability of the inputs' CUDA device (default: the current device's)."""
    return (
        _install_problem(backend)
        or _device_problem(backend, device_type)
        or _input_problem(backend, device_type, dtype, head_dim)
        or _arch_problem(backend, device_type, capability)
    )


def check_name(backend: object) -> None:
    if not isinstance(backend, str) or backend not in NAMES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, NAMES))}, got {backend!r}")


@functools.lru_cache(maxsize=None)
def choose(backend: str, device_type: str, dtype: torch.dtype, head_dim: int, interpreted: bool,
           capability: tuple[int, int] | None = None) -> str:
    """Resolve `backend` for inputs of this device type, dtype and head dim to a concrete backend name.

    "auto" takes the first backend of `AUTO_ORDER` that can run; an explicit backend that cannot
    run raises ValueError saying why. `interpreted` is part of the cache key only; `capability` is
    the compute capability of the inputs' CUDA device (None: the current device's).
    """
    check_name(backend)
    if backend == "auto":
        for candidate in AUTO_ORDER.get(device_type, ("torch",)):
            if why_not(candidate, device_type, dtype, head_dim, capability) is None:
                return candidate
        return "torch"
    problem = why_not(backend, device_type, dtype, head_dim, capability)
    if problem:
        raise ValueError(f"backend {backend!r} cannot run here: {problem}")
    return backend


def module_for(backend: str, tensor: torch.Tensor, head_dim: int | None = None):
    """The protocol module that computes `backend` for inputs like `tensor` (resolving "auto")."""
    head_dim = tensor.shape[-1] if head_dim is None else head_dim
    capability = device_capability(tensor.device.index) if tensor.is_cuda else None
    name = choose(backend, tensor.device.type, tensor.dtype, int(head_dim), triton_interpreted(), capability)
    return _module(name)


def available_backends() -> dict[str, BackendStatus]:
    """Every concrete backend with whether this install can run it on some device here, and why not."""
    has_gpu = torch.cuda.is_available()
    status = {}
    for name in ("triton", "cuda", "cpu", "torch"):
        problem = _install_problem(name)
        if problem is None and capability(name).device == "cuda" and not has_gpu:
            problem = _device_problem(name, "cpu") if name == "triton" else "no CUDA device is visible"
            if problem is None:
                status[name] = BackendStatus(True, "available on CPU tensors under the Triton interpreter")
                continue
        if problem is None and has_gpu:
            problem = _arch_problem(name, "cuda", None)
        status[name] = BackendStatus(problem is None, problem or "available")
    return status
